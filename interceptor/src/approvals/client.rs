//! `interceptor approvals …` and `interceptor token set`: clients of the daemons' control
//! sockets.

use std::path::Path;

use anyhow::{anyhow, bail, Context};

use super::api::{Authed, Call};
use super::registry::RequestView;
use crate::cli::{ApprovalsCommand, ApproverAuth};
use crate::control::{self, Reply, Request};
use crate::term::printable as p;

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
                print!("{}", render_list(&all));
            }
            for e in &errors {
                eprintln!("interceptor: {}", p(e));
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

/// The table of `approvals list`, every field escaped for the terminal.
fn render_list(all: &[RequestView]) -> String {
    use std::fmt::Write;
    let mut o = format!(
        "{:<20} {:<9} {:<10} {:<14} {:<16} COMMAND\n",
        "ID", "STATE", "PROTOCOL", "RESOURCE", "RULE"
    );
    for v in all {
        let cmd: String = v.command.chars().take(60).collect();
        let _ = writeln!(
            o,
            "{:<20} {:<9} {:<10} {:<14} {:<16} {}",
            p(&v.id),
            p(&v.state),
            p(&v.protocol),
            p(&v.resource),
            p(&v.rule),
            p(&cmd)
        );
    }
    o
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
                    print!("{}", render_view(&body));
                }
                return Ok(0);
            }
            Ok((404, body)) => last = Some(error_of(&body)),
            Ok((status, body)) => {
                eprintln!("interceptor: refused ({status}): {}", p(&error_of(&body)));
                return Ok(if status == 403 { 3 } else { 1 });
            }
            Err(e) => last = Some(format!("{e:#}")),
        }
    }
    eprintln!(
        "interceptor: {}",
        p(&last.unwrap_or_else(|| "not found".into()))
    );
    Ok(1)
}

/// One request, every field escaped for the terminal (the command, identity and reason
/// come from the agent).
fn render_view(body: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let v = body.get("request").unwrap_or(body);
    let s = |k: &str| p(v.get(k).and_then(|x| x.as_str()).unwrap_or("-")).into_owned();
    let _ = writeln!(o, "{}  {}", s("id"), s("state"));
    let _ = writeln!(o, "  resource:  {} ({})", s("resource"), s("protocol"));
    // A command of several lines (an HTTP body) keeps them, each escaped on its own and
    // marked as the command's, so no line of it passes for a field of the view.
    let command = v.get("command").and_then(|x| x.as_str()).unwrap_or("-");
    for (i, line) in command.split('\n').enumerate() {
        let head = if i == 0 {
            "  command:   "
        } else {
            "           | "
        };
        let _ = writeln!(o, "{head}{}", p(line));
    }
    let _ = writeln!(o, "  class:     {}", s("classification"));
    let _ = writeln!(o, "  rule:      {} — {}", s("rule"), s("reason"));
    let _ = writeln!(
        o,
        "  identity:  {}",
        p(&v.get("identity").map(|i| i.to_string()).unwrap_or_default())
    );
    if let Some(sub) = v.get("agent_subject").and_then(|x| x.as_str()) {
        let _ = writeln!(o, "  agent:     {}", p(sub));
    }
    let _ = writeln!(
        o,
        "  created:   {}   expires: {}",
        s("created"),
        s("expires")
    );
    if v.get("decided_by").is_some_and(|d| !d.is_null()) {
        let _ = writeln!(
            o,
            "  decided:   by {} ({})",
            s("decided_by"),
            s("decision_reason")
        );
    }
    o
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A held command that tries to rewrite the operator's terminal.
    fn hostile() -> serde_json::Value {
        serde_json::json!({
            "id": "ap-1", "state": "pending", "created": "t0", "expires": "t1",
            "protocol": "postgres", "session": "s1",
            "identity": {"comm": "psql\u{1b}]0;owned\u{7}", "exe": "/x\n  rule:      fake"},
            "agent_subject": "agent\r", "resource": "appdb",
            "command": "DROP TABLE users;\r\u{1b}[2K\u{9b}1ASELECT 1",
            "classification": "write", "rule": "hold-writes", "reason": "why\u{1b}[8m",
        })
    }

    #[test]
    fn list_and_show_escape_control_characters() {
        let v: RequestView = serde_json::from_value(hostile()).unwrap();
        let list = render_list(&[v]);
        let show = render_view(&serde_json::json!({ "request": hostile() }));
        for out in [&list, &show] {
            assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
            assert!(
                out.contains("DROP TABLE users;\\r\\x1b[2K\\u{9b}1ASELECT 1"),
                "{out}"
            );
        }
        assert_eq!(list.lines().count(), 2, "{list}");
        assert!(!show.contains("\n  rule:      fake"), "{show}");
        assert!(show.contains("agent\\r"), "{show}");
    }

    #[test]
    fn show_keeps_the_lines_of_a_body_marked_as_the_command() {
        let mut v = hostile();
        v["command"] = json!("POST api.test/v1/pay (body: 40 bytes, application/json)\n{\n  \"amount\": 42\r\n}\n  rule:      fake\u{1b}[2K");
        let show = render_view(&json!({ "request": v }));
        assert!(
            !show.chars().any(|c| c.is_control() && c != '\n'),
            "{show:?}"
        );
        assert!(
            show.contains(
                "  command:   POST api.test/v1/pay (body: 40 bytes, application/json)\n           | {\n           |   \"amount\": 42\\r\n           | }\n           |   rule:      fake\\x1b[2K\n  class:"
            ),
            "{show}"
        );
    }
}
