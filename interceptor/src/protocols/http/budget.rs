//! The memory all masked responses buffered at once may hold. One response is bounded by its
//! service's `max_mask_bytes`, but an agent can open many (HTTP/2: 100 streams per
//! connection) and not read them: without a bound across responses that is gigabytes. Each
//! buffered response reserves what it holds ([`Reservation`]) until its body has been sent
//! or dropped; a response that does not fit is answered 503 and the others go on.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes all buffered masked responses of the daemon may hold together.
pub const MASK_MEMORY: u64 = 256 << 20;

/// A byte budget shared by reservations.
pub struct Budget {
    cap: u64,
    used: AtomicU64,
}

/// The daemon's budget for masked responses.
pub static MASKING: Budget = Budget::new(MASK_MEMORY);

/// Why a reservation did not fit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the interceptor already holds {cap} bytes of masked responses that agents have not read yet; this one is refused for now (retry, or read responses before asking for more)")]
pub struct Full {
    pub cap: u64,
}

impl Budget {
    pub const fn new(cap: u64) -> Budget {
        Budget {
            cap,
            used: AtomicU64::new(0),
        }
    }

    /// An empty reservation on this budget.
    pub fn reserve(&self) -> Reservation<'_> {
        Reservation { budget: self, n: 0 }
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes held from a [`Budget`], given back when dropped.
pub struct Reservation<'a> {
    budget: &'a Budget,
    n: u64,
}

impl Reservation<'_> {
    /// Holds `total` bytes in all (more than now), or fails without holding more.
    pub fn hold(&mut self, total: u64) -> Result<(), Full> {
        let Some(n) = total.checked_sub(self.n).filter(|&n| n > 0) else {
            return Ok(());
        };
        let b = self.budget;
        b.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&u| u <= b.cap)
            })
            .map_err(|_| Full { cap: b.cap })?;
        self.n += n;
        Ok(())
    }

    /// Keeps only `n` bytes (when it holds more).
    pub fn shrink_to(&mut self, n: u64) {
        if n < self.n {
            self.budget.used.fetch_sub(self.n - n, Ordering::Relaxed);
            self.n = n;
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_cap_and_give_back_when_dropped() {
        let b = Budget::new(100);
        let mut a = b.reserve();
        a.hold(60).unwrap();
        let mut c = b.reserve();
        assert_eq!(c.hold(50), Err(Full { cap: 100 }));
        assert_eq!(b.used(), 60, "a failed grow holds nothing");
        c.hold(40).unwrap();
        a.shrink_to(10);
        assert_eq!(b.used(), 50);
        a.shrink_to(20);
        assert_eq!(b.used(), 50, "shrink never grows");
        drop(a);
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(b.reserve().hold(u64::MAX).is_err());
    }
}
