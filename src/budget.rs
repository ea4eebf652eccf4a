//! The node's budget for media bytes between the segmenter and storage: queued for the storage writer,
//! or held by an upload that has not completed. Each publish's queue is bounded on its own
//! (`[limits] storage_queue_bytes`); this bounds their sum (`[limits] media_memory_bytes`), so that a
//! node whose storage cannot keep up with all its publishers sheds load instead of growing without end.
//!
//! Shedding is fair and visible:
//! - past [`REFUSE_NEW_AT`] of the budget, new publishes are refused (the encoder is told why), before
//!   any live channel loses a segment;
//! - past the budget, a publish holding more than its fair share (budget ÷ live publishes) loses the
//!   segment it is producing, the newest one; publishes within their share go on, up to a margin of
//!   [`SHARE_MARGIN`] over the budget.
//!
//! Counting is two atomic adds per 64 KiB chunk; no lock, no wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// New publishes are refused once this share of the budget is used (numerator, denominator).
pub const REFUSE_NEW_AT: (usize, usize) = (3, 4);
/// How far past the budget publishes within their fair share may still go (a quarter of it).
pub const SHARE_MARGIN: (usize, usize) = (1, 4);

#[derive(Debug)]
pub struct MediaBudget {
    limit: usize,
    used: AtomicUsize,
    publishes: AtomicUsize,
}

/// The budget is too full to take another publish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("media waiting for storage on this node is at {used} of {limit} bytes ([limits] media_memory_bytes)")]
pub struct Overloaded {
    pub used: usize,
    pub limit: usize,
}

impl MediaBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(MediaBudget { limit, used: AtomicUsize::new(0), publishes: AtomicUsize::new(0) })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes counted now, across every publish.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A new publish's share, or why there is none.
    pub fn open(self: &Arc<Self>) -> Result<Arc<Holding>, Overloaded> {
        let used = self.used();
        if used.saturating_mul(REFUSE_NEW_AT.1) >= self.limit.saturating_mul(REFUSE_NEW_AT.0) {
            return Err(Overloaded { used, limit: self.limit });
        }
        self.publishes.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Holding { budget: Arc::clone(self), held: AtomicUsize::new(0) }))
    }
}

/// One publish's bytes in the budget. Shared by the publish (which charges chunks as it queues them) and
/// its storage writer (which releases them when their upload is done); dropping the last handle releases
/// whatever is left.
#[derive(Debug)]
pub struct Holding {
    budget: Arc<MediaBudget>,
    held: AtomicUsize,
}

impl Holding {
    /// Counts `bytes` about to be queued, or says no: the caller drops the segment they belong to.
    pub fn try_charge(&self, bytes: usize) -> bool {
        let b = &self.budget;
        let used = b.used().saturating_add(bytes);
        let mine = self.held().saturating_add(bytes);
        let fair = b.limit / b.publishes.load(Ordering::Relaxed).max(1);
        let ceiling = b.limit.saturating_add(b.limit / SHARE_MARGIN.1 * SHARE_MARGIN.0);
        if used > b.limit && (mine > fair || used > ceiling) {
            return false;
        }
        b.used.fetch_add(bytes, Ordering::Relaxed);
        self.held.fetch_add(bytes, Ordering::Relaxed);
        crate::metrics::metrics().media_bytes_waiting.inc_by(bytes as i64);
        true
    }

    /// Gives back bytes charged earlier (never more than are held).
    pub fn release(&self, bytes: usize) {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let give = bytes.min(held);
            match self.held.compare_exchange_weak(held, held - give, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.budget.used.fetch_sub(give, Ordering::Relaxed);
                    crate::metrics::metrics().media_bytes_waiting.dec_by(give as i64);
                    return;
                }
                Err(now) => held = now,
            }
        }
    }

    /// This publish's bytes now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.release(usize::MAX);
        self.budget.publishes.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 64 * 1024;

    #[test]
    fn new_publishes_are_refused_before_any_live_one_sheds() {
        let budget = MediaBudget::new(100 * CHUNK);
        let a = budget.open().unwrap();
        for _ in 0..75 {
            assert!(a.try_charge(CHUNK));
        }
        let refused = budget.open().unwrap_err();
        assert_eq!((refused.used, refused.limit), (75 * CHUNK, 100 * CHUNK));
        a.release(CHUNK);
        let b = budget.open().expect("below three quarters again");
        drop((a, b));
        assert_eq!(budget.used(), 0, "a publish that ends gives back what it held");
    }

    #[test]
    fn past_the_budget_the_biggest_holder_sheds_and_the_others_go_on() {
        let budget = MediaBudget::new(100 * CHUNK);
        let (big, small) = (budget.open().unwrap(), budget.open().unwrap());
        while big.try_charge(CHUNK) {}
        assert_eq!(big.held(), 100 * CHUNK, "alone past its share only once the budget is full");
        // Over the budget now: the small one is within its share of 50 chunks, up to the margin.
        let mut taken = 0;
        while small.try_charge(CHUNK) {
            taken += 1;
        }
        assert_eq!(taken, 25, "the margin is a quarter of the budget");
        assert!(!big.try_charge(CHUNK));
        // The big one's storage catches up: it may queue again once the sum is below the budget.
        big.release(30 * CHUNK);
        assert!(big.try_charge(CHUNK));
        assert_eq!(budget.used(), 96 * CHUNK);
        small.release(usize::MAX);
        assert_eq!(small.held(), 0);
        assert_eq!(budget.used(), 71 * CHUNK);
    }
}
