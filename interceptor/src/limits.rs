//! Process limits: the daemon holds two descriptors per proxied connection, so it raises its
//! soft open-files limit to the hard limit at start-up (shells default to 1024, enough for
//! only ~500 connections). `run` gives the agent the limit it would have had.

use std::sync::atomic::{AtomicU64, Ordering};

/// The soft limit before [`raise_nofile`] (0: not raised).
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(0);

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (before, after).
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = r.rlim_cur;
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: setrlimit reads only the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        ORIGINAL_SOFT.store(before, Ordering::SeqCst);
    }
    Ok((before, r.rlim_cur))
}

/// Puts the soft limit back to what it was before [`raise_nofile`]. Only an atomic load
/// and two syscalls: safe between fork and exec.
pub fn restore_nofile() {
    let soft = ORIGINAL_SOFT.load(Ordering::SeqCst);
    if soft == 0 {
        return;
    }
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above; both are async-signal-safe.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = soft.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raises_to_the_hard_limit() {
        let (before, after) = super::raise_nofile().unwrap();
        assert!(after >= before);
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
        assert_eq!(r.rlim_cur, r.rlim_max);
    }
}
