//! An attached daemon holding HTTP requests of a test cgroup, an approver (carol, group
//! `ops`) using the HTTP API, and curl as the agent.

use super::*;

pub struct HttpHold {
    // Dropped first: the daemon stops before its cgroup is removed.
    _d: Attached,
    pub up: http_support::Upstream,
    pub cg: TestCgroup,
    pub env: Env,
    /// `http://ADDR/v1/approvals`.
    pub base: String,
    /// carol's approver token.
    pub carol: String,
}

impl HttpHold {
    /// Holds `POST /v1/echo` and `GET /v1/report` (timeout `timeout` s); other GETs pass.
    /// `daemon_args`: extra `attach` arguments, given the environment (e.g. `--token`).
    pub fn start(
        name: &str,
        timeout: u64,
        daemon_args: impl FnOnce(&Env, &Idp) -> Vec<String>,
    ) -> HttpHold {
        Self::start_with(name, timeout, "", daemon_args)
    }

    /// Like `start`, with `service` lines added to the service (e.g.
    /// `\n    header_timeout_secs: 2`).
    pub fn start_with(
        name: &str,
        timeout: u64,
        service: &str,
        daemon_args: impl FnOnce(&Env, &Idp) -> Vec<String>,
    ) -> HttpHold {
        let env = Env::new();
        let idp = Idp::new(env.dir.path(), "idp");
        let cg = TestCgroup::new(name);
        let up = http_support::Upstream::start(env.dir.path(), "api", None);
        let yaml = format!(
            "version: 1
identities:
  agent: {{}}
rules:
  - {{name: allow-api, action: allow, to: [{{cidr: 127.0.0.2/32, ports: {port}}}]}}
http_services:
  api:
    address: 127.0.0.2
    port: {port}
    hosts: [api.test]{service}
http_rules:
  - {{name: hold-echo, identity: agent, service: api, action: hold, methods: [POST], paths: [\"/v1/echo\"], timeout_secs: {timeout}}}
  - {{name: hold-report, identity: agent, service: api, action: hold, methods: [GET], paths: [\"/v1/report\"], timeout_secs: {timeout}}}
  - {{name: reads, identity: agent, service: api, action: allow, methods: [GET]}}
auth:
  issuers:
    - {{name: idp, issuer: \"{ISS}\", audience: {AUD}, jwks_file: {jwks}}}
approvals:
  approvers:
    - {{name: ops, issuer: idp, groups: [ops]}}
",
            port = up.port,
            jwks = idp.jwks.display()
        );
        let policy = env.policy("http-hold.yaml", &yaml);
        let api = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut args = vec!["--approvals-listen".to_owned(), api.to_string()];
        args.extend(daemon_args(&env, &idp));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let d = Attached::start_with(&env, &cg, &policy, &args);
        let carol = idp.token("idp", ISS, "carol", &["ops"], 600);
        HttpHold {
            _d: d,
            up,
            cg,
            env,
            base: format!("http://{api}/v1/approvals"),
            carol,
        }
    }

    /// curl in the test cgroup: `METHOD http://api.test:PORT{target}` (with `body`, if
    /// any), in the background; its stdout ends with the status code.
    pub fn agent(&self, method: &str, target: &str, body: Option<&str>) -> Child {
        let args = body.map_or(Vec::new(), |b| vec!["-d", b]);
        self.agent_with(method, target, &args)
    }

    /// Like `agent`, with more curl arguments (`--data-binary @FILE`, `-H …`).
    pub fn agent_with(&self, method: &str, target: &str, args: &[&str]) -> Child {
        let mut c = self.cg.command("curl");
        c.args(["-s", "-w", "\n%{http_code}", "--resolve"])
            .arg(format!("api.test:{}:127.0.0.2", self.up.port))
            .args(["-X", method])
            .args(args);
        c.arg(format!("http://api.test:{}{target}", self.up.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// An API call with `token`: curl `args` (URL included), the JSON answer.
    pub fn call_as(&self, token: &str, args: &[&str]) -> Value {
        let out = Command::new("curl")
            .args(["-s", "-H", &format!("Authorization: Bearer {token}")])
            .args(args)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    pub fn call(&self, args: &[&str]) -> Value {
        self.call_as(&self.carol, args)
    }

    /// Waits for a pending request (as carol sees them).
    pub fn pending(&self) -> Value {
        wait_for("a pending HTTP approval", Duration::from_secs(20), || {
            self.call(&[&self.base])
                .as_array()?
                .iter()
                .find(|r| r["state"] == "pending")
                .cloned()
        })
    }

    /// Approves (`body`: the JSON body, e.g. `{"for_secs": 600}`) or denies `id`.
    pub fn decide(&self, id: &str, action: &str, body: &str) -> Value {
        self.call(&[
            "-X",
            "POST",
            "-d",
            body,
            &format!("{}/{id}/{action}", self.base),
        ])
    }
}

/// The agent's output and its status code (the last line).
pub fn status_of(agent: Child) -> (String, String) {
    let (so, _) = finish(agent);
    let code = so.lines().last().unwrap_or("").to_owned();
    (so, code)
}
