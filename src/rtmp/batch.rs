//! Read batching for publishing connections: how many bytes the kernel collects in a publisher's socket
//! before it wakes the connection (`SO_RCVLOWAT`).
//!
//! A 2.7 Mbit/s publisher sends about 75 messages a second, and without a low-water mark each one wakes
//! its connection on its own: a scheduler wake-up, an `epoll` event and a `recv` per message, which cost
//! more than parsing and remuxing the message does (BENCHMARKS.md, profile at N = 200). With a mark, the
//! kernel wakes the connection once enough has come for about `delay` of the stream, and one read takes
//! several messages.
//!
//! Nothing the segmenter waits for is held longer than it must be:
//! - a message already begun is read the moment its last byte can have come: the mark never asks for more
//!   than the fewest bytes before the chunk reader can finish a message (`Guard::bytes_before_next_message`),
//!   so a keyframe bigger than the batch, the one that cuts a segment, completes without delay;
//! - between messages, a new message waits at most about `delay` at the rate the publisher has been
//!   sending (the mark is that rate times `delay`, and at most [`MAX_LOW_WATER`]);
//! - the mark never asks for more bytes than are left before an acknowledgement is due, so a client that
//!   waits for its acknowledgement is not kept waiting;
//! - before the publish, and while the rate is not yet known, the mark is 1 (every byte wakes).
//!
//! The I/O (the `setsockopt` call, and the read that the idle timer makes before it closes a connection
//! whose last bytes sit below the mark) is the connection's, in `rtmp::Connection::drive`.

use std::time::{Duration, Instant};

/// The highest mark. Linux grows a socket's receive buffer to fit a mark (and clamps the window to it)
/// when the mark needs more than the buffer holds; 32 KiB stays well inside the default 128 KiB buffer.
pub const MAX_LOW_WATER: u32 = 32 * 1024;
/// How long the rate is measured over before the mark follows it.
const RATE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ReadBatch {
    delay: Duration,
    window_start: Instant,
    window_bytes: u64,
    /// The rate over the last window times `delay`; 1 until a window has passed.
    batch: u32,
    /// The mark the socket is set to (1 is the kernel's default).
    set: u32,
}

impl ReadBatch {
    /// `delay` zero turns batching off: the mark stays 1.
    pub fn new(delay: Duration, now: Instant) -> Self {
        ReadBatch { delay, window_start: now, window_bytes: 0, batch: 1, set: 1 }
    }

    /// `n` bytes were read at `now`.
    pub fn read(&mut self, n: usize, now: Instant) {
        self.window_bytes += n as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            let bytes = self.window_bytes as f64 * self.delay.as_secs_f64() / elapsed.as_secs_f64();
            self.batch = (bytes as u32).clamp(1, MAX_LOW_WATER);
            self.window_start = now;
            self.window_bytes = 0;
        }
    }

    /// The mark for the next wait, when it differs from the one set (`None`: leave the socket as it is).
    /// `need`: the fewest bytes before the chunk reader can hand over a message or owes an acknowledgement.
    pub fn next(&mut self, publishing: bool, need: Option<u32>) -> Option<u32> {
        let want = if publishing { need.map_or(self.batch, |n| n.min(self.batch)).max(1) } else { 1 };
        (want != self.set).then(|| {
            self.set = want;
            want
        })
    }

    /// The mark is above 1: bytes may be waiting in the socket without having woken the connection.
    pub fn holding(&self) -> bool {
        self.set > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = 354_000; // bytes a second: the 2.83 Mbit/s benchmark stream

    fn warmed(delay_ms: u64) -> (ReadBatch, Instant) {
        let t0 = Instant::now();
        let mut b = ReadBatch::new(Duration::from_millis(delay_ms), t0);
        for i in 1..=10 {
            b.read(RATE / 10, t0 + Duration::from_millis(100 * i));
        }
        (b, t0 + Duration::from_secs(1))
    }

    #[test]
    fn the_mark_is_one_until_the_rate_is_known_and_outside_a_publish() {
        let t0 = Instant::now();
        let mut b = ReadBatch::new(Duration::from_millis(40), t0);
        b.read(100_000, t0 + Duration::from_millis(500));
        assert_eq!(b.next(true, None), None, "no window has passed: the mark stays 1");
        let (mut b, _) = warmed(40);
        assert_eq!(b.next(false, None), None, "not publishing: 1, which is what is set");
        assert!(!b.holding());
    }

    #[test]
    fn between_messages_the_mark_is_the_rate_times_the_delay() {
        let (mut b, _) = warmed(40);
        let mark = b.next(true, None).expect("the mark is raised");
        assert_eq!(mark, (RATE as f64 * 0.040) as u32);
        assert!(b.holding());
        assert_eq!(b.next(true, None), None, "unchanged: no second setsockopt");
        assert_eq!(b.next(false, None), Some(1), "the publish ended: every byte wakes again");
    }

    #[test]
    fn a_message_in_progress_is_read_as_soon_as_it_can_be_whole() {
        let (mut b, _) = warmed(40);
        b.next(true, None);
        // 60 KiB of a keyframe left: the batch is smaller, so the mark stays the batch.
        assert_eq!(b.next(true, Some(60_000)), None);
        // 3000 bytes left: the mark drops to them, so the last chunk wakes the connection.
        assert_eq!(b.next(true, Some(3000)), Some(3000));
        assert_eq!(b.next(true, Some(0)), Some(1), "never below 1");
    }

    #[test]
    fn the_mark_is_bounded_and_follows_the_rate() {
        let (mut b, t1) = warmed(1000);
        assert_eq!(b.next(true, None), Some(MAX_LOW_WATER), "a second of the stream is more than the most");
        // The publisher drops to a tenth of the rate: after the next window the mark follows.
        let mut b2 = ReadBatch::new(Duration::from_millis(40), t1);
        b2.read(RATE / 10, t1 + Duration::from_secs(1));
        assert_eq!(b2.next(true, None), Some((RATE as f64 / 10.0 * 0.040) as u32));
    }

    #[test]
    fn a_zero_delay_never_batches() {
        let (mut b, _) = warmed(0);
        assert_eq!(b.next(true, None), None);
        assert_eq!(b.next(true, Some(5000)), None);
    }
}
