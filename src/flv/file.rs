//! FLV files (FLV spec v10.1 §E.2–E.3): the header, then tags with their 24+8-bit timestamps.
//!
//! Used by the load generator, the tests and the benchmarks to replay a recording over RTMP; the server
//! itself only ever sees tag bodies.

use bytes::{BufMut, Bytes, BytesMut};

use super::FlvError;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TagKind {
    Audio,
    Video,
    Script,
}

/// One tag: its kind, its timestamp in milliseconds and its body (a slice of the file's buffer).
#[derive(Clone, Debug)]
pub struct Tag {
    pub kind: TagKind,
    pub timestamp_ms: u32,
    pub body: Bytes,
}

/// Parses a whole FLV file held in memory. Unknown tag types are skipped; a truncated last tag is an error.
pub fn parse(file: Bytes) -> Result<Vec<Tag>, FlvError> {
    if file.len() < 9 || &file[..3] != b"FLV" {
        return Err(FlvError::BadFile("missing FLV signature"));
    }
    let header_len = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize;
    let mut pos = header_len.checked_add(4).ok_or(FlvError::BadFile("header length"))?; // + PreviousTagSize0
    let mut tags = Vec::new();
    while pos < file.len() {
        let head = file.get(pos..pos + 11).ok_or(FlvError::BadFile("truncated tag header"))?;
        let kind = match head[0] & 0x1f {
            8 => Some(TagKind::Audio),
            9 => Some(TagKind::Video),
            18 => Some(TagKind::Script),
            _ => None,
        };
        let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
        let timestamp_ms = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
        let body_start = pos + 11;
        let body_end = body_start + size;
        if body_end > file.len() {
            return Err(FlvError::BadFile("truncated tag body"));
        }
        if let Some(kind) = kind {
            tags.push(Tag { kind, timestamp_ms, body: file.slice(body_start..body_end) });
        }
        pos = body_end + 4; // PreviousTagSize
    }
    Ok(tags)
}

/// Writes tags back into an FLV file (used to build large benchmark inputs from small fixtures).
pub fn write(tags: &[Tag]) -> Bytes {
    let mut out = BytesMut::with_capacity(13 + tags.iter().map(|t| t.body.len() + 15).sum::<usize>());
    let has_audio = tags.iter().any(|t| t.kind == TagKind::Audio);
    let has_video = tags.iter().any(|t| t.kind == TagKind::Video);
    out.put_slice(b"FLV\x01");
    out.put_u8((u8::from(has_audio) << 2) | u8::from(has_video));
    out.put_u32(9);
    out.put_u32(0);
    for tag in tags {
        let t = tag.timestamp_ms;
        out.put_u8(match tag.kind {
            TagKind::Audio => 8,
            TagKind::Video => 9,
            TagKind::Script => 18,
        });
        out.put_uint(tag.body.len() as u64, 3);
        out.put_uint(u64::from(t & 0xff_ffff), 3);
        out.put_u8((t >> 24) as u8);
        out.put_uint(0, 3);
        out.put_slice(&tag.body);
        out.put_u32(tag.body.len() as u32 + 11);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_tags_parse_back_with_extended_timestamps() {
        let tags = vec![
            Tag { kind: TagKind::Video, timestamp_ms: 0x0123_4567, body: Bytes::from_static(&[0x17, 1, 2]) },
            Tag { kind: TagKind::Audio, timestamp_ms: 5, body: Bytes::from_static(&[0xaf, 1]) },
        ];
        let back = parse(write(&tags)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].timestamp_ms, 0x0123_4567);
        assert_eq!(back[0].kind, TagKind::Video);
        assert_eq!(&back[1].body[..], &[0xaf, 1]);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(parse(Bytes::from_static(b"nope")).is_err());
        let tags = vec![Tag { kind: TagKind::Video, timestamp_ms: 0, body: Bytes::from_static(&[1, 2, 3, 4]) }];
        let file = write(&tags);
        assert!(parse(file.slice(..file.len() - 6)).is_err());
    }
}
