use bytes::Bytes;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionResult};
use rml_rtmp::time::RtmpTimestamp;

use super::*;
use crate::rtmp::client::{RawMessage, chunks, interleaved, nested_amf0, nested_connect};

const LIMITS: Limits = Limits { max_message_bytes: 4 << 20 };

fn amf0(values: &[Amf0Value]) -> Vec<u8> {
    rml_amf0::serialize(&values.to_vec()).unwrap()
}

fn command(name: &str, object: Amf0Value) -> Vec<u8> {
    amf0(&[Amf0Value::Utf8String(name.into()), Amf0Value::Number(1.0), object])
}

/// A message as the connection gets it: type, timestamp (media only: rml_rtmp gets the others with
/// timestamp 0), message stream, payload.
type Msg = (u8, u32, u32, Bytes);

/// A refusal, and the messages that came out before it.
#[derive(Debug)]
struct Refused {
    refusal: Refusal,
    passed: Vec<Msg>,
}

/// A guard, and rml_rtmp's own chunk deserializer reading what the guard gives it (following the chunk
/// size changes it reads, as rml_rtmp's session does).
struct Reader {
    guard: Guard,
    de: ChunkDeserializer,
}

impl Reader {
    fn new(limits: Limits) -> Self {
        Reader { guard: Guard::new(limits), de: ChunkDeserializer::new() }
    }

    fn connected(limits: Limits) -> Self {
        let mut reader = Reader::new(limits);
        reader.guard.connected();
        reader
    }

    fn read(&mut self, bytes: &[u8]) -> Result<Vec<Msg>, Refused> {
        let mut passed = Vec::new();
        let de = &mut self.de;
        let verdict = self.guard.inspect(bytes, &mut |piece| match piece {
            Piece::Media(m) => passed.push((if m.video { 9 } else { 8 }, m.timestamp, m.stream_id, m.data)),
            Piece::Session(chunks) => {
                // One whole message per piece, under a full header.
                assert_eq!(chunks[0] >> 6, 0, "a full header");
                let m = de.get_next_message(&chunks).unwrap().expect("a whole message");
                assert_eq!(de.get_next_message(&[]).unwrap(), None, "exactly one message");
                if m.type_id == 1 {
                    let size = u32::from_be_bytes(m.data[..4].try_into().unwrap());
                    de.set_max_chunk_size(size as usize).unwrap();
                }
                assert_eq!(m.timestamp.value, 0);
                passed.push((m.type_id, 0, m.message_stream_id, m.data));
            }
        });
        match verdict {
            Ok(()) => Ok(passed),
            Err(refusal) => Err(Refused { refusal, passed }),
        }
    }

    /// The same, one byte per read.
    fn read_bytewise(&mut self, bytes: &[u8]) -> Result<Vec<Msg>, Refusal> {
        let mut passed = Vec::new();
        for b in bytes {
            passed.extend(self.read(std::slice::from_ref(b)).map_err(|r| r.refusal)?);
        }
        Ok(passed)
    }
}

fn check(guard: &mut Reader, bytes: &[u8]) -> Result<Vec<Msg>, Refused> {
    guard.read(bytes)
}

fn inspect_all(guard: &mut Reader, bytes: &[u8]) -> Result<Vec<Msg>, Refused> {
    guard.read(bytes)
}

fn inspect_bytewise(guard: &mut Reader, bytes: &[u8]) -> Result<Vec<Msg>, Refusal> {
    guard.read_bytewise(bytes)
}

/// What rml_rtmp's own deserializer makes of a client's bytes, in the form `Reader` gives (non-media
/// timestamps zeroed).
fn rml_reads(bytes: &[u8]) -> Vec<Msg> {
    let mut de = ChunkDeserializer::new();
    let mut out = Vec::new();
    let mut next = de.get_next_message(bytes).unwrap();
    while let Some(m) = next {
        if m.type_id == 1 {
            de.set_max_chunk_size(u32::from_be_bytes(m.data[..4].try_into().unwrap()) as usize).unwrap();
        }
        let ts = if matches!(m.type_id, 8 | 9) { m.timestamp.value } else { 0 };
        out.push((m.type_id, ts, m.message_stream_id, m.data));
        next = de.get_next_message(&[]).unwrap();
    }
    out
}

/// What a real client sends: rml_rtmp's ClientSession for connect/publish/metadata, its serializer for
/// media with a raised chunk size and timestamps past the 24-bit field.
fn client_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |results: Vec<ClientSessionResult>| {
        for r in results {
            if let ClientSessionResult::OutboundResponse(p) = r {
                out.extend_from_slice(&p.bytes);
            }
        }
    };
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    push(initial);
    push(vec![session.request_connection("live".into()).unwrap()]);
    // The session only publishes once connected; the bytes of the request are what matter here.
    let mut serializer = ChunkSerializer::new();
    let mut raw = Vec::new();
    raw.extend_from_slice(&serializer.set_max_chunk_size(4096, RtmpTimestamp::new(0)).unwrap().bytes);
    let publish = command("publish", Amf0Value::Null);
    for (ts, type_id, data) in [
        (0u32, 20u8, publish),
        (
            0,
            18,
            amf0(&[
                Amf0Value::Utf8String("@setDataFrame".into()),
                Amf0Value::Utf8String("onMetaData".into()),
                Amf0Value::Object([("width".to_string(), Amf0Value::Number(320.0))].into()),
            ]),
        ),
        (0, 9, vec![0x17; 300_000]),
        (40, 8, vec![0xAF; 400]),
        (0x0100_0000, 9, vec![0x27; 9000]),
        (0x0100_0040, 9, vec![0x27; 100]),
    ] {
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            type_id,
            message_stream_id: 1,
            data: Bytes::from(data),
        };
        raw.extend_from_slice(&serializer.serialize(&payload, false, false).unwrap().bytes);
    }
    out.extend_from_slice(&raw);
    out
}

#[test]
fn what_real_clients_send_is_read_as_rml_rtmp_reads_it_whole_and_byte_by_byte() {
    let bytes = client_bytes();
    let want = rml_reads(&bytes);
    assert!(want.len() >= 7, "{} messages", want.len());
    assert!(want.iter().any(|m| m.0 == 9 && m.1 > 0xFF_FFFF), "an extended timestamp is in the input");
    let got = Reader::connected(LIMITS).read(&bytes).unwrap();
    assert!(got == want, "the same messages, timestamps and streams as rml_rtmp reads");
    assert!(Reader::connected(LIMITS).read_bytewise(&bytes).unwrap() == want);
    // Media never goes through rml_rtmp; everything else does.
    assert!(got.iter().filter(|m| matches!(m.0, 8 | 9)).count() == 4);
}

#[test]
fn nesting_of_every_container_kind_is_refused_at_any_depth_beyond_the_limit() {
    for kind in [0x03, 0x08, 0x0A] {
        assert_eq!(amf0_values(&nested_amf0(kind, MAX_AMF_DEPTH)), Ok(Some(1)), "kind {kind:#x}");
        assert_eq!(amf0_values(&nested_amf0(kind, MAX_AMF_DEPTH + 1)), Err(TooDeep), "kind {kind:#x}");
        assert_eq!(amf0_values(&nested_amf0(kind, 100_000)), Err(TooDeep), "kind {kind:#x}");
    }
}

#[test]
fn a_deep_connect_is_refused_before_rml_rtmp_sees_its_last_chunk() {
    for kind in [0x03, 0x08, 0x0A] {
        // 5,000 levels fit in a 64 KiB command, and are past what overflowed a worker's stack (about 4,000).
        let bytes = chunks(3, 20, &nested_connect(kind, 5_000), 128);
        let mut guard = Reader::new(LIMITS);
        let refused = inspect_all(&mut guard, &bytes).unwrap_err();
        assert_eq!(refused.refusal, Refusal::TooDeep { type_id: 20 }, "kind {kind:#x}");
        // Nothing of it reached rml_rtmp: the guard hands over whole messages only, after checking them.
        assert!(refused.passed.is_empty());

        let mut guard = Reader::new(LIMITS);
        assert_eq!(inspect_bytewise(&mut guard, &bytes), Err(Refusal::TooDeep { type_id: 20 }));

        // 100,000 levels do not fit a command message at all.
        let mut guard = Reader::new(LIMITS);
        let bytes = chunks(3, 20, &nested_connect(kind, 100_000), 128);
        assert!(matches!(inspect_all(&mut guard, &bytes).unwrap_err().refusal, Refusal::TooLarge { type_id: 20, .. }));
    }
    // The same inside data messages, and inside "AMF3" commands with their leading zero.
    let mut guard = Reader::new(LIMITS);
    let data = chunks(3, 18, &nested_amf0(0x08, 200), 128);
    assert_eq!(inspect_all(&mut guard, &data).unwrap_err().refusal, Refusal::TooDeep { type_id: 18 });
    let mut guard = Reader::new(LIMITS);
    let mut amf3 = vec![0];
    amf3.extend_from_slice(&nested_connect(0x03, 200));
    assert_eq!(
        inspect_all(&mut guard, &chunks(3, 17, &amf3, 128)).unwrap_err().refusal,
        Refusal::TooDeep { type_id: 17 }
    );
}

#[test]
fn commands_with_fewer_than_three_values_are_refused() {
    let mut guard = Reader::new(LIMITS);
    let two = amf0(&[Amf0Value::Utf8String("connect".into()), Amf0Value::Number(1.0)]);
    assert_eq!(
        inspect_all(&mut guard, &chunks(3, 20, &two, 128)).unwrap_err().refusal,
        Refusal::TooFewValues { values: 2 }
    );
    let mut guard = Reader::new(LIMITS);
    inspect_all(&mut guard, &chunks(3, 20, &command("connect", Amf0Value::Null), 128)).unwrap();
    // Found by the rtmp_session fuzz target: rml_rtmp panics on a @setDataFrame without its object.
    let bare = amf0(&[Amf0Value::Utf8String("@setDataFrame".into()), Amf0Value::Utf8String("onMetaData".into())]);
    let mut guard = Reader::new(LIMITS);
    assert_eq!(
        inspect_all(&mut guard, &chunks(4, 18, &bare, 128)).unwrap_err().refusal,
        Refusal::TooFewValues { values: 2 }
    );
    let mut full = bare.clone();
    full.extend_from_slice(&amf0(&[Amf0Value::Object(Default::default())]));
    inspect_all(&mut Reader::new(LIMITS), &chunks(4, 18, &full, 128)).unwrap();
}

#[test]
fn open_message_streams_are_bounded_as_rml_rtmp_numbers_them() {
    let create = chunks(3, 20, &command("createStream", Amf0Value::Null), 128);
    let delete = |id: f64| {
        let values = [Amf0Value::Utf8String("deleteStream".into()), Amf0Value::Number(3.0), Amf0Value::Null];
        let mut body = amf0(&values);
        body.extend_from_slice(&amf0(&[Amf0Value::Number(id)]));
        chunks(3, 20, &body, 128)
    };
    // No command but connect comes first.
    let mut guard = Reader::new(LIMITS);
    assert_eq!(inspect_all(&mut guard, &create).unwrap_err().refusal, Refusal::BeforeConnect);
    // Before the connect is accepted, rml_rtmp creates streams but ignores deletes: they free nothing.
    let mut guard = Reader::new(LIMITS);
    inspect_all(&mut guard, &chunks(3, 20, &command("connect", Amf0Value::Null), 128)).unwrap();
    for id in 1..=MAX_OPEN_STREAMS {
        inspect_all(&mut guard, &create).unwrap();
        inspect_all(&mut guard, &delete(id as f64)).unwrap();
    }
    assert_eq!(inspect_all(&mut guard, &create).unwrap_err().refusal, Refusal::TooManyStreams);
    // Connected: a create and a delete of its id, a thousand times over, hold one stream at a time; a
    // delete of an id never given out frees nothing.
    let mut guard = Reader::connected(LIMITS);
    for id in 1..=1000 {
        inspect_all(&mut guard, &create).unwrap();
        inspect_all(&mut guard, &delete(f64::from(id))).unwrap();
    }
    for _ in 0..MAX_OPEN_STREAMS {
        inspect_all(&mut guard, &create).unwrap();
        inspect_all(&mut guard, &delete(5000.0)).unwrap();
    }
    assert_eq!(inspect_all(&mut guard, &create).unwrap_err().refusal, Refusal::TooManyStreams);
}

#[test]
fn message_sizes_are_bounded_before_and_after_connect() {
    let header = |len: u32, type_id: u8| {
        let mut h = vec![4, 0, 0, 0];
        h.extend_from_slice(&len.to_be_bytes()[1..]);
        h.push(type_id);
        h.extend_from_slice(&[1, 0, 0, 0]);
        h
    };
    let mut guard = Reader::new(LIMITS);
    let refused = check(&mut guard, &header((16 << 20) - 1, 9)).unwrap_err();
    assert_eq!(refused.refusal, Refusal::TooLarge { type_id: 9, length: (16 << 20) - 1, limit: MAX_COMMAND_BYTES });
    let mut guard = Reader::connected(LIMITS);
    check(&mut guard, &header(1 << 20, 9)).unwrap();
    let mut guard = Reader::connected(LIMITS);
    assert!(check(&mut guard, &header(5 << 20, 9)).is_err());
    let mut guard = Reader::connected(LIMITS);
    assert!(matches!(check(&mut guard, &header(100_000, 20)).unwrap_err().refusal, Refusal::TooLarge { .. }));
}

#[test]
fn chunk_stream_ids_are_bounded() {
    let mut guard = Reader::new(LIMITS);
    for csid in 0..MAX_CHUNK_STREAMS as u8 {
        // Two-byte basic headers: ids 64 and up.
        let mut one = vec![0, csid, 0, 0, 0, 0, 0, 1, 8, 1, 0, 0, 0];
        one.push(0xAF);
        check(&mut guard, &one).unwrap();
    }
    let refused = check(&mut guard, &[0, 200, 0, 0, 0, 0, 0, 1, 8, 1, 0, 0, 0, 0xAF]).unwrap_err();
    assert_eq!(refused.refusal, Refusal::TooManyChunkStreams);
}

fn raw(csid: u8, type_id: u8, timestamp: u32, len: usize) -> RawMessage {
    // A payload that says which message it is, so that a mix-up shows.
    let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(csid).wrapping_mul(timestamp as u8 | 1)).collect();
    RawMessage { csid, type_id, timestamp, stream_id: 1, payload: Bytes::from(payload) }
}

#[test]
fn interleaved_chunk_streams_come_out_as_whole_messages_in_the_order_they_started() {
    // A keyframe on 6 with audio on 4 between its chunks; then two multi-chunk messages (6 and 7) in
    // flight with audio; timestamps past the 24-bit field at the end.
    let mut messages = vec![raw(6, 9, 0, 1000)];
    messages.extend((0..5).map(|i| raw(4, 8, 23 * i, 40)));
    messages.extend([raw(6, 9, 40, 700), raw(7, 9, 41, 900), raw(4, 8, 115, 300), raw(4, 8, 138, 20)]);
    messages.push(raw(6, 9, 0x0100_0000, 600));
    messages.push(raw(4, 8, 0x0100_0005, 50));
    for window in [2, 3] {
        let bytes = interleaved(&messages, 128, window);
        let got = check(&mut Reader::connected(LIMITS), &bytes).unwrap();
        assert!(inspect_bytewise(&mut Reader::connected(LIMITS), &bytes).unwrap() == got, "however it is split");
        assert_eq!(got.len(), messages.len(), "window {window}");
        // Each chunk stream's messages arrive whole, in order, with their timestamps.
        for csid in [4, 6, 7] {
            let sent: Vec<_> = messages.iter().filter(|m| m.csid == csid).map(|m| (m.timestamp, &m.payload)).collect();
            let received: Vec<_> = got
                .iter()
                .filter(|(_, ts, _, data)| sent.iter().any(|(s, p)| s == ts && *p == data))
                .map(|(_, ts, _, data)| (*ts, data))
                .collect();
            assert_eq!(received, sent, "csid {csid}, window {window}");
        }
        // Audio that completed in the middle of the keyframe comes after it, as it was sent after it began.
        let sent: Vec<_> = messages.iter().map(|m| (m.type_id, m.timestamp, m.payload.clone())).collect();
        let got: Vec<_> = got.into_iter().map(|(t, ts, _, data)| (t, ts, data)).collect();
        assert_eq!(got, sent, "window {window}");
    }
}

#[test]
fn what_the_guard_holds_back_is_bounded() {
    let limits = Limits { max_message_bytes: 100_000 };
    let mut guard = Reader::connected(limits);
    // One chunk of a large message, then another large message interleaved with it.
    let bytes = interleaved(&[raw(6, 9, 0, 100_000), raw(7, 9, 0, 100_000)], 128, 2);
    let refused = check(&mut guard, &bytes).unwrap_err();
    assert_eq!(refused.refusal, Refusal::HeldTooMuch { limit: 100_000 });
    // Before connect, the hold is as small as a command.
    let messages = [raw(6, 9, 0, 60_000), raw(7, 9, 0, 40_000), raw(8, 9, 0, 40_000)];
    let refused = check(&mut Reader::new(limits), &interleaved(&messages, 128, 3)).unwrap_err();
    assert_eq!(refused.refusal, Refusal::HeldTooMuch { limit: MAX_COMMAND_BYTES });
    let mut guard = Reader::connected(LIMITS);
    check(&mut guard, &interleaved(&messages, 128, 3)).expect("within the limit once connected");
}

#[test]
fn a_chunk_size_change_applies_to_the_chunks_after_it_even_inside_another_message() {
    // 300 bytes of video on 6: a first chunk of 128, then SetChunkSize 256 on 2, then the other 172
    // bytes in one chunk (the new size). rml_rtmp, with one reassembly buffer, could not read this.
    let video: Vec<u8> = (0..300).map(|i| i as u8).collect();
    let mut bytes = vec![6, 0, 0, 40, 0, 1, 44, 9, 1, 0, 0, 0];
    bytes.extend_from_slice(&video[..128]);
    bytes.extend_from_slice(&chunks(2, 1, &256u32.to_be_bytes(), 128));
    bytes.push(0xC6);
    bytes.extend_from_slice(&video[128..]);
    // And a command after it, cut with the new size for rml_rtmp.
    let connect =
        command("connect", Amf0Value::Object([("pad".to_string(), Amf0Value::Utf8String("x".repeat(600)))].into()));
    bytes.extend_from_slice(&chunks(3, 20, &connect, 256));
    let got = check(&mut Reader::connected(LIMITS), &bytes).unwrap();
    // The video began first, so it comes first; rml_rtmp then reads the command with the new size.
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], (9, 40, 1, Bytes::from(video)));
    assert_eq!(got[1], (1, 0, 0, Bytes::copy_from_slice(&256u32.to_be_bytes())));
    assert_eq!(got[2].3, Bytes::from(connect));
}

#[test]
fn inconsistent_chunks_are_refused_with_a_reason() {
    let video = chunks(4, 9, &[0x17; 300], 128);
    let mut guard = Reader::new(LIMITS);
    check(&mut guard, &video[..12 + 128]).unwrap();
    let shorter = chunks(4, 9, &[0x17; 100], 128);
    assert_eq!(check(&mut guard, &shorter).unwrap_err().refusal, Refusal::HeaderChangedMessage { csid: 4 });

    let mut guard = Reader::new(LIMITS);
    assert_eq!(check(&mut guard, &[0x44, 0, 0, 0]).unwrap_err().refusal, Refusal::NoPreviousHeader { csid: 4 });

    for size in [0u32, 0x8000_0000] {
        let mut guard = Reader::new(LIMITS);
        let refused = check(&mut guard, &chunks(2, 1, &size.to_be_bytes(), 128)).unwrap_err();
        assert_eq!(refused.refusal, Refusal::BadChunkSize(Some(size)));
    }
}

#[test]
fn a_refusal_keeps_the_complete_media_before_it() {
    let mut guard = Reader::connected(LIMITS);
    let mut bytes = chunks(6, 9, &[0x17; 1000], 128);
    let media = bytes.len();
    bytes.extend_from_slice(&chunks(3, 20, &nested_connect(0x03, 40), 128));
    let refused = check(&mut guard, &bytes).unwrap_err();
    assert_eq!(refused.refusal, Refusal::TooDeep { type_id: 20 });
    // The whole media message came out before the refusal; the command did not.
    assert_eq!(refused.passed, vec![(9, 0, 0, Bytes::from(vec![0x17; 1000]))]);
    let _ = media;
}

#[test]
fn the_walker_reads_what_rml_amf0_reads() {
    let values = [
        Amf0Value::Utf8String("connect".into()),
        Amf0Value::Number(1.0),
        Amf0Value::Object(
            [("app".to_string(), Amf0Value::Utf8String("live".into())), ("n".to_string(), Amf0Value::Null)].into(),
        ),
        Amf0Value::StrictArray(vec![Amf0Value::Boolean(true), Amf0Value::Undefined]),
    ];
    assert_eq!(amf0_values(&amf0(&values)), Ok(Some(4)));
    assert_eq!(amf0_values(&[]), Ok(Some(0)));
    // A top-level object-end marker ends the values for rml_amf0 too.
    assert_eq!(amf0_values(&[0x05, 0x09, 0x05]), Ok(Some(1)));
    // Where rml_amf0 fails, the walker says so.
    assert_eq!(amf0_values(&[0x00, 1, 2]), Ok(None));
    assert_eq!(amf0_values(&[0x11]), Ok(None));
}

/// Found by the rtmp_session fuzz target in CI: a compressed header starting a message with an extended
/// timestamp below 0xFFFFFF makes rml_rtmp's subtraction underflow.
#[test]
fn an_extended_timestamp_below_the_marker_is_refused() {
    let mut first = vec![4, 0xFF, 0xFF, 0xFF, 0, 0, 1, 8, 1, 0, 0, 0, 1, 0, 0, 0];
    first.push(0xAF);
    let mut guard = Reader::connected(LIMITS);
    check(&mut guard, &first).unwrap();
    // The next message, type 3 header: the extended field is repeated, and this one is too small.
    assert_eq!(
        check(&mut guard, &[0xC4, 0, 0, 0, 5, 0xAF]).unwrap_err().refusal,
        Refusal::BadExtendedTimestamp { csid: 4 }
    );
    let mut guard = Reader::connected(LIMITS);
    check(&mut guard, &first).unwrap();
    check(&mut guard, &[0xC4, 1, 0, 0, 40, 0xAF]).expect("a proper extended delta passes");
}

#[test]
fn timestamps_follow_the_header_rules_as_rml_rtmp_reads_them() {
    // Type 0 absolute, type 1 and 2 deltas, type 3 repeating the delta for a new message and not for a
    // continuation, extended values in both kinds of header.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&[4, 0, 0, 100, 0, 0, 2, 8, 1, 0, 0, 0, 0xAF, 1]); // t = 100
    bytes.extend_from_slice(&[0x44, 0, 0, 20, 0, 0, 2, 8, 0xAF, 2]); // type 1: +20 = 120
    bytes.extend_from_slice(&[0x84, 0, 0, 23, 0xAF, 3]); // type 2: +23 = 143
    bytes.extend_from_slice(&[0xC4, 0xAF, 4]); // type 3, new message: +23 = 166
    bytes.extend_from_slice(&[0x84, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00, 0xAF, 5]); // +2^24
    bytes.extend_from_slice(&[0xC4, 0x01, 0x00, 0x00, 0x00, 0xAF, 6]); // type 3, extended again: +2^24
    // A 200-byte message in two chunks: its continuation changes nothing.
    bytes.extend_from_slice(&[0x44, 0, 0, 10, 0, 0, 200, 9]);
    bytes.extend_from_slice(&[0x17; 128]);
    bytes.push(0xC4);
    bytes.extend_from_slice(&[0x17; 72]);
    let want = rml_reads(&bytes);
    let got = check(&mut Reader::connected(LIMITS), &bytes).unwrap();
    assert_eq!(got, want);
    let times: Vec<u32> = got.iter().map(|m| m.1).collect();
    assert_eq!(times, [100, 120, 143, 166, 166 + (1 << 24), 166 + (2 << 24), 176 + (2 << 24)]);
}

#[test]
fn the_client_is_acknowledged_once_per_window_it_asked_for() {
    let mut reader = Reader::connected(LIMITS);
    let video = chunks(6, 9, &[0x17; 3000], 128);
    check(&mut reader, &video).unwrap();
    assert_eq!(reader.guard.take_ack(), None, "no window, no acknowledgements");
    let window = chunks(2, 5, &4000u32.to_be_bytes(), 128);
    let got = check(&mut reader, &window).unwrap();
    assert!(got.is_empty(), "the window size is ours to answer, not rml_rtmp's");
    check(&mut reader, &video).unwrap();
    assert_eq!(reader.guard.take_ack(), None);
    check(&mut reader, &video).unwrap();
    let received = (3 * video.len() + window.len()) as u32;
    assert_eq!(reader.guard.take_ack(), Some(received), "the bytes received so far");
    assert_eq!(reader.guard.take_ack(), None, "once");
}

#[test]
fn an_abort_drops_the_message_in_progress_on_its_chunk_stream() {
    let mut reader = Reader::connected(LIMITS);
    let video = chunks(6, 9, &[0x17; 300], 128);
    check(&mut reader, &video[..12 + 128]).unwrap();
    let got = check(&mut reader, &chunks(2, 2, &6u32.to_be_bytes(), 128)).unwrap();
    assert_eq!(got.len(), 1, "rml_rtmp sees the abort");
    // The next message on 6 starts afresh.
    let got = check(&mut reader, &chunks(6, 9, &[0x27; 50], 128)).unwrap();
    assert_eq!(got, vec![(9, 0, 0, Bytes::from(vec![0x27; 50]))]);
}

#[test]
fn the_bytes_it_says_are_needed_never_reach_past_the_end_of_a_message() {
    // Interleaved keyframes and audio, and a window that falls due in the middle: each read takes exactly
    // what the reader said it needs (or one byte when it does not know). A message must never complete
    // before the read that brings its last byte, and a read of fewer bytes than said never completes one.
    let mut messages = vec![raw(6, 9, 0, 20_000)];
    messages.extend((0..8).map(|i| raw(4, 8, 23 * i, 300)));
    messages.extend([raw(6, 9, 40, 7000), raw(7, 9, 41, 900), raw(4, 8, 230, 30)]);
    let mut bytes = chunks(2, 5, &5000u32.to_be_bytes(), 128);
    bytes.extend(interleaved(&messages, 128, 2));
    let mut reader = Reader::connected(LIMITS);
    let (mut at, mut got) = (0, 0);
    while at < bytes.len() {
        let need = reader.guard.bytes_before_next_message();
        let take = need.map_or(1, |n| n as usize).min(bytes.len() - at);
        if take > 1 {
            // One byte short of what it said: nothing may complete, and no acknowledgement falls due.
            let short = check(&mut reader, &bytes[at..at + take - 1]).unwrap();
            assert!(short.is_empty(), "a message completed before the bytes said to be needed had come");
            assert_eq!(reader.guard.take_ack(), None);
            at += take - 1;
            got += check(&mut reader, &bytes[at..at + 1]).unwrap().len();
            at += 1;
        } else {
            got += check(&mut reader, &bytes[at..at + take]).unwrap().len();
            at += take;
        }
        reader.guard.take_ack();
    }
    assert_eq!(got, messages.len(), "every message (the window size is the reader's own)");
}

#[test]
fn media_of_one_read_shares_a_block_that_the_next_read_reuses_once_handled() {
    let mut reader = Reader::connected(LIMITS);
    let mut bytes = chunks(4, AUDIO, &[0xAF; 300], 128);
    bytes.extend(chunks(6, VIDEO, &[0x27; 9000], 128));
    let first = reader.read(&bytes).unwrap();
    let (audio, video) = (&first[0].3, &first[1].3);
    assert_eq!((audio.len(), video.len()), (300, 9000));
    // No buffer of its own: the video message is cut right after the audio one.
    assert_eq!(audio.as_ptr().wrapping_add(300), video.as_ptr());
    let at = audio.as_ptr();

    // Still held by whoever handles them: the block cannot be pooled, and the next read cuts elsewhere.
    reader.guard.release_buffers();
    let held = reader.read(&chunks(4, AUDIO, &[0xAF; 300], 128)).unwrap();
    let held_at = held[0].3.as_ptr();
    assert_ne!(held_at, at);
    drop((first, held));

    // Handled and dropped: the same memory serves the next read.
    reader.guard.release_buffers();
    let again = reader.read(&chunks(4, AUDIO, &[0xAF; 300], 128)).unwrap();
    assert_eq!(again[0].3.as_ptr(), held_at);
    assert_eq!(again[0].3, Bytes::from(vec![0xAF; 300]));
}
