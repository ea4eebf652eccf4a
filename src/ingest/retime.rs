//! Timestamp repair for one track, between the RTMP clock and the segmenter.
//!
//! A sane encoder's timestamps pass through unchanged, and one jump (an encoder restart, a splice) still
//! reaches the segmenter, which cuts there and marks a discontinuity. Broken clocks do not: timestamps
//! that keep jumping (garbage), that stand still (a constant) or that only move once a second (a coarse
//! clock) would otherwise make the segmenter drop almost every frame waiting for a keyframe after each
//! "jump", or grow one segment without end. Such a track is retimed: each frame whose timestamp is not
//! plausible gets the previous one plus a nominal frame step, so the output is monotonic and segments
//! are cut by media time again. A track that then shows [`TRUST_AFTER`] of plausible steps is trusted
//! again.

use crate::hls::segmenter::{JUMP_BACKWARD, JUMP_FORWARD};
use crate::media::Timestamp90k;

/// A second jump this soon (in output time) after the last one is not a restart: the clock is broken.
const REJUMP_WINDOW: Timestamp90k = Timestamp90k::from_secs(10);
/// This many frames in a row that do not advance: the clock stands still.
const STALLED_FRAMES: u32 = 3;
/// Plausible steps, in a row, that make a retimed track trusted again.
const TRUST_AFTER: Timestamp90k = Timestamp90k::from_secs(10);
/// The largest step a retimed track's input may make and still be taken as it is. A coarse clock moves
/// in steps of one second.
const PLAUSIBLE_STEP: Timestamp90k = Timestamp90k::from_secs(1);
/// Video's frame step until one was seen (30 fps).
pub const DEFAULT_VIDEO_STEP: i64 = 3000;
/// Audio's until the AudioSpecificConfig says (1024 samples at 44.1 kHz).
pub const DEFAULT_AUDIO_STEP: i64 = 1024 * 90_000 / 44_100;

/// Frame steps of the usual frame rates: 10, 12, 15, 23.976, 24, 25, 29.97, 30, 48, 50, 59.94, 60 fps.
const STANDARD_STEPS: [i64; 12] = [9000, 7500, 6000, 3754, 3750, 3600, 3003, 3000, 1875, 1800, 1502, 1500];

/// An estimated frame step, as the usual frame rate it is within 3 % of, if any: an estimate from
/// counting frames is a little off, and a frame step that is a little short of the real one moves every
/// cut a keyframe later.
pub fn standard_step(estimate: i64) -> i64 {
    STANDARD_STEPS
        .iter()
        .copied()
        .filter(|&s| (estimate - s).abs() * 100 <= s * 3)
        .min_by_key(|&s| (estimate - s).abs())
        .unwrap_or(estimate)
}

#[derive(Copy, Clone, Debug, PartialEq)]
enum State {
    Trusted,
    /// `good` counts the plausible input steps since the last repaired one.
    Retiming {
        good: Timestamp90k,
    },
}

#[derive(Debug)]
pub struct Retimer {
    state: State,
    last_in: Option<Timestamp90k>,
    last_out: Timestamp90k,
    /// Output minus input, as long as the input is followed.
    offset: i64,
    /// Output time of the last jump that was passed on.
    last_jump: Option<Timestamp90k>,
    stalled: u32,
    /// Nominal ticks per frame: learnt from the stream for video, the AAC frame length for audio.
    step: i64,
    learn_step: bool,
    repaired: u64,
    /// The last frame's timestamp was a jump that was passed on.
    passed_jump: bool,
}

impl Retimer {
    /// A track whose frame step is learnt from its own plausible steps (video).
    pub fn learning(initial_step: i64) -> Self {
        Self::new(initial_step, true)
    }

    /// A track whose frame step is known (audio: samples per frame / sample rate).
    pub fn fixed(step: i64) -> Self {
        Self::new(step, false)
    }

    fn new(step: i64, learn_step: bool) -> Self {
        Retimer {
            state: State::Trusted,
            last_in: None,
            last_out: Timestamp90k(0),
            offset: 0,
            last_jump: None,
            stalled: 0,
            step: step.max(1),
            learn_step,
            repaired: 0,
            passed_jump: false,
        }
    }

    pub fn set_step(&mut self, step: i64) {
        self.step = step.max(1);
    }

    /// Frames whose timestamp was replaced.
    pub fn repaired(&self) -> u64 {
        self.repaired
    }

    /// The last output, once there was a frame.
    pub fn last_out(&self) -> Option<Timestamp90k> {
        self.last_in.map(|_| self.last_out)
    }

    /// Whether the last frame was a jump passed on to the segmenter.
    pub fn passed_jump(&self) -> bool {
        self.passed_jump
    }

    /// Moves this track onto another timeline (the other track's), from the frame stamped `input` that
    /// was just mapped on. Counts as a jump: another one soon after makes the track retimed.
    pub fn snap(&mut self, input: Timestamp90k, to: Timestamp90k) -> Timestamp90k {
        self.offset = to.ticks().saturating_sub(input.ticks());
        self.last_out = to;
        self.last_jump = Some(to);
        self.passed_jump = false;
        to
    }

    pub fn is_retiming(&self) -> bool {
        matches!(self.state, State::Retiming { .. })
    }

    /// The timestamp to give the segmenter for a frame stamped `input`.
    pub fn map(&mut self, input: Timestamp90k) -> Timestamp90k {
        self.passed_jump = false;
        let Some(last_in) = self.last_in.replace(input) else {
            self.last_out = self.follow(input);
            return self.last_out;
        };
        let delta = input.ticks().saturating_sub(last_in.ticks());
        let jump = delta < -JUMP_BACKWARD.ticks() || delta > JUMP_FORWARD.ticks();
        let plausible = delta > 0 && delta <= PLAUSIBLE_STEP.ticks();
        self.stalled = if delta <= 0 && !jump { self.stalled + 1 } else { 0 };
        match self.state {
            State::Trusted => {
                let rejump = jump && self.last_jump.is_some_and(|at| self.last_out - at < REJUMP_WINDOW);
                if rejump || self.stalled >= STALLED_FRAMES {
                    self.state = State::Retiming { good: Timestamp90k(0) };
                    return self.repair();
                }
                if plausible && self.learn_step {
                    self.step = delta;
                }
                let out = self.follow(input);
                if jump {
                    self.last_jump = Some(out);
                    self.passed_jump = true;
                }
                // A small step back is the segmenter's to clamp: the output follows the input exactly.
                self.last_out = out;
                out
            }
            State::Retiming { good } if plausible => {
                let good = good + Timestamp90k(delta);
                self.state = if good >= TRUST_AFTER { State::Trusted } else { State::Retiming { good } };
                self.last_jump = None;
                let gap = (self.follow(input) - self.last_out).ticks();
                if gap > 0 && gap <= PLAUSIBLE_STEP.ticks() {
                    // The input is ahead, as a coarse clock is at each tick: catch up with it.
                    self.last_out = self.follow(input);
                    self.last_out
                } else if gap <= 0 && gap >= -PLAUSIBLE_STEP.ticks() {
                    // Repaired steps ran a little ahead of the input: let it catch up.
                    self.repair()
                } else {
                    // The input moved to another timeline and runs sanely there: take its steps from here.
                    self.last_out = self.last_out + Timestamp90k(delta);
                    self.offset = self.last_out.ticks().saturating_sub(input.ticks());
                    self.last_out
                }
            }
            State::Retiming { .. } => {
                self.state = State::Retiming { good: Timestamp90k(0) };
                self.repair()
            }
        }
    }

    fn follow(&self, input: Timestamp90k) -> Timestamp90k {
        Timestamp90k(input.ticks().saturating_add(self.offset))
    }

    /// The next frame step, not the input's: the offset to the input is kept, so a coarse clock's next
    /// tick can be caught up with.
    fn repair(&mut self) -> Timestamp90k {
        self.repaired += 1;
        self.last_out = self.last_out + Timestamp90k(self.step);
        self.last_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: i64) -> Timestamp90k {
        Timestamp90k::from_millis(v)
    }

    #[test]
    fn estimates_snap_to_the_usual_frame_rates() {
        assert_eq!(standard_step(3590), 3600);
        assert_eq!(standard_step(3010), 3003);
        assert_eq!(standard_step(2999), 3000);
        assert_eq!(standard_step(5000), 5000, "20 fps is unusual: kept");
    }

    #[test]
    fn a_sane_clock_and_one_restart_pass_through_unchanged() {
        let mut r = Retimer::learning(DEFAULT_VIDEO_STEP);
        let input: Vec<i64> = (0..500).map(|i| i * 40).chain((0..500).map(|i| 3_600_000 + i * 40)).collect();
        let out: Vec<_> = input.iter().map(|&t| r.map(ms(t))).collect();
        assert_eq!(out, input.iter().map(|&t| ms(t)).collect::<Vec<_>>());
        assert_eq!(r.repaired(), 0);
        assert!(!r.is_retiming());
    }

    #[test]
    fn a_constant_clock_advances_by_the_frame_step() {
        let mut r = Retimer::fixed(1920);
        let out: Vec<_> = (0..100).map(|_| r.map(ms(5000)).ticks()).collect();
        // Two equal steps pass (the segmenter clamps them), then every frame moves on by one AAC frame.
        assert_eq!(&out[..3], &[450_000, 450_000, 450_000]);
        assert!(out[3..].windows(2).all(|w| w[1] - w[0] == 1920), "{out:?}");
    }

    #[test]
    fn a_coarse_clock_is_smoothed_and_keeps_real_time() {
        let mut r = Retimer::learning(DEFAULT_VIDEO_STEP);
        // 40 ms frames stamped with whole seconds.
        let out: Vec<_> = (0..750).map(|i| r.map(ms(i * 40 / 1000 * 1000)).ticks()).collect();
        assert!(out.windows(2).all(|w| w[1] >= w[0]), "monotonic");
        assert!(out.windows(2).all(|w| w[1] - w[0] <= 90_000), "no gap");
        let span = (out[749] - out[0]) as f64 / 90_000.0;
        assert!((29.0..=31.0).contains(&span), "30 s of frames span {span} s");
    }

    #[test]
    fn garbage_becomes_monotonic_and_a_sane_clock_is_trusted_again() {
        let mut r = Retimer::learning(DEFAULT_VIDEO_STEP);
        let mut x: u64 = 1;
        let mut garbage = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) as i64) % 4_000_000_000
        };
        for i in 0..100 {
            r.map(ms(i * 40));
        }
        let mut out = Vec::new();
        for _ in 0..500 {
            out.push(r.map(ms(garbage())).ticks());
        }
        assert!(out.windows(2).all(|w| w[1] - w[0] == 3600), "the learnt 40 ms step");
        assert!(r.is_retiming());
        // A sane clock again, from anywhere: trusted after 10 s, and a later restart passes through.
        let resumed: Vec<_> = (0..300).map(|i| r.map(ms(77_000 + i * 40)).ticks()).collect();
        assert!(resumed.windows(2).all(|w| w[1] - w[0] == 3600));
        assert!(!r.is_retiming());
        let restart = r.map(ms(900_000_000));
        assert!(restart.ticks() - resumed[299] > JUMP_FORWARD.ticks(), "a restart is a jump again");
    }
}
