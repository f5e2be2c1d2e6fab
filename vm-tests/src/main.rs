//! `vm-suite`: the interceptor's kernel-facing test suite, and the "agent" it runs.
//!
//! ```text
//! vm-suite run [--interceptor PATH] [--filter STR]     the suite (root; host or VM)
//! vm-suite probe FAMILY HOST PORT TEXT                 connect, send TEXT, print one result line
//! vm-suite probe-fork FAMILY HOST PORT TEXT            the same from a forked child
//! vm-suite probe-wait GOFILE OUTFILE FAMILY HOST PORT TEXT
//! vm-suite exit-with CODE                              print `cgroup=<own cgroup>`, exit CODE
//! ```
//! FAMILY: 4 | 6 | mapped (AF_INET6 socket to ::ffff:HOST) | tfo (IPv4, TCP Fast Open).
//!
//! As PID 1 (the initramfs `/init` of `cargo xtask vm-test`) it mounts what the interceptor
//! needs, runs the suite (arguments after `--` on the kernel command line are passed on, e.g.
//! `-- --filter redirect`) and powers the VM off.

mod bypass;
mod harness;
mod init;
mod probe;
mod suite;

use std::{
    panic::{self, AssertUnwindSafe},
    path::Path,
    process::ExitCode,
};

const USAGE: &str = "usage: vm-suite run [--interceptor PATH] [--filter STR]
       vm-suite probe|probe-fork FAMILY HOST PORT TEXT
       vm-suite probe-wait GOFILE OUTFILE FAMILY HOST PORT TEXT
       vm-suite exit-with CODE
FAMILY: 4 | 6 | mapped | tfo";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if init::is_pid1() {
        pid1(args)
    }
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["run", rest @ ..] => match suite_options(rest) {
            Ok(opts) => {
                let s = suite::run(opts);
                if s.unsupported.is_some() {
                    ExitCode::from(3)
                } else if s.failed > 0 {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => usage(&e),
        },
        [mode @ ("probe" | "probe-fork"), family, host, port, text] => {
            let Ok(port) = port.parse() else {
                return usage("bad port");
            };
            let r = if *mode == "probe" {
                probe::probe(family, host, port, text)
            } else {
                probe::probe_forked(family, host, port, text)
            };
            println!("{}", r.line());
            ExitCode::SUCCESS
        }
        ["probe-wait", go, out, family, host, port, text] => {
            let Ok(port) = port.parse() else {
                return usage("bad port");
            };
            probe::probe_wait(Path::new(go), Path::new(out), family, host, port, text);
            ExitCode::SUCCESS
        }
        ["attempt", rest @ ..] => {
            println!("{}", bypass::attempt(rest).line());
            ExitCode::SUCCESS
        }
        ["exit-with", code] => {
            let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let cg = cg
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("?");
            println!("cgroup={}", cg.trim());
            ExitCode::from(code.parse::<u8>().unwrap_or(1))
        }
        _ => usage("unknown command"),
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("vm-suite: {why}\n{USAGE}");
    ExitCode::from(2)
}

fn suite_options(args: &[&str]) -> Result<suite::Options, String> {
    let mut opts = suite::Options {
        interceptor: None,
        filter: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--interceptor" => {
                opts.interceptor = Some((*it.next().ok_or("--interceptor needs a path")?).into())
            }
            "--filter" => opts.filter = Some((*it.next().ok_or("--filter needs a string")?).into()),
            "run" => {}
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(opts)
}

/// The VM's init: set up, run the suite, power off — also after a panic or a setup error.
fn pid1(args: Vec<String>) -> ! {
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        if let Err(e) = init::setup() {
            println!("vm-suite: init setup failed: {e}");
            return;
        }
        if args.iter().any(|a| a == "--boot-check") {
            // `cargo xtask vm-test` checking whether KVM guests work here.
            println!("vm-suite: boot ok ({})", init::kernel_release());
            return;
        }
        let strs: Vec<&str> = args.iter().map(String::as_str).collect();
        let opts = match suite_options(&strs) {
            Ok(o) => o,
            Err(e) => {
                println!("vm-suite: bad arguments on the kernel command line: {e}");
                return;
            }
        };
        println!("vm-suite: uname -r: {}", init::kernel_release());
        suite::run(opts);
    }));
    if let Err(p) = result {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        println!("vm-suite: the suite panicked: {msg}");
    }
    println!("vm-suite: powering off");
    init::power_off()
}
