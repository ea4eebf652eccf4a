//! Messages we write ourselves, next to rml_rtmp's: an `onStatus` error for a publish that was already
//! accepted (rml_rtmp can only reject *requests*; ffmpeg reports it as "Server error: <description>"),
//! and the acknowledgements of what the client sent (rml_rtmp does not see the media bytes).
//!
//! Each is one RTMP chunk with a type-0 (full) header on a chunk stream rml_rtmp does not use, so it
//! does not depend on, or disturb, the header-compression state of the session's own chunk streams.
//! Clients read control messages by type, whatever their chunk stream.

use rml_rtmp::rml_amf0::{self, Amf0Value};

/// Chunk stream id unused by rml_rtmp's server session, so our full header disturbs nothing it tracks.
const CHUNK_STREAM_ID: u8 = 7;
/// The message stream rml_rtmp's server gives the first `createStream` (publishers create exactly one).
const MESSAGE_STREAM_ID: u32 = 1;

pub fn publish_error(code: &str, description: &str) -> Vec<u8> {
    let mut info = std::collections::HashMap::new();
    info.insert("level".to_string(), Amf0Value::Utf8String("error".into()));
    info.insert("code".to_string(), Amf0Value::Utf8String(code.into()));
    info.insert("description".to_string(), Amf0Value::Utf8String(description.chars().take(500).collect()));
    let values = vec![
        Amf0Value::Utf8String("onStatus".into()),
        Amf0Value::Number(0.0),
        Amf0Value::Null,
        Amf0Value::Object(info),
    ];
    let body = rml_amf0::serialize(&values).unwrap_or_default();
    // The session announced a 4096-byte chunk size; a status message is far below it.
    let body = &body[..body.len().min(4000)];
    let mut out = Vec::with_capacity(12 + body.len());
    out.push(CHUNK_STREAM_ID); // fmt 0
    out.extend_from_slice(&[0, 0, 0]); // timestamp
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.push(20); // AMF0 command
    out.extend_from_slice(&MESSAGE_STREAM_ID.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// An Acknowledgement (type 3) of `sequence` bytes received.
pub fn acknowledgement(sequence: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0] = CHUNK_STREAM_ID; // fmt 0; timestamp 0
    out[6] = 4; // length
    out[7] = 3; // Acknowledgement; message stream 0
    out[12..].copy_from_slice(&sequence.to_be_bytes());
    out
}
