//! `interceptor approvals …` and `interceptor token set`: clients of the daemons' control
//! sockets.

use std::path::Path;

use anyhow::{anyhow, bail, Context};

use super::api::{Authed, Call};
use super::registry::RequestView;
use crate::cli::{ApprovalsCommand, ApproverAuth};
use crate::control::{self, Reply, Request};

fn approver_token(auth: &ApproverAuth) -> anyhow::Result<String> {
    if let Some(f) = &auth.token_file {
        return std::fs::read_to_string(f)
            .map(|t| t.trim().to_owned())
            .with_context(|| format!("reading approver token file {}", f.display()));
    }
    auth.approver_token
        .clone()
        .ok_or_else(|| anyhow!("approvers authenticate with a JWT: pass --token-file FILE or set INTERCEPTOR_APPROVER_TOKEN"))
}

async fn ask(sock: &Path, token: &str, call: Call) -> anyhow::Result<(u16, serde_json::Value)> {
    let line = serde_json::to_string(&Request::Approvals(Authed {
        token: token.to_owned(),
        call,
    }))?;
    match control::request(sock, &line).await? {
        Reply::Approvals { status, body } => Ok((status, body)),
        Reply::Error { message } => bail!("{}: {message}", sock.display()),
        other => bail!("{}: unexpected answer {other:?}", sock.display()),
    }
}

fn error_of(body: &serde_json::Value) -> String {
    body.get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("unknown error")
        .to_owned()
}

/// Runs an approvals command; returns the exit code.
pub async fn run(
    state_dir: &Path,
    auth: &ApproverAuth,
    cmd: ApprovalsCommand,
) -> anyhow::Result<i32> {
    let token = approver_token(auth)?;
    let socks = control::sockets(state_dir);
    if socks.is_empty() {
        bail!(
            "no running interceptor daemons under {}",
            state_dir.display()
        );
    }
    match cmd {
        ApprovalsCommand::List => {
            let mut all: Vec<RequestView> = Vec::new();
            let mut errors = Vec::new();
            for s in &socks {
                match ask(s, &token, Call::List).await {
                    Ok((200, body)) => {
                        all.extend(serde_json::from_value::<Vec<RequestView>>(body)?)
                    }
                    Ok((404, _)) => {} // no approvals configured there
                    Ok((_, body)) => errors.push(format!("{}: {}", s.display(), error_of(&body))),
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
            if auth.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no approval requests");
            } else {
                println!(
                    "{:<20} {:<9} {:<10} {:<14} {:<16} COMMAND",
                    "ID", "STATE", "PROTOCOL", "RESOURCE", "RULE"
                );
                for v in &all {
                    let cmd: String = v.command.chars().take(60).collect();
                    println!(
                        "{:<20} {:<9} {:<10} {:<14} {:<16} {cmd}",
                        v.id, v.state, v.protocol, v.resource, v.rule
                    );
                }
            }
            for e in &errors {
                eprintln!("interceptor: {e}");
            }
            Ok(if errors.is_empty() { 0 } else { 1 })
        }
        ApprovalsCommand::Show { id } => single(&socks, &token, Call::Show { id }, auth.json).await,
        ApprovalsCommand::Approve { id, reason, for_ } => {
            let call = Call::Decide {
                id,
                approve: true,
                reason,
                for_secs: for_.map(|d| d.as_secs().max(1)),
            };
            single(&socks, &token, call, auth.json).await
        }
        ApprovalsCommand::Deny { id, reason } => {
            let call = Call::Decide {
                id,
                approve: false,
                reason,
                for_secs: None,
            };
            single(&socks, &token, call, auth.json).await
        }
    }
}

/// A call about one request: the daemon that has it answers; the others say 404.
async fn single(
    socks: &[std::path::PathBuf],
    token: &str,
    call: Call,
    json: bool,
) -> anyhow::Result<i32> {
    let mut last = None;
    for s in socks {
        match ask(s, token, call.clone()).await {
            Ok((200, body)) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&body)?);
                } else {
                    print_view(&body);
                }
                return Ok(0);
            }
            Ok((404, body)) => last = Some(error_of(&body)),
            Ok((status, body)) => {
                eprintln!("interceptor: refused ({status}): {}", error_of(&body));
                return Ok(if status == 403 { 3 } else { 1 });
            }
            Err(e) => last = Some(format!("{e:#}")),
        }
    }
    eprintln!(
        "interceptor: {}",
        last.unwrap_or_else(|| "not found".into())
    );
    Ok(1)
}

fn print_view(body: &serde_json::Value) {
    let v = body.get("request").unwrap_or(body);
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
    println!("{}  {}", s("id"), s("state"));
    println!("  resource:  {} ({})", s("resource"), s("protocol"));
    println!("  command:   {}", s("command"));
    println!("  class:     {}", s("classification"));
    println!("  rule:      {} — {}", s("rule"), s("reason"));
    println!(
        "  identity:  {}",
        v.get("identity").map(|i| i.to_string()).unwrap_or_default()
    );
    if let Some(sub) = v.get("agent_subject").and_then(|x| x.as_str()) {
        println!("  agent:     {sub}");
    }
    println!("  created:   {}   expires: {}", s("created"), s("expires"));
    if v.get("decided_by").is_some_and(|d| !d.is_null()) {
        println!(
            "  decided:   by {} ({})",
            s("decided_by"),
            s("decision_reason")
        );
    }
}

/// `interceptor token set FILE [--instance NAME]`.
pub async fn set_token(
    state_dir: &Path,
    file: &Path,
    instance: Option<&str>,
) -> anyhow::Result<i32> {
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("reading token file {}", file.display()))?;
    let line = serde_json::to_string(&Request::Token(token.trim().to_owned()))?;
    let socks: Vec<_> = control::sockets(state_dir)
        .into_iter()
        .filter(|s| instance.is_none_or(|i| s.file_stem().is_some_and(|n| n == i)))
        .collect();
    if socks.is_empty() {
        bail!(
            "no matching running interceptor daemons under {}",
            state_dir.display()
        );
    }
    let mut failed = 0;
    for s in &socks {
        match control::request(s, &line).await {
            Ok(Reply::Token { summary }) => println!("{summary}"),
            Ok(Reply::Error { message }) => {
                failed += 1;
                eprintln!("interceptor: {}: {message}", s.display());
            }
            Ok(other) => {
                failed += 1;
                eprintln!("interceptor: {}: unexpected answer {other:?}", s.display());
            }
            Err(e) => {
                failed += 1;
                eprintln!("interceptor: {e}");
            }
        }
    }
    Ok(i32::from(failed > 0))
}
