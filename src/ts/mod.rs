//! `media::Frame`s -> 188-byte MPEG-TS packets (ISO/IEC 13818-1), written into the caller's segment buffer.
//!
//! We own what the `mpeg2ts` crate leaves to its users: PES splitting, continuity counters, PCR scheduling,
//! 33-bit wrap, AVCC -> Annex B with AUD and SPS/PPS before every IDR, one ADTS header per AAC frame.
//! `mpeg2ts` writes the structured packets (PAT, PMT with its CRC, the first packet of each PES with its
//! adaptation field and header). The continuation packets, which are most of the bytes, are written here
//! directly (a 4-byte header and a copy of the payload): building an `mpeg2ts::TsPacket` for each of them
//! costs a second copy into its fixed array for nothing (see `benches/remux.rs`). The round-trip tests read
//! everything back with `mpeg2ts`'s reader.
//!
//! Not here: when to cut segments (`hls`), where bytes go (`storage`).

use mpeg2ts::es::{StreamId, StreamType};
use mpeg2ts::pes::PesHeader;
use mpeg2ts::time::{ClockReference, Timestamp};
use mpeg2ts::ts::payload::{self, Pat, Pes, Pmt};
use mpeg2ts::ts::{
    AdaptationField, ContinuityCounter, EsInfo, Pid, ProgramAssociation, TransportScramblingControl, TsHeader,
    TsPacket, TsPacketWriter, TsPayload, VersionNumber, WriteTsPacket,
};

use crate::flv::{self, FlvError, avc};
use crate::media::{AacConfig, AvcConfig, Timestamp90k};

pub mod inspect;

pub const PACKET_SIZE: usize = 188;
const PAYLOAD_SIZE: usize = 184;
pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;

/// Added to every PTS/DTS so that the PCR, which runs [`PCR_DELAY`] behind the DTS, never goes negative
/// at stream start. The same 1.4 s / 0.7 s split as ffmpeg's muxer, which every player tolerates.
pub const TIMESTAMP_OFFSET: Timestamp90k = Timestamp90k(126_000);
const PCR_DELAY: i64 = 63_000;
/// ISO 13818-1 requires a PCR at least every 100 ms; we aim below that.
const PCR_INTERVAL: i64 = 90 * 80;

const START_CODE: &[u8] = &[0, 0, 0, 1];
const AUD: &[u8] = &[0, 0, 0, 1, avc::NAL_AUD, 0xf0];

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("malformed frame: {0}")]
    Frame(#[from] FlvError),
    #[error("TS packet: {0}")]
    Packet(#[from] mpeg2ts::Error),
}

/// Which elementary streams the PMT announces. Fixed for the life of a segment.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracks {
    pub video: bool,
    pub audio: bool,
}

#[derive(Debug)]
pub struct Muxer {
    tracks: Tracks,
    cc: [u8; 4], // PAT, PMT, video, audio
    /// No packet of this PID written yet. A muxer is made per publish, so its counters start at 0
    /// where the previous publish's stopped anywhere: the first packet of each PID carries
    /// discontinuity_indicator (§2.4.3.5), or readers that check counters across segments (ffmpeg)
    /// flag the packets as corrupt. On the PCR PID it also announces the new time base.
    fresh: [bool; 4],
    last_pcr: Option<i64>,
}

const CC_PAT: usize = 0;
const CC_PMT: usize = 1;
const CC_VIDEO: usize = 2;
const CC_AUDIO: usize = 3;

impl Muxer {
    pub fn new(tracks: Tracks) -> Self {
        Muxer { tracks, cc: [0; 4], fresh: [true; 4], last_pcr: None }
    }

    pub fn tracks(&self) -> Tracks {
        self.tracks
    }

    /// Announces a new track set; the next `write_tables` carries it. Counters keep running.
    pub fn set_tracks(&mut self, tracks: Tracks) {
        self.tracks = tracks;
    }

    fn pcr_pid(&self) -> u16 {
        if self.tracks.video { VIDEO_PID } else { AUDIO_PID }
    }

    /// PAT and PMT: the first two packets of every segment (RFC 8216 §3.5).
    pub fn write_tables(&mut self, out: &mut Vec<u8>) -> Result<(), MuxError> {
        let pmt_pid = Pid::new(PMT_PID)?;
        let pat = TsPayload::Pat(Pat {
            transport_stream_id: 1,
            version_number: VersionNumber::new(),
            table: vec![ProgramAssociation { program_num: 1, program_map_pid: pmt_pid }],
        });
        let mut es_info = Vec::with_capacity(2);
        if self.tracks.video {
            es_info.push(EsInfo {
                stream_type: StreamType::H264,
                elementary_pid: Pid::new(VIDEO_PID)?,
                descriptors: vec![],
            });
        }
        if self.tracks.audio {
            es_info.push(EsInfo {
                stream_type: StreamType::AdtsAac,
                elementary_pid: Pid::new(AUDIO_PID)?,
                descriptors: vec![],
            });
        }
        let pmt = TsPayload::Pmt(Pmt {
            program_num: 1,
            pcr_pid: Some(Pid::new(self.pcr_pid())?),
            version_number: VersionNumber::new(),
            program_info: vec![],
            es_info,
        });
        let pat_af = self.take_fresh(CC_PAT).then(|| adaptation_field(None, false, true)).transpose()?;
        self.write_structured(Pid::PAT, CC_PAT, pat_af, pat, out)?;
        let pmt_af = self.take_fresh(CC_PMT).then(|| adaptation_field(None, false, true)).transpose()?;
        self.write_structured(PMT_PID, CC_PMT, pmt_af, pmt, out)
    }

    /// Whether the next packet of this PID is its first (and so must say discontinuity).
    fn take_fresh(&mut self, index: usize) -> bool {
        std::mem::replace(&mut self.fresh[index], false)
    }

    fn write_structured(
        &mut self,
        pid: u16,
        cc_index: usize,
        adaptation_field: Option<AdaptationField>,
        payload: TsPayload,
        out: &mut Vec<u8>,
    ) -> Result<(), MuxError> {
        let packet =
            TsPacket { header: header(pid, self.next_cc(cc_index))?, adaptation_field, payload: Some(payload) };
        TsPacketWriter::new(out).write_ts_packet(&packet)?;
        Ok(())
    }

    fn next_cc(&mut self, index: usize) -> u8 {
        let cc = self.cc[index];
        self.cc[index] = (cc + 1) & 0x0f;
        cc
    }

    /// The PCR for a frame with this DTS, never running backwards.
    fn pcr_for(&mut self, dts: Timestamp90k) -> i64 {
        let pcr = (dts + TIMESTAMP_OFFSET).ticks() - PCR_DELAY;
        let pcr = self.last_pcr.map_or(pcr, |last| pcr.max(last));
        self.last_pcr = Some(pcr);
        pcr
    }

    /// One H.264 access unit (AVCC NAL units) as one PES on the video PID, in Annex B with an AUD first and
    /// SPS/PPS in front of every keyframe that does not carry its own.
    pub fn write_video(
        &mut self,
        dts: Timestamp90k,
        pts: Timestamp90k,
        keyframe: bool,
        nalus: &[u8],
        config: &AvcConfig,
        out: &mut Vec<u8>,
    ) -> Result<(), MuxError> {
        let len_size = config.nal_length_size;
        // Validate every length first so the packetizer below works on known-good slices.
        let mut has_sps = false;
        for nal in avc::nal_units(nalus, len_size) {
            has_sps |= nal?.first().is_some_and(|h| h & 0x1f == avc::NAL_SPS);
        }
        let param_sets: &[bytes::Bytes] = if keyframe && !has_sps { &config.sps } else { &[] };
        let pps: &[bytes::Bytes] = if keyframe && !has_sps { &config.pps } else { &[] };
        let pieces = std::iter::once(AUD).chain(param_sets.iter().chain(pps).flat_map(|s| [START_CODE, &s[..]])).chain(
            avc::nal_units(nalus, len_size)
                .flatten()
                .filter(|nal| nal.first().is_some_and(|h| h & 0x1f != avc::NAL_AUD))
                .flat_map(|nal| [START_CODE, nal]),
        );
        let pcr = Some(self.pcr_for(dts));
        let pts_out = Timestamp::new((pts + TIMESTAMP_OFFSET).wrap33())?;
        let dts_out = (dts != pts).then(|| Timestamp::new((dts + TIMESTAMP_OFFSET).wrap33())).transpose()?;
        let pes = PesStart { stream_id: 0xe0, pts: pts_out, dts: dts_out, bounded_len: false };
        self.write_pes(VIDEO_PID, CC_VIDEO, pes, pcr, keyframe, pieces, out)
    }

    /// One raw AAC frame as one PES with its own ADTS header on the audio PID.
    pub fn write_audio(
        &mut self,
        pts: Timestamp90k,
        raw: &[u8],
        config: &AacConfig,
        out: &mut Vec<u8>,
    ) -> Result<(), MuxError> {
        let adts = flv::aac::adts_header(config, raw.len())?;
        let audio_only = !self.tracks.video;
        let pcr = if audio_only {
            Some(self.pcr_for(pts))
        } else {
            // Video carries the PCR; if video stalls, keep the clock ticking with PCR-only packets.
            let due = (pts + TIMESTAMP_OFFSET).ticks() - PCR_DELAY;
            if self.last_pcr.is_some_and(|last| due - last >= PCR_INTERVAL) {
                let pcr = self.pcr_for(pts);
                self.write_pcr_only(pcr, out)?;
            }
            None
        };
        let pes = PesStart {
            stream_id: 0xc0,
            pts: Timestamp::new((pts + TIMESTAMP_OFFSET).wrap33())?,
            dts: None,
            bounded_len: true,
        };
        self.write_pes(AUDIO_PID, CC_AUDIO, pes, pcr, audio_only, [&adts[..], raw].into_iter(), out)
    }

    fn write_pcr_only(&mut self, pcr: i64, out: &mut Vec<u8>) -> Result<(), MuxError> {
        // A packet without payload repeats the previous continuity counter (§2.4.3.3).
        let cc = self.cc[CC_VIDEO].wrapping_sub(1) & 0x0f;
        let packet = TsPacket {
            header: header(VIDEO_PID, cc)?,
            adaptation_field: Some(adaptation_field(Some(pcr), false, false)?),
            payload: None,
        };
        TsPacketWriter::new(out).write_ts_packet(&packet)?;
        Ok(())
    }

    /// Splits one PES over TS packets. `pieces` are concatenated to form the PES payload.
    #[allow(clippy::too_many_arguments)]
    fn write_pes<'a>(
        &mut self,
        pid: u16,
        cc_index: usize,
        start: PesStart,
        pcr: Option<i64>,
        random_access: bool,
        pieces: impl Iterator<Item = &'a [u8]> + Clone,
        out: &mut Vec<u8>,
    ) -> Result<(), MuxError> {
        let total: usize = pieces.clone().map(<[u8]>::len).sum();
        let mut cursor = Pieces { iter: pieces, current: &[] };
        let header_len = 9 + 5 + if start.dts.is_some() { 5 } else { 0 };
        let discontinuity = self.take_fresh(cc_index);
        let af = (pcr.is_some() || random_access || discontinuity)
            .then(|| adaptation_field(pcr, random_access, discontinuity))
            .transpose()?;
        let af_len = match &af {
            Some(af) if af.pcr.is_some() => 8,
            Some(_) => 2,
            None => 0,
        };
        let first_len = total.min(PAYLOAD_SIZE - af_len - header_len);
        let mut first = [0u8; PAYLOAD_SIZE];
        cursor.copy_into(&mut first[..first_len]);
        let pes_packet_len = if start.bounded_len { u16::try_from(header_len - 6 + total).unwrap_or(0) } else { 0 };
        let pes = Pes {
            header: PesHeader {
                stream_id: StreamId::new(start.stream_id),
                priority: false,
                data_alignment_indicator: true,
                copyright: false,
                original_or_copy: false,
                pts: Some(start.pts),
                dts: start.dts,
                escr: None,
            },
            pes_packet_len,
            data: payload::Bytes::new(&first[..first_len])?,
        };
        self.write_structured(pid, cc_index, af, TsPayload::PesStart(pes), out)?;

        let mut remaining = total - first_len;
        out.reserve(remaining.div_ceil(PAYLOAD_SIZE) * PACKET_SIZE);
        while remaining > 0 {
            let cc = self.next_cc(cc_index);
            let n = remaining.min(PAYLOAD_SIZE);
            if n == PAYLOAD_SIZE {
                out.extend_from_slice(&[0x47, (pid >> 8) as u8, pid as u8, 0x10 | cc]);
            } else {
                // Short last packet: pad with adaptation-field stuffing (§2.4.3.5).
                let af_len = PAYLOAD_SIZE - 1 - n;
                out.extend_from_slice(&[0x47, (pid >> 8) as u8, pid as u8, 0x30 | cc, af_len as u8]);
                if af_len > 0 {
                    out.push(0x00);
                    out.resize(out.len() + af_len - 1, 0xff);
                }
            }
            cursor.extend_into(n, out);
            remaining -= n;
        }
        Ok(())
    }
}

struct PesStart {
    stream_id: u8,
    pts: Timestamp,
    dts: Option<Timestamp>,
    /// Audio PES carry their exact length; video may use 0 ("unbounded"), which is allowed only for video.
    bounded_len: bool,
}

/// A cursor over the concatenation of several slices.
struct Pieces<'a, I> {
    iter: I,
    current: &'a [u8],
}

impl<'a, I: Iterator<Item = &'a [u8]>> Pieces<'a, I> {
    fn take(&mut self, max: usize) -> &'a [u8] {
        while self.current.is_empty() {
            match self.iter.next() {
                Some(next) => self.current = next,
                None => return &[],
            }
        }
        let (head, tail) = self.current.split_at(max.min(self.current.len()));
        self.current = tail;
        head
    }

    fn copy_into(&mut self, mut dst: &mut [u8]) {
        while !dst.is_empty() {
            let chunk = self.take(dst.len());
            if chunk.is_empty() {
                return;
            }
            let (head, tail) = dst.split_at_mut(chunk.len());
            head.copy_from_slice(chunk);
            dst = tail;
        }
    }

    fn extend_into(&mut self, mut n: usize, out: &mut Vec<u8>) {
        while n > 0 {
            let chunk = self.take(n);
            if chunk.is_empty() {
                return;
            }
            out.extend_from_slice(chunk);
            n -= chunk.len();
        }
    }
}

fn header(pid: u16, cc: u8) -> Result<TsHeader, MuxError> {
    Ok(TsHeader {
        transport_error_indicator: false,
        transport_priority: false,
        pid: Pid::new(pid)?,
        transport_scrambling_control: TransportScramblingControl::NotScrambled,
        continuity_counter: ContinuityCounter::from_u8(cc)?,
    })
}

fn adaptation_field(pcr: Option<i64>, random_access: bool, discontinuity: bool) -> Result<AdaptationField, MuxError> {
    let pcr = pcr.map(|ticks| ClockReference::new(Timestamp90k(ticks).wrap33() * 300)).transpose()?;
    Ok(AdaptationField {
        discontinuity_indicator: discontinuity,
        random_access_indicator: random_access,
        es_priority_indicator: false,
        pcr,
        opcr: None,
        splice_countdown: None,
        transport_private_data: vec![],
        extension: None,
    })
}

#[cfg(test)]
mod tests;
