//! FLV tag bodies as RTMP delivers them (Adobe FLV spec v10.1, annex E.4.2 / E.4.3), and FLV files.
//!
//! Place in the flow: `rtmp` hands each VIDEODATA / AUDIODATA body here; the result is a codec config or a
//! frame payload that is a `Bytes` slice of the message (no copy). This module knows nothing of RTMP
//! sessions, timelines or TS; `ingest` combines these pieces into `media::Frame`s.
//!
//! Supported: H.264 (codec id 7) and AAC (sound format 10). Anything else is a clear error the caller
//! turns into a refused publish.

pub mod aac;
pub mod avc;
pub mod file;

use bytes::Bytes;

use crate::media::{AacConfig, AvcConfig};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("empty {0} tag")]
    Empty(&'static str),
    #[error("{what} truncated: need {need} bytes, have {have}")]
    Truncated { what: &'static str, need: usize, have: usize },
    #[error("unsupported video codec id {0} (only H.264/AVC, id 7, is supported)")]
    UnsupportedVideoCodec(u8),
    #[error("unsupported audio format {0} (only AAC, format 10, is supported)")]
    UnsupportedAudioCodec(u8),
    #[error("unknown AVCPacketType {0}")]
    UnknownAvcPacketType(u8),
    #[error("invalid AVCDecoderConfigurationRecord: {0}")]
    BadAvcConfig(&'static str),
    #[error("invalid AudioSpecificConfig: {0}")]
    BadAacConfig(&'static str),
    #[error("NAL unit length {len} overruns the frame ({remaining} bytes left)")]
    BadNalLength { len: usize, remaining: usize },
    #[error("not an FLV file: {0}")]
    BadFile(&'static str),
}

/// A parsed VIDEODATA body.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoTag {
    Config(AvcConfig),
    /// Length-prefixed NAL units of one access unit.
    Frame {
        keyframe: bool,
        composition_ms: i32,
        nalus: Bytes,
    },
    EndOfSequence,
    /// Video info/command frames (frame type 5) carry no picture.
    Command,
}

/// A parsed AUDIODATA body.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioTag {
    Config(AacConfig),
    Frame(Bytes),
}

pub(crate) fn need(what: &'static str, data: &[u8], n: usize) -> Result<(), FlvError> {
    if data.len() < n {
        return Err(FlvError::Truncated { what, need: n, have: data.len() });
    }
    Ok(())
}

pub fn parse_video(body: &Bytes) -> Result<VideoTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty("video"))?;
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if frame_type == 5 {
        return Ok(VideoTag::Command);
    }
    if codec != 7 {
        return Err(FlvError::UnsupportedVideoCodec(codec));
    }
    need("AVC video tag header", body, 5)?;
    // SI24 composition time offset: sign-extend from 24 bits.
    let composition_ms = (i32::from_be_bytes([body[2], body[3], body[4], 0])) >> 8;
    match body[1] {
        0 => Ok(VideoTag::Config(avc::parse_config(&body.slice(5..))?)),
        1 => Ok(VideoTag::Frame { keyframe: frame_type == 1, composition_ms, nalus: body.slice(5..) }),
        2 => Ok(VideoTag::EndOfSequence),
        other => Err(FlvError::UnknownAvcPacketType(other)),
    }
}

pub fn parse_audio(body: &Bytes) -> Result<AudioTag, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty("audio"))?;
    let format = first >> 4;
    if format != 10 {
        return Err(FlvError::UnsupportedAudioCodec(format));
    }
    need("AAC audio tag header", body, 2)?;
    match body[1] {
        0 => Ok(AudioTag::Config(aac::parse_config(&body[2..])?)),
        _ => Ok(AudioTag::Frame(body.slice(2..))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyframe_tag_yields_its_nalus_as_a_slice_with_signed_composition_time() {
        let body = Bytes::from_static(&[0x17, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x65]);
        let VideoTag::Frame { keyframe, composition_ms, nalus } = parse_video(&body).unwrap() else {
            panic!("expected a frame")
        };
        assert!(keyframe);
        assert_eq!(composition_ms, -40);
        assert_eq!(&nalus[..], &[0, 0, 0, 1, 0x65]);
    }

    #[test]
    fn an_inter_frame_is_not_a_keyframe() {
        let body = Bytes::from_static(&[0x27, 1, 0, 0, 0x28, 0, 0, 0, 1, 0x41]);
        let VideoTag::Frame { keyframe, composition_ms, .. } = parse_video(&body).unwrap() else {
            panic!("expected a frame")
        };
        assert!(!keyframe);
        assert_eq!(composition_ms, 40);
    }

    #[test]
    fn non_avc_video_is_refused_by_codec_id() {
        assert_eq!(parse_video(&Bytes::from_static(&[0x12, 0])), Err(FlvError::UnsupportedVideoCodec(2)));
        assert_eq!(parse_video(&Bytes::from_static(&[0x1c, 0])), Err(FlvError::UnsupportedVideoCodec(12)));
    }

    #[test]
    fn truncated_or_empty_tags_are_errors_not_panics() {
        assert_eq!(parse_video(&Bytes::new()), Err(FlvError::Empty("video")));
        assert!(matches!(parse_video(&Bytes::from_static(&[0x17, 1, 0])), Err(FlvError::Truncated { .. })));
        assert!(matches!(parse_audio(&Bytes::from_static(&[0xaf])), Err(FlvError::Truncated { .. })));
        assert!(matches!(
            parse_video(&Bytes::from_static(&[0x17, 9, 0, 0, 0])),
            Err(FlvError::UnknownAvcPacketType(9))
        ));
    }

    #[test]
    fn non_aac_audio_is_refused_by_sound_format() {
        assert_eq!(parse_audio(&Bytes::from_static(&[0x2f, 0])), Err(FlvError::UnsupportedAudioCodec(2)));
    }

    #[test]
    fn an_aac_raw_frame_is_the_body_after_two_header_bytes() {
        let body = Bytes::from_static(&[0xaf, 1, 0x21, 0x10]);
        assert_eq!(parse_audio(&body).unwrap(), AudioTag::Frame(Bytes::from_static(&[0x21, 0x10])));
    }
}
