//! PID 1 of the test VM: mount what the interceptor needs, bring `lo` up, and power off at the
//! end — on every path, because PID 1 returning or dying panics the kernel.

use std::{ffi::CString, fs, io, mem};

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in a literal")
}

fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let _ = fs::create_dir_all(target);
    let (src, tgt, fst) = (cstr(source), cstr(target), cstr(fstype));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EBUSY) {
            return Ok(()); // already mounted
        }
        return Err(io::Error::new(
            e.kind(),
            format!("mount -t {fstype} {source} {target}: {e}"),
        ));
    }
    Ok(())
}

/// Mounts proc, sysfs, devtmpfs, tmpfs, bpffs and cgroup2, sets PATH, brings `lo` up.
pub fn setup() -> io::Result<()> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("devtmpfs", "/dev", "devtmpfs")?;
    reopen_console();
    mount("tmpfs", "/tmp", "tmpfs")?;
    mount("bpf", "/sys/fs/bpf", "bpf")?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2")?;
    // Optional: lets `doctor` see whether the BPF LSM is active (packet-socket guard).
    let _ = mount("securityfs", "/sys/kernel/security", "securityfs");
    std::env::set_var("PATH", "/bin:/sbin:/usr/bin:/usr/sbin");
    std::env::set_var("HOME", "/");
    loopback_up()
}

/// If the kernel could not give PID 1 a console (no /dev/console in the initramfs), open it
/// now that devtmpfs is mounted.
fn reopen_console() {
    // SAFETY: fcntl on a possibly-closed descriptor only reports EBADF.
    let have_stdout = unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0;
    if have_stdout {
        return;
    }
    let path = cstr("/dev/console");
    // SAFETY: open/dup2 on our own descriptors.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

/// `ip link set lo up` by ioctl; the kernel then adds 127.0.0.1/8 and ::1 by itself.
fn loopback_up() -> io::Result<()> {
    // SAFETY: ifreq is plain data; the ioctls read and write only it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut ret = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr);
        if ret == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            ret = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if ret != 0 {
            return Err(io::Error::new(err.kind(), format!("bringing lo up: {err}")));
        }
    }
    Ok(())
}

/// `uname -r`.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Reaps every exited child (PID 1 inherits orphans). Only call when no `std::process::Child`
/// is waiting to be waited for.
pub fn reap_zombies() {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

/// sync, then power the VM off. Never returns.
pub fn power_off() -> ! {
    // SAFETY: plain syscalls; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Still here (no permission?): exiting PID 1 panics the kernel, and with `panic=-1` on the
    // command line and qemu's -no-reboot that ends the VM too.
    eprintln!("vm-suite: power off failed: {}", io::Error::last_os_error());
    std::process::exit(1)
}

pub fn is_pid1() -> bool {
    std::process::id() == 1
}
