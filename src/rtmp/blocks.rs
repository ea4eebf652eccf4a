//! Message buffers for the chunk reader (`guard`), cut from 64 KiB blocks that a thread's connections
//! share, so that a media message costs no heap allocation of its own.
//!
//! Why: with one buffer allocated per message (about 75 messages a second per 720p publisher), glibc's
//! allocator was 7 % of all samples at 1000 streams and `Guard::inspect`'s allocation 16.6 % of them
//! (BENCHMARKS, "Session of 2026-12-07 night"). A block also keeps its pages: memory freed to the
//! allocator and trimmed is, on this machine, handed back to the host and faults again on its next use.
//!
//! How: a connection takes a block from its thread's pool when a read brings a message, cuts each
//! message's buffer from it (`BytesMut::split_off`: the `Bytes` handed on share the block, and slicing
//! them later does not allocate either), and hands the blocks back ([`Blocks::release`]) once what it
//! read has been handled. A block goes back to the pool only if nothing holds a slice of it any more
//! (`try_reclaim`); one still held (a message in progress, a keyframe kept for a snapshot) is let go and
//! freed by its last holder. A connection holds no block while it waits, so idle publishers cost nothing
//! here, and a thread's pool holds at most [`POOL_BLOCKS`].

use std::cell::RefCell;

use bytes::BytesMut;

/// Messages up to this size are cut from a block; bigger ones (720p keyframes) get a buffer of their own.
pub const BLOCK: usize = 64 * 1024;
/// Blocks a thread keeps for its connections: one each for the few that read at the same moment.
pub const POOL_BLOCKS: usize = 4;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// The blocks one connection cuts its messages from between two releases.
#[derive(Debug, Default)]
pub struct Blocks {
    /// What is left of the block being cut.
    current: Option<BytesMut>,
    /// Blocks cut up since the last release (each handle keeps its block's count up until then).
    spent: Vec<BytesMut>,
}

impl Blocks {
    /// An empty buffer with room for exactly `len` bytes.
    pub fn buffer(&mut self, len: usize) -> BytesMut {
        if len > BLOCK {
            return BytesMut::with_capacity(len);
        }
        let mut block = match self.current.take() {
            Some(block) if block.capacity() >= len => block,
            Some(block) => {
                self.spent.push(block);
                take_block()
            }
            None => take_block(),
        };
        // `block` keeps [0, len) and the rest stays here for the next message.
        self.current = Some(block.split_off(len));
        block
    }

    /// Hands back to the thread's pool every block nothing else holds, and lets go of the others. Call it
    /// once the messages cut since the last release have been handled, before waiting for more.
    pub fn release(&mut self) {
        let current = self.current.take();
        if current.is_none() && self.spent.is_empty() {
            return;
        }
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            for mut block in self.spent.drain(..).chain(current) {
                // True only when this is the block's last handle: then its whole capacity is free again.
                if pool.len() < POOL_BLOCKS && block.try_reclaim(BLOCK) {
                    pool.push(block);
                }
            }
        });
    }
}

fn take_block() -> BytesMut {
    POOL.with(|pool| pool.borrow_mut().pop()).unwrap_or_else(|| BytesMut::with_capacity(BLOCK))
}

/// Blocks in this thread's pool (for tests).
#[cfg(test)]
fn pooled() -> usize {
    POOL.with(|pool| pool.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_share_one_block_which_returns_to_the_pool_once_nothing_holds_it() {
        let mut blocks = Blocks::default();
        let before = pooled();
        let mut a = blocks.buffer(1000);
        let mut b = blocks.buffer(2000);
        assert_eq!((a.capacity(), b.capacity()), (1000, 2000));
        a.extend_from_slice(&[1; 1000]);
        b.extend_from_slice(&[2; 2000]);
        let (a, b) = (a.freeze(), b.freeze());
        // The second buffer starts where the first ends: the same block.
        assert_eq!(a.as_ptr().wrapping_add(1000), b.as_ptr());
        let kept = b.slice(10..20);
        drop((a, b));
        blocks.release();
        assert_eq!(pooled(), before, "a slice still holds the block: it is not pooled");
        drop(kept);

        let c = blocks.buffer(500);
        drop(c);
        blocks.release();
        assert_eq!(pooled(), before + 1);
        let d = blocks.buffer(BLOCK);
        assert_eq!(pooled(), before, "the pooled block is used again");
        assert_eq!(d.capacity(), BLOCK, "whole again once reclaimed");
    }

    #[test]
    fn a_message_bigger_than_a_block_gets_its_own_buffer_and_a_full_block_is_replaced() {
        let mut blocks = Blocks::default();
        let big = blocks.buffer(BLOCK + 1);
        assert_eq!(big.capacity(), BLOCK + 1);
        let first = blocks.buffer(BLOCK - 10);
        let second = blocks.buffer(100);
        assert_eq!(second.capacity(), 100);
        assert!(
            !std::ptr::eq(first.as_ptr().wrapping_add(BLOCK - 10), second.as_ptr()),
            "100 bytes do not fit in the first block's last 10"
        );
        drop((first, second, big));
        let before = pooled();
        blocks.release();
        assert_eq!(pooled(), (before + 2).min(POOL_BLOCKS), "both blocks go back");
    }

    #[test]
    fn the_pool_keeps_at_most_its_size() {
        let mut conns: Vec<Blocks> = (0..POOL_BLOCKS + 3).map(|_| Blocks::default()).collect();
        for c in &mut conns {
            drop(c.buffer(10));
        }
        for c in &mut conns {
            c.release();
        }
        assert_eq!(pooled(), POOL_BLOCKS);
    }
}
