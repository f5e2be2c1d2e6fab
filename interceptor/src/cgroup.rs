//! cgroup v2: find the mount, create, enter, kill and remove cgroups, map ids to paths.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 filesystem is mounted (looked in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`")]
    NoCgroup2,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not inside the cgroup v2 hierarchy mounted at {1}")]
    NotCgroup2(PathBuf, PathBuf),
    #[error("cgroup {0} still has processes after being killed; remove it by hand once they exit")]
    Busy(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
/// (Often `/sys/fs/cgroup`; `/sys/fs/cgroup/unified` on hosts with the hybrid layout.)
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err(Path::new("/proc/self/mountinfo")))?;
    parse_mountinfo(&text).ok_or(CgroupError::NoCgroup2)
}

/// Finds the first cgroup2 mount point in mountinfo text.
pub fn parse_mountinfo(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = pre.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup v2 directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    root: PathBuf,
    path: PathBuf,
}

impl Cgroup {
    /// Opens an existing cgroup given by absolute path (must lie under the cgroup2 mount).
    pub fn open(path: &Path) -> Result<Self, CgroupError> {
        let root = cgroup2_root()?;
        let path = fs::canonicalize(path).map_err(io_err(path))?;
        if !path.starts_with(&root) || !path.join("cgroup.procs").exists() {
            return Err(CgroupError::NotCgroup2(path, root));
        }
        Ok(Self { root, path })
    }

    /// Creates `<cgroup2 root>/<relative>` (and missing parents).
    pub fn create(relative: &str) -> Result<Self, CgroupError> {
        let root = cgroup2_root()?;
        let path = root.join(relative.trim_start_matches('/'));
        fs::create_dir_all(&path).map_err(io_err(&path))?;
        Ok(Self { root, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path relative to the cgroup2 root, with a leading `/` (what policies match on).
    pub fn relative(&self) -> String {
        relative_to(&self.root, &self.path)
    }

    /// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`): the directory's inode.
    pub fn id(&self) -> Result<u64, CgroupError> {
        Ok(fs::metadata(&self.path).map_err(io_err(&self.path))?.ino())
    }

    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Pids currently in this cgroup (not its descendants).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let file = self.procs_file();
        let text = fs::read_to_string(&file).map_err(io_err(&file))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Moves a process into this cgroup.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        let file = self.procs_file();
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(io_err(&file))?;
        f.write_all(pid.to_string().as_bytes())
            .map_err(io_err(&file))
    }

    /// Kills every process in this cgroup and its descendants, waiting up to `timeout`.
    pub fn kill_all(&self, timeout: Duration) -> Result<(), CgroupError> {
        let kill_file = self.path.join("cgroup.kill");
        if kill_file.exists() {
            fs::write(&kill_file, "1").map_err(io_err(&kill_file))?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.all_pids();
            if pids.is_empty() {
                return Ok(());
            }
            for pid in &pids {
                // Fallback for kernels without cgroup.kill (< 5.14).
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy(self.path.clone()));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn all_pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for dir in walk_dirs(&self.path) {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out
    }

    /// Removes this cgroup and its descendants (they must be empty of processes).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut dirs = walk_dirs(&self.path);
        dirs.reverse(); // children before parents
        for dir in dirs {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // The kernel releases a cgroup shortly after its last process exits.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        thread::sleep(Duration::from_millis(20))
                    }
                    Err(source) => return Err(CgroupError::Io { path: dir, source }),
                }
            }
        }
        Ok(())
    }
}

/// `path` relative to `root`, always starting with `/`.
pub fn relative_to(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

/// The directory and all its subdirectories, parents first.
fn walk_dirs(top: &Path) -> Vec<PathBuf> {
    let mut out = vec![top.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Finds the cgroup with the given id (inode) under `top`, returning its path relative to
/// `root`. Used to name the caller's cgroup (which may be a child the agent created).
pub fn find_by_id(root: &Path, top: &Path, id: u64) -> Option<String> {
    walk_dirs(top)
        .into_iter()
        .find(|d| fs::metadata(d).map(|m| m.ino() == id).unwrap_or(false))
        .map(|d| relative_to(root, &d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let text = "25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                    26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n\
                    27 25 0:25 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        assert_eq!(
            parse_mountinfo(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_cgroup2_in_unified_layout_with_escapes() {
        let text = "30 1 0:26 / /sys/fs/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(text), Some(PathBuf::from("/sys/fs/my cg")));
    }

    #[test]
    fn no_cgroup2() {
        assert_eq!(
            parse_mountinfo("22 1 0:5 / /proc rw - proc proc rw\n"),
            None
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_to(Path::new("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup/a/b")),
            "/a/b"
        );
        assert_eq!(
            relative_to(Path::new("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup")),
            "/"
        );
    }

    #[test]
    fn this_machine_has_cgroup2() {
        // Every supported host has cgroup v2 somewhere; the daemon cannot work without it.
        let root = cgroup2_root().expect("cgroup2 mounted");
        assert!(
            root.join("cgroup.procs").exists(),
            "{root:?} has no cgroup.procs"
        );
    }
}
