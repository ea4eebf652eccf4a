//! The rolling live playlist: the latest FragCount segments, rendered with m3u8-rs (RFC 8216 §4.3).

use std::collections::VecDeque;
use std::time::SystemTime;

use m3u8_rs::{MediaPlaylist, MediaSegment};

use super::{parse_segment_file_name, segment_file_name};
use crate::media::CLOCK_90K;

#[derive(Clone, Debug, PartialEq)]
pub struct PlaylistSegment {
    pub seq: u64,
    /// Exact duration in 90 kHz ticks; converted to seconds only when rendered.
    pub duration_90k: i64,
    pub discontinuity: bool,
    pub started_at: SystemTime,
}

#[derive(Clone, Debug)]
pub struct Playlist {
    frag_count: usize,
    frag_duration_secs: u64,
    window: VecDeque<PlaylistSegment>,
    /// The Media Sequence Number of the first listed segment (§4.3.3.2). It goes up by one for every
    /// segment that scrolls out, whatever the sequence numbers in the file names: those skip a number
    /// when an upload failed or a node took a channel over, and a segment's MSN must never change
    /// between two playlists, or players skip or repeat segments.
    media_sequence: u64,
    /// Number of EXT-X-DISCONTINUITY tags that have scrolled out of the window (§4.3.3.3).
    discontinuity_sequence: u64,
    /// The channel has had no publisher for its reconnect window: `EXT-X-ENDLIST`, so players end.
    /// The next segment reopens it.
    ended: bool,
}

/// The longest EXTINF a restored entry may have: a day (ours are at most max(2 x 100 s, 60 s)).
const MAX_RESTORED_SECONDS: f64 = 86_400.0;

#[derive(Debug, thiserror::Error)]
pub enum PlaylistError {
    #[error("stored playlist does not parse as a media playlist")]
    Unparsable,
}

impl Playlist {
    pub fn new(frag_count: u32, frag_duration_secs: u32) -> Self {
        Playlist {
            frag_count: frag_count.max(1) as usize,
            frag_duration_secs: u64::from(frag_duration_secs.max(1)),
            window: VecDeque::new(),
            media_sequence: 0,
            discontinuity_sequence: 0,
            ended: false,
        }
    }

    /// Closes the live playlist (`EXT-X-ENDLIST`) until the next segment.
    pub fn end(&mut self) {
        self.ended = true;
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Picks up a playlist we wrote before (a restart): window, media and discontinuity sequence.
    pub fn restore(frag_count: u32, frag_duration_secs: u32, stored: &[u8]) -> Result<Self, PlaylistError> {
        let parsed = match m3u8_rs::parse_playlist_res(stored) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
            _ => return Err(PlaylistError::Unparsable),
        };
        let mut playlist = Playlist::new(frag_count, frag_duration_secs);
        playlist.discontinuity_sequence = parsed.discontinuity_sequence;
        playlist.media_sequence = parsed.media_sequence;
        playlist.ended = parsed.end_list;
        for seg in parsed.segments {
            let Some(seq) = parse_segment_file_name(&seg.uri) else {
                continue;
            };
            // Our segments last at most a few minutes; an EXTINF that is not a sane duration is a damaged
            // entry, left out (its arithmetic would overflow later).
            let seconds = f64::from(seg.duration);
            if !(0.0..=MAX_RESTORED_SECONDS).contains(&seconds) {
                continue;
            }
            let started_at = seg.program_date_time.map_or(SystemTime::UNIX_EPOCH, SystemTime::from);
            playlist.window.push_back(PlaylistSegment {
                seq,
                duration_90k: (seconds * CLOCK_90K as f64).round() as i64,
                discontinuity: seg.discontinuity,
                started_at,
            });
        }
        while playlist.window.len() > playlist.frag_count {
            playlist.pop();
        }
        Ok(playlist)
    }

    /// Applies new FragCount/FragDuration settings (a channel update) from the next segment on.
    pub fn reconfigure(&mut self, frag_count: u32, frag_duration_secs: u32) {
        self.frag_count = frag_count.max(1) as usize;
        self.frag_duration_secs = u64::from(frag_duration_secs.max(1));
        while self.window.len() > self.frag_count {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(gone) = self.window.pop_front() {
            // Saturating: a restored playlist's counters come from a file.
            self.media_sequence = self.media_sequence.saturating_add(1);
            if gone.discontinuity {
                self.discontinuity_sequence = self.discontinuity_sequence.saturating_add(1);
            }
        }
        // The first listed segment needs no EXT-X-DISCONTINUITY of its own: the sequence number says it.
        // We keep the flag as is so the count of scrolled-out tags stays exact.
    }

    pub fn push(&mut self, segment: PlaylistSegment) {
        self.ended = false;
        if self.window.is_empty() {
            // Nothing listed: any number not below the last one used will do, and the file's keeps
            // the two equal where nothing was ever skipped.
            self.media_sequence = self.media_sequence.max(segment.seq);
        }
        self.window.push_back(segment);
        while self.window.len() > self.frag_count {
            self.pop();
        }
    }

    pub fn segments(&self) -> impl Iterator<Item = &PlaylistSegment> {
        self.window.iter()
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.window.back().map(|s| s.seq)
    }

    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    pub fn media_sequence(&self) -> u64 {
        self.media_sequence
    }

    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// EXT-X-TARGETDURATION: FragDuration, raised to cover every listed EXTINF rounded to nearest.
    pub fn target_duration(&self) -> u64 {
        self.window
            .iter()
            .map(|s| ((s.duration_90k + CLOCK_90K / 2) / CLOCK_90K) as u64)
            .fold(self.frag_duration_secs, u64::max)
    }

    pub fn render(&self) -> Vec<u8> {
        let playlist = MediaPlaylist {
            version: Some(3),
            target_duration: self.target_duration(),
            media_sequence: self.media_sequence(),
            discontinuity_sequence: self.discontinuity_sequence,
            end_list: self.ended,
            segments: self
                .window
                .iter()
                .map(|s| MediaSegment {
                    uri: segment_file_name(s.seq),
                    // Milliseconds are exact enough and keep f32 noise (6.0903335) out of the text.
                    duration: ((s.duration_90k + 45) / 90) as f32 / 1000.0,
                    discontinuity: s.discontinuity,
                    program_date_time: Some(chrono::DateTime::<chrono::Utc>::from(s.started_at).fixed_offset()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut out = Vec::with_capacity(128 + 96 * self.window.len());
        // Writing into a Vec cannot fail.
        let _ = playlist.write_to(&mut out);
        out
    }
}

/// A VOD playlist over stored segments (PostVodPlaylist/GetVodPlaylist): every segment given, in order,
/// with EXT-X-ENDLIST. A discontinuity on the first entry is dropped (there is nothing before it).
pub fn render_vod(segments: &[PlaylistSegment]) -> Vec<u8> {
    let target = segments.iter().map(|s| ((s.duration_90k + CLOCK_90K / 2) / CLOCK_90K) as u64).fold(1, u64::max);
    let playlist = MediaPlaylist {
        version: Some(3),
        target_duration: target,
        media_sequence: segments.first().map_or(0, |s| s.seq),
        playlist_type: Some(m3u8_rs::MediaPlaylistType::Vod),
        end_list: true,
        segments: segments
            .iter()
            .enumerate()
            .map(|(i, s)| MediaSegment {
                uri: segment_file_name(s.seq),
                duration: ((s.duration_90k + 45) / 90) as f32 / 1000.0,
                discontinuity: i > 0 && s.discontinuity,
                program_date_time: Some(chrono::DateTime::<chrono::Utc>::from(s.started_at).fixed_offset()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(128 + 96 * segments.len());
    let _ = playlist.write_to(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn seg(seq: u64, secs: f64, discontinuity: bool) -> PlaylistSegment {
        PlaylistSegment {
            seq,
            duration_90k: (secs * 90_000.0) as i64,
            discontinuity,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seq * 5),
        }
    }

    fn text(p: &Playlist) -> String {
        String::from_utf8(p.render()).unwrap()
    }

    /// Found by the playlist_restore fuzz target: an EXTINF of 2e28 s overflowed the target duration.
    #[test]
    fn a_damaged_stored_entry_is_left_out_instead_of_overflowing() {
        let stored = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n\
            #EXTINF:22222222222222222222222222223,\n0.ts\n#EXTINF:2.000,\n2.ts\n#EXTINF:2.000,\n3.ts\n";
        let mut p = Playlist::restore(3, 2, stored).unwrap();
        assert_eq!(p.segments().map(|s| s.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(p.target_duration(), 2);
        for seq in 4..8 {
            p.push(PlaylistSegment {
                seq,
                duration_90k: 180_000,
                discontinuity: false,
                started_at: SystemTime::UNIX_EPOCH,
            });
        }
        assert_eq!(p.media_sequence(), u64::MAX, "the counter saturates");
        assert!(String::from_utf8(p.render()).unwrap().contains("7.ts"));
    }

    #[test]
    fn a_vod_playlist_lists_every_segment_and_ends() {
        let text = String::from_utf8(render_vod(&[seg(4, 5.0, true), seg(5, 6.6, false), seg(9, 2.0, true)])).unwrap();
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4"), "{text}");
        assert!(text.contains("#EXT-X-TARGETDURATION:7"), "{text}");
        assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"), "{text}");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        assert!(text.find("5.ts").unwrap() < text.find("#EXT-X-DISCONTINUITY\n").unwrap(), "{text}");
    }

    #[test]
    fn an_ended_playlist_says_endlist_until_the_next_segment_and_survives_a_restore() {
        let mut p = Playlist::new(3, 5);
        p.push(seg(0, 5.0, false));
        p.push(seg(1, 5.0, false));
        p.end();
        let ended = text(&p);
        assert!(ended.trim_end().ends_with("#EXT-X-ENDLIST"), "{ended}");
        let restored = Playlist::restore(3, 5, ended.as_bytes()).unwrap();
        assert!(restored.is_ended());
        assert_eq!(text(&restored), ended, "a restore keeps the window and the end");
        let mut reopened = restored;
        reopened.push(seg(2, 5.0, true));
        let t = text(&reopened);
        assert!(!t.contains("ENDLIST"), "{t}");
        assert!(t.find("#EXT-X-DISCONTINUITY").unwrap() > t.find("1.ts").unwrap(), "{t}");
    }

    #[test]
    fn the_window_keeps_the_latest_frag_count_segments_and_advances_media_sequence() {
        let mut p = Playlist::new(3, 5);
        for i in 0..5 {
            p.push(seg(i, 5.0, false));
        }
        let t = text(&p);
        assert!(t.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{t}");
        assert!(!t.contains("\n1.ts") && t.contains("\n2.ts") && t.contains("\n4.ts"));
        assert!(t.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:30.000Z"), "{t}");
        assert!(!t.contains("ENDLIST"));
    }

    #[test]
    fn a_skipped_file_number_never_changes_a_listed_segments_media_sequence_number() {
        let mut p = Playlist::new(3, 5);
        let mut msn_of: std::collections::HashMap<String, u64> = Default::default();
        // 3 failed (or was skipped at a takeover): the file numbers jump, the MSNs must not.
        for seq in [0, 1, 2, 4, 5, 6, 7, 9, 10, 11] {
            p.push(seg(seq, 5.0, seq == 4 || seq == 9));
            let (_, pl) = m3u8_rs::parse_media_playlist(&p.render()).unwrap();
            for (i, s) in pl.segments.iter().enumerate() {
                let msn = pl.media_sequence + i as u64;
                assert_eq!(*msn_of.entry(s.uri.clone()).or_insert(msn), msn, "{} changed its MSN", s.uri);
            }
        }
        assert_eq!(p.media_sequence(), 7, "ten segments, three listed: seven scrolled out");
        // A restart picks the MSN up from the stored text, not from the first file name.
        let again = Playlist::restore(3, 5, &p.render()).unwrap();
        assert_eq!(again.media_sequence(), 7);
        assert_eq!(again.segments().map(|s| s.seq).collect::<Vec<_>>(), [9, 10, 11]);
    }

    #[test]
    fn target_duration_covers_every_listed_extinf_rounded_to_nearest() {
        let mut p = Playlist::new(3, 2);
        p.push(seg(0, 2.0, false));
        p.push(seg(1, 6.4, false));
        assert_eq!(p.target_duration(), 6);
        p.push(seg(2, 6.6, false));
        assert_eq!(p.target_duration(), 7);
        assert!(text(&p).contains("#EXT-X-TARGETDURATION:7\n"));
        p.push(seg(3, 1.0, false));
        p.push(seg(4, 1.0, false));
        p.push(seg(5, 1.0, false));
        assert_eq!(p.target_duration(), 2, "never below FragDuration");
    }

    #[test]
    fn discontinuity_sequence_counts_tags_that_scrolled_out() {
        let mut p = Playlist::new(2, 5);
        p.push(seg(0, 5.0, false));
        p.push(seg(1, 5.0, true));
        p.push(seg(2, 5.0, false));
        assert_eq!(p.discontinuity_sequence(), 0);
        assert!(text(&p).contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME"));
        p.push(seg(3, 5.0, true));
        assert_eq!(p.discontinuity_sequence(), 1);
        assert!(text(&p).contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
    }

    #[test]
    fn a_rendered_playlist_restores_to_the_same_state() {
        let mut p = Playlist::new(3, 5);
        for i in 0..7 {
            p.push(seg(i, 5.005, i == 4 || i == 6));
        }
        let back = Playlist::restore(3, 5, &p.render()).unwrap();
        assert_eq!(back.render(), p.render());
        assert_eq!(back.last_seq(), Some(6));
        assert!(Playlist::restore(3, 5, b"not a playlist").is_err());
    }
}
