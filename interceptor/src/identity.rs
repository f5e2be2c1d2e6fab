//! Who is connecting: the kernel's record (pid, uid, comm, cgroup) completed from /proc,
//! with a guard against pid reuse (process start time vs. connect time).

use std::{fs, path::Path};

use interceptor_common::ConnRecord;
use serde::Serialize;

/// The calling process, as recorded by the connect hook and read back from /proc.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Identity {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// Executable path; `None` when the process exited before the proxy looked or the pid
    /// now belongs to a different process.
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    /// cgroup path relative to the cgroup2 root, when known.
    pub cgroup: Option<String>,
    pub cgroup_id: u64,
    /// The pid was reused by a newer process between connect and accept: exe and cmdline
    /// were not taken from it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pid_reused: bool,
    /// Subject of the agent token bound to the cgroup (`run --token`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Identity {
    /// Completes a kernel record with /proc data. `proc_root` is normally `/proc`.
    pub fn from_record(rec: &ConnRecord, proc_root: &Path, cgroup: Option<String>) -> Self {
        let comm = comm_str(&rec.comm);
        let dir = proc_root.join(rec.tgid.to_string());
        let start_ns = read_start_time_ns(&dir);
        // A process that started after the connect cannot be the one that connected.
        // /proc's start time has clock-tick granularity, so allow one tick of slack.
        let pid_reused = matches!(start_ns, Some(s) if s > rec.time_boot_ns + tick_ns());
        let (exe, cmdline) = if pid_reused || start_ns.is_none() {
            (None, Vec::new())
        } else {
            let exe = fs::read_link(dir.join("exe"))
                .ok()
                .map(|p| p.display().to_string());
            (exe, read_cmdline(&dir))
        };
        Self {
            pid: rec.tgid,
            tid: rec.pid,
            uid: rec.uid,
            gid: rec.gid,
            comm,
            exe,
            cmdline,
            cgroup,
            cgroup_id: rec.cgroup_id,
            pid_reused,
            subject: None,
        }
    }
}

/// The NUL-padded kernel comm as a string.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Reads a small /proc file with one open + read (no stat, no growth), up to 64 KiB.
fn read_small(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = f.read(&mut buf[len..]).ok()?;
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            if buf.len() >= 64 * 1024 {
                break;
            }
            buf.resize(buf.len() * 2, 0);
        }
    }
    buf.truncate(len);
    Some(buf)
}

fn read_cmdline(dir: &Path) -> Vec<String> {
    read_small(&dir.join("cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / if hz > 0 { hz as u64 } else { 100 }
}

/// Process start time in ns since boot (CLOCK_BOOTTIME), from field 22 of /proc/PID/stat.
fn read_start_time_ns(dir: &Path) -> Option<u64> {
    let stat = read_small(&dir.join("stat"))?;
    parse_start_ticks(&String::from_utf8_lossy(&stat)).map(|t| t * tick_ns())
}

/// Field 22 (`starttime`) of a /proc/PID/stat line. `comm` (field 2) may contain spaces and
/// parentheses, so count fields after the last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // after ")" come fields 3.. ; starttime is field 22 → index 19 here.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tgid: u32, time_boot_ns: u64) -> ConnRecord {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"test");
        ConnRecord {
            orig: Default::default(),
            tgid,
            pid: tgid,
            uid: 1000,
            gid: 1000,
            cgroup_id: 7,
            time_boot_ns,
            comm,
        }
    }

    #[test]
    fn parses_start_time_with_tricky_comm() {
        let stat =
            "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(98765));
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let id = Identity::from_record(&record(me, u64::MAX / 2), Path::new("/proc"), None);
        assert!(!id.pid_reused);
        assert_eq!(
            id.exe.as_deref(),
            std::env::current_exe()
                .ok()
                .map(|p| p.display().to_string())
                .as_deref()
        );
        assert!(!id.cmdline.is_empty());
        assert_eq!(id.comm, "test");
    }

    #[test]
    fn detects_pid_reuse() {
        // A connect "before boot" cannot have come from a process that is running now.
        let id = Identity::from_record(&record(std::process::id(), 0), Path::new("/proc"), None);
        assert!(id.pid_reused);
        assert_eq!(id.exe, None);
        assert!(id.cmdline.is_empty());
    }

    #[test]
    fn vanished_process() {
        let id = Identity::from_record(&record(u32::MAX - 1, 1), Path::new("/proc"), None);
        assert_eq!(id.exe, None);
        assert!(!id.pid_reused);
    }
}

#[cfg(test)]
mod timing {
    /// `cargo test --release -p interceptor --lib identity::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn from_record_cost() {
        let mut rec = super::tests_support_record();
        rec.tgid = std::process::id();
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            std::hint::black_box(super::Identity::from_record(
                &rec,
                std::path::Path::new("/proc"),
                None,
            ));
        }
        eprintln!("Identity::from_record: {:?} per call", t.elapsed() / 2000);
    }
}

#[cfg(test)]
fn tests_support_record() -> ConnRecord {
    ConnRecord {
        orig: Default::default(),
        tgid: 1,
        pid: 1,
        uid: 0,
        gid: 0,
        cgroup_id: 1,
        time_boot_ns: u64::MAX / 2,
        comm: [0; 16],
    }
}
