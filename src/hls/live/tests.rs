//! The live recorder against its rules: effect order, sequence continuity, gaps, failures, the window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::*;
use crate::hls::Playlist;
use crate::media::Timestamp90k;

fn segment(index: u64, secs: i64) -> Segment {
    Segment {
        index,
        start: Timestamp90k::from_secs(index as i64 * secs),
        duration: Timestamp90k::from_secs(secs),
        started_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + index * secs as u64),
        starts_with_keyframe: true,
        forced: false,
        discontinuity: false,
        bytes: 376,
        picture: Some((640, 360)),
    }
}

fn fresh(frag_count: u32) -> Recorder {
    Recorder::new(ChannelState::resume(Playlist::new(frag_count, 2), None, "playlist.m3u8".into()))
}

fn chunk(index: u64) -> Output {
    Output::Chunk { index, data: Bytes::from_static(b"ts bytes") }
}

/// Feeds one whole segment (two chunks and its close) and completes its upload with `result`.
fn record(r: &mut Recorder, index: u64, result: Result<(), String>) -> Vec<Effect> {
    let mut out = Vec::new();
    r.on_output(chunk(index), &mut out);
    r.on_output(chunk(index), &mut out);
    r.on_output(Output::Closed(segment(index, 2)), &mut out);
    if let Some(seq) = out.iter().find_map(|e| match e {
        Effect::Complete { seq } => Some(*seq),
        _ => None,
    }) {
        r.completed(seq, result, &mut out);
    }
    out
}

fn indexed(effects: &[Effect]) -> Vec<(u64, bool)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Index(row) => Some((row.seq, row.discontinuity)),
            _ => None,
        })
        .collect()
}

fn last_playlist(effects: &[Effect]) -> String {
    effects
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::Playlist(text) => Some(String::from_utf8(text.to_vec()).unwrap()),
            _ => None,
        })
        .expect("a playlist was written")
}

#[test]
fn a_segment_is_uploaded_completed_indexed_then_listed_then_announced_in_that_order() {
    let mut r = fresh(3);
    let effects = record(&mut r, 0, Ok(()));
    let kinds: Vec<&str> = effects
        .iter()
        .map(|e| match e {
            Effect::Begin { .. } => "begin",
            Effect::Append { .. } => "append",
            Effect::Complete { .. } => "complete",
            Effect::Abort { .. } => "abort",
            Effect::Index(_) => "index",
            Effect::Playlist(_) => "playlist",
            Effect::Event(RecordEvent::Stored { .. }) => "stored",
            Effect::Event(_) => "other event",
        })
        .collect();
    assert_eq!(kinds, ["begin", "append", "append", "complete", "index", "playlist", "stored"]);
    assert_eq!(indexed(&effects), [(0, false)]);
    let Some(Effect::Index(row)) = effects.iter().find(|e| matches!(e, Effect::Index(_))) else { unreachable!() };
    assert_eq!(row.duration_ms, 2_000);
    assert!(last_playlist(&effects).contains("\n0.ts"));
    assert_eq!(r.counters(), RecorderCounters { stored: 1, lost: 0, store_errors: 0 });
}

#[test]
fn nothing_is_listed_before_its_upload_completes_and_a_failed_completion_is_never_listed() {
    let mut r = fresh(3);
    let mut out = Vec::new();
    r.on_output(chunk(0), &mut out);
    r.on_output(Output::Closed(segment(0, 2)), &mut out);
    assert!(!out.iter().any(|e| matches!(e, Effect::Index(_) | Effect::Playlist(_))), "{out:?}");
    out.clear();
    r.completed(0, Err("disk full".into()), &mut out);
    assert_eq!(out, [Effect::Event(RecordEvent::Failed { seq: 0, message: "disk full".into() })]);
    let next = record(&mut r, 1, Ok(()));
    assert_eq!(indexed(&next), [(1, true)], "the segment after the failed one is discontinuous");
    let text = last_playlist(&next);
    assert!(!text.contains("\n0.ts") && text.contains("\n1.ts"), "{text}");
    assert_eq!(r.counters(), RecorderCounters { stored: 1, lost: 1, store_errors: 1 });
}

#[test]
fn sequence_numbers_continue_across_a_republish_and_a_restart_from_the_index_or_the_playlist() {
    let mut first = fresh(3);
    for i in 0..3 {
        record(&mut first, i, Ok(()));
    }
    let mut out = Vec::new();
    first.end(&mut out);
    assert_eq!(out, [Effect::Event(RecordEvent::Over)]);
    // Re-publish in this process: the state goes on, and the new encoder timeline is marked.
    let mut again = Recorder::new(first.into_state());
    assert_eq!(indexed(&record(&mut again, 0, Ok(()))), [(3, true)]);
    assert_eq!(indexed(&record(&mut again, 1, Ok(()))), [(4, false)]);

    // A restart: the stored playlist lists 2..=4 while the index knows seq 9 (segments listed in another
    // playlist): the index wins; with no index rows (lost in a crash) the playlist still prevents reuse.
    let stored = again.state().playlist.render();
    let playlist = Playlist::restore(3, 2, &stored).unwrap();
    assert_eq!(ChannelState::resume(playlist.clone(), Some(9), "p.m3u8".into()).next_seq, 10);
    assert_eq!(ChannelState::resume(playlist.clone(), None, "p.m3u8".into()).next_seq, 5);
    assert_eq!(ChannelState::resume(Playlist::new(3, 2), None, "p.m3u8".into()).next_seq, 0);
    let mut restarted = Recorder::new(ChannelState::resume(playlist, Some(4), "playlist.m3u8".into()));
    let effects = record(&mut restarted, 0, Ok(()));
    assert_eq!(indexed(&effects), [(5, true)]);
    let text = last_playlist(&effects);
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:3\n"), "{text}");
}

#[test]
fn a_segment_dropped_before_the_queue_leaves_a_gap_marked_by_a_discontinuity() {
    let mut r = fresh(5);
    record(&mut r, 0, Ok(()));
    // Index 1 was dropped whole by ingest (queue full): the recorder sees 2 next.
    let effects = record(&mut r, 2, Ok(()));
    assert!(effects.contains(&Effect::Event(RecordEvent::Lost { count: 1, why: LossReason::QueueFull })));
    assert_eq!(indexed(&effects), [(1, true)], "seq numbers have no holes; the gap is a discontinuity");
    // Only the close of index 3 made it: lost too, and the next one is marked again.
    let mut out = Vec::new();
    r.on_output(Output::Closed(segment(3, 2)), &mut out);
    assert!(out.contains(&Effect::Event(RecordEvent::Lost { count: 1, why: LossReason::QueueFull })));
    assert_eq!(indexed(&record(&mut r, 4, Ok(()))), [(2, true)]);
    assert_eq!(indexed(&record(&mut r, 5, Ok(()))), [(3, false)]);
    assert_eq!(r.counters().lost, 2);
}

#[test]
fn a_failed_upload_drops_the_rest_of_its_segment_and_an_unclosed_segment_is_aborted() {
    let mut r = fresh(3);
    let mut out = Vec::new();
    r.on_output(chunk(0), &mut out);
    r.upload_failed(0, "connection reset".into(), &mut out);
    out.clear();
    r.on_output(chunk(0), &mut out);
    r.on_output(Output::Closed(segment(0, 2)), &mut out);
    assert!(out.is_empty(), "no appends or completion after a failure: {out:?}");
    assert_eq!(indexed(&record(&mut r, 1, Ok(()))), [(1, true)]);
    // Segment 2 starts but never closes: the publish ends, and it is aborted, never listed.
    let mut out = Vec::new();
    r.on_output(chunk(2), &mut out);
    r.end(&mut out);
    assert_eq!(
        out[out.len() - 3..],
        [
            Effect::Abort { seq: 2 },
            Effect::Event(RecordEvent::Lost { count: 1, why: LossReason::Unfinished }),
            Effect::Event(RecordEvent::Over),
        ]
    );
    assert_eq!(r.counters(), RecorderCounters { stored: 1, lost: 2, store_errors: 1 });
}

#[test]
fn the_window_scrolls_and_counts_discontinuities_that_left_it() {
    let mut r = fresh(2);
    record(&mut r, 0, Ok(()));
    record(&mut r, 2, Ok(())); // seq 1, discontinuous (index 1 dropped)
    record(&mut r, 3, Ok(())); // seq 2
    let effects = record(&mut r, 4, Ok(())); // seq 3: seq 1 scrolls out with its tag
    let text = last_playlist(&effects);
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{text}");
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    let started: SystemTime = UNIX_EPOCH + Duration::from_secs(1_700_000_008);
    assert_eq!(r.state().playlist.segments().last().map(|s| s.started_at), Some(started));
}

#[test]
fn a_segment_past_the_reserved_numbers_is_dropped_whole_and_an_extension_lets_the_next_one_in() {
    let mut state = ChannelState::resume(Playlist::new(5, 2), None, "playlist.m3u8".into());
    state.next_seq = 10;
    state.seq_limit = 12;
    let mut r = Recorder::new(state);
    assert_eq!(indexed(&record(&mut r, 0, Ok(()))), [(10, false)]);
    assert_eq!(indexed(&record(&mut r, 1, Ok(()))), [(11, false)]);
    // 12 is not ours: no upload starts, the failure is announced, no number is used up.
    let out = record(&mut r, 2, Ok(()));
    assert!(!out.iter().any(|e| matches!(e, Effect::Begin { .. })), "{out:?}");
    assert!(out.iter().any(|e| matches!(e, Effect::Event(RecordEvent::Failed { .. }))), "{out:?}");
    assert_eq!(r.next_seq(), 12);
    r.extend_seq_limit(112);
    r.extend_seq_limit(50);
    assert_eq!(r.seq_limit(), 112, "a reservation never shrinks");
    assert_eq!(indexed(&record(&mut r, 3, Ok(()))), [(12, true)], "the gap is marked");
}
