//! Cgroup v2: the mount, this process's cgroup, per-test cgroups.

use std::{
    fs,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use super::{fail, Fail};

/// The cgroup v2 mount point (from /proc/self/mountinfo).
pub fn cgroup2_root() -> Result<PathBuf, Fail> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| fail(format!("/proc/self/mountinfo: {e}")))?;
    text.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(pre.split_whitespace().nth(4)?))
        })
        .ok_or_else(|| fail("no cgroup2 mounted"))
}

/// This process's own cgroup directory.
pub fn own_cgroup() -> Result<PathBuf, Fail> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| fail(format!("/proc/self/cgroup: {e}")))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| fail("no cgroup v2 line in /proc/self/cgroup"))?;
    Ok(cgroup2_root()?.join(rel.trim().trim_start_matches('/')))
}
/// A cgroup made for one test (`<cgroup2>/vm-suite/<name>-<pid>`), its processes killed and
/// the directory removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Result<TestCgroup, Fail> {
        let path = cgroup2_root()?
            .join("vm-suite")
            .join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        Ok(TestCgroup { path })
    }

    pub fn add_pid(&self, pid: i32) -> Result<(), Fail> {
        move_pid(&self.path, pid)
    }

    /// A command that enters this cgroup before exec.
    pub fn command(&self, program: &Path) -> Command {
        let procs = std::ffi::CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes())
            .expect("no NUL in a path");
        let mut c = Command::new(program);
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        c
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let kill = self.path.join("cgroup.kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
            if pids.trim().is_empty() || Instant::now() > deadline {
                break;
            }
            if fs::write(&kill, "1").is_err() {
                for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    // SAFETY: plain kill.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_dir(&self.path);
        if let Some(parent) = self.path.parent() {
            let _ = fs::remove_dir(parent); // only when empty
        }
    }
}

/// Writes `pid` into `cgroup`/cgroup.procs.
pub fn move_pid(cgroup: &Path, pid: i32) -> Result<(), Fail> {
    let procs = cgroup.join("cgroup.procs");
    fs::write(&procs, pid.to_string())
        .map_err(|e| fail(format!("moving {pid} to {}: {e}", procs.display())))
}
