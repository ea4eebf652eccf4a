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

/// A refusal, and what the guard had passed on before it.
#[derive(Debug)]
struct Refused {
    refusal: Refusal,
    passed: Vec<u8>,
}

/// What the guard passes to rml_rtmp for `bytes` read at once.
fn check(guard: &mut Guard, bytes: &[u8]) -> Result<Vec<u8>, Refused> {
    let mut passed = Vec::new();
    match guard.inspect(bytes, &mut |piece| passed.extend_from_slice(piece)) {
        Ok(()) => Ok(passed),
        Err(refusal) => Err(Refused { refusal, passed }),
    }
}

fn inspect_all(guard: &mut Guard, bytes: &[u8]) -> Result<Vec<u8>, Refused> {
    check(guard, bytes)
}

/// The same, one byte per read.
fn inspect_bytewise(guard: &mut Guard, bytes: &[u8]) -> Result<Vec<u8>, Refusal> {
    let mut passed = Vec::new();
    for b in bytes {
        guard.inspect(std::slice::from_ref(b), &mut |piece| passed.extend_from_slice(piece))?;
    }
    Ok(passed)
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
fn what_real_clients_send_passes_whole_and_byte_by_byte() {
    let bytes = client_bytes();
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    assert!(inspect_all(&mut guard, &bytes).unwrap() == bytes, "passed through as it came");
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    assert!(inspect_bytewise(&mut guard, &bytes).unwrap() == bytes);
    // And rml_rtmp reads the same stream without error (the guard follows its state machine).
    let mut de = ChunkDeserializer::new();
    let mut messages = 0;
    let mut next = de.get_next_message(&bytes).unwrap();
    while let Some(m) = next {
        messages += 1;
        if m.type_id == 1 {
            de.set_max_chunk_size(4096).unwrap();
        }
        next = de.get_next_message(&[]).unwrap();
    }
    assert!(messages >= 7, "{messages} messages");
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
        let mut guard = Guard::new(LIMITS);
        let refused = inspect_all(&mut guard, &bytes).unwrap_err();
        assert_eq!(refused.refusal, Refusal::TooDeep { type_id: 20 }, "kind {kind:#x}");
        // Everything before the message's last chunk is harmless to hand over (rml_rtmp only buffers it).
        let last_chunk = bytes.len() - (nested_connect(kind, 5_000).len() % 128 + 1);
        assert_eq!(refused.passed[..], bytes[..last_chunk]);

        let mut guard = Guard::new(LIMITS);
        assert_eq!(inspect_bytewise(&mut guard, &bytes), Err(Refusal::TooDeep { type_id: 20 }));

        // 100,000 levels do not fit a command message at all.
        let mut guard = Guard::new(LIMITS);
        let bytes = chunks(3, 20, &nested_connect(kind, 100_000), 128);
        assert!(matches!(inspect_all(&mut guard, &bytes).unwrap_err().refusal, Refusal::TooLarge { type_id: 20, .. }));
    }
    // The same inside data messages, and inside "AMF3" commands with their leading zero.
    let mut guard = Guard::new(LIMITS);
    let data = chunks(3, 18, &nested_amf0(0x08, 200), 128);
    assert_eq!(inspect_all(&mut guard, &data).unwrap_err().refusal, Refusal::TooDeep { type_id: 18 });
    let mut guard = Guard::new(LIMITS);
    let mut amf3 = vec![0];
    amf3.extend_from_slice(&nested_connect(0x03, 200));
    assert_eq!(
        inspect_all(&mut guard, &chunks(3, 17, &amf3, 128)).unwrap_err().refusal,
        Refusal::TooDeep { type_id: 17 }
    );
}

#[test]
fn commands_with_fewer_than_three_values_are_refused() {
    let mut guard = Guard::new(LIMITS);
    let two = amf0(&[Amf0Value::Utf8String("connect".into()), Amf0Value::Number(1.0)]);
    assert_eq!(
        inspect_all(&mut guard, &chunks(3, 20, &two, 128)).unwrap_err().refusal,
        Refusal::TooFewValues { values: 2 }
    );
    let mut guard = Guard::new(LIMITS);
    inspect_all(&mut guard, &chunks(3, 20, &command("connect", Amf0Value::Null), 128)).unwrap();
    // Found by the rtmp_session fuzz target: rml_rtmp panics on a @setDataFrame without its object.
    let bare = amf0(&[Amf0Value::Utf8String("@setDataFrame".into()), Amf0Value::Utf8String("onMetaData".into())]);
    let mut guard = Guard::new(LIMITS);
    assert_eq!(
        inspect_all(&mut guard, &chunks(4, 18, &bare, 128)).unwrap_err().refusal,
        Refusal::TooFewValues { values: 2 }
    );
    let mut full = bare.clone();
    full.extend_from_slice(&amf0(&[Amf0Value::Object(Default::default())]));
    inspect_all(&mut Guard::new(LIMITS), &chunks(4, 18, &full, 128)).unwrap();
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
    let mut guard = Guard::new(LIMITS);
    assert_eq!(inspect_all(&mut guard, &create).unwrap_err().refusal, Refusal::BeforeConnect);
    // Before the connect is accepted, rml_rtmp creates streams but ignores deletes: they free nothing.
    let mut guard = Guard::new(LIMITS);
    inspect_all(&mut guard, &chunks(3, 20, &command("connect", Amf0Value::Null), 128)).unwrap();
    for id in 1..=MAX_OPEN_STREAMS {
        inspect_all(&mut guard, &create).unwrap();
        inspect_all(&mut guard, &delete(id as f64)).unwrap();
    }
    assert_eq!(inspect_all(&mut guard, &create).unwrap_err().refusal, Refusal::TooManyStreams);
    // Connected: a create and a delete of its id, a thousand times over, hold one stream at a time; a
    // delete of an id never given out frees nothing.
    let mut guard = Guard::new(LIMITS);
    guard.connected();
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
    let mut guard = Guard::new(LIMITS);
    let refused = check(&mut guard, &header((16 << 20) - 1, 9)).unwrap_err();
    assert_eq!(refused.refusal, Refusal::TooLarge { type_id: 9, length: (16 << 20) - 1, limit: MAX_COMMAND_BYTES });
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    check(&mut guard, &header(1 << 20, 9)).unwrap();
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    assert!(check(&mut guard, &header(5 << 20, 9)).is_err());
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    assert!(matches!(check(&mut guard, &header(100_000, 20)).unwrap_err().refusal, Refusal::TooLarge { .. }));
}

#[test]
fn chunk_stream_ids_are_bounded() {
    let mut guard = Guard::new(LIMITS);
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

/// What rml_rtmp's own deserializer makes of `bytes`: (csid-free) type, timestamp, payload per message.
fn deserialized(bytes: &[u8]) -> Vec<(u8, u32, Bytes)> {
    let mut de = ChunkDeserializer::new();
    let mut out = Vec::new();
    let mut next = de.get_next_message(bytes).unwrap();
    while let Some(m) = next {
        out.push((m.type_id, m.timestamp.value, m.data));
        next = de.get_next_message(&[]).unwrap();
    }
    out
}

#[test]
fn interleaved_chunk_streams_reach_rml_rtmp_one_message_at_a_time() {
    // A keyframe on 6 with audio on 4 between its chunks; then two multi-chunk messages (6 and 7) in
    // flight with audio: when the first ends, the second is still incomplete and becomes the current one.
    let mut messages = vec![raw(6, 9, 0, 1000)];
    messages.extend((0..5).map(|i| raw(4, 8, 23 * i, 40)));
    messages.extend([raw(6, 9, 40, 700), raw(7, 9, 41, 900), raw(4, 8, 115, 300), raw(4, 8, 138, 20)]);
    messages.push(raw(6, 9, 0x0100_0000, 600));
    messages.push(raw(4, 8, 0x0100_0005, 50));
    for window in [2, 3] {
        let bytes = interleaved(&messages, 128, window);
        let mut guard = Guard::new(LIMITS);
        guard.connected();
        let passed = check(&mut guard, &bytes).unwrap();
        assert_ne!(passed, bytes, "the chunks were reordered");
        let mut guard = Guard::new(LIMITS);
        guard.connected();
        assert!(inspect_bytewise(&mut guard, &bytes).unwrap() == passed, "however the input is split");
        let got = deserialized(&passed);
        assert_eq!(got.len(), messages.len(), "window {window}");
        // Each chunk stream's messages arrive whole, in order, with their timestamps.
        for csid in [4, 6, 7] {
            let sent: Vec<_> = messages.iter().filter(|m| m.csid == csid).map(|m| (m.timestamp, &m.payload)).collect();
            let types: Vec<u8> = messages.iter().filter(|m| m.csid == csid).map(|m| m.type_id).collect();
            let received: Vec<_> = got
                .iter()
                .filter(|(t, ts, data)| types.contains(t) && sent.iter().any(|(s, p)| s == ts && *p == data))
                .collect();
            assert_eq!(received.len(), sent.len(), "csid {csid}, window {window}");
        }
        let mut want: Vec<_> = messages.iter().map(|m| (m.type_id, m.timestamp, m.payload.clone())).collect();
        let mut got = got;
        want.sort();
        got.sort();
        assert_eq!(got, want);
    }
}

#[test]
fn what_the_guard_holds_back_is_bounded() {
    let limits = Limits { max_message_bytes: 100_000 };
    let mut guard = Guard::new(limits);
    guard.connected();
    // One chunk of a large message, then another large message interleaved with it.
    let bytes = interleaved(&[raw(6, 9, 0, 100_000), raw(7, 9, 0, 100_000)], 128, 2);
    let refused = check(&mut guard, &bytes).unwrap_err();
    assert_eq!(refused.refusal, Refusal::HeldTooMuch { limit: 100_000 });
    // Before connect, the hold is as small as a command.
    let messages = [raw(6, 9, 0, 60_000), raw(7, 9, 0, 40_000), raw(8, 9, 0, 40_000)];
    let refused = check(&mut Guard::new(limits), &interleaved(&messages, 128, 3)).unwrap_err();
    assert_eq!(refused.refusal, Refusal::HeldTooMuch { limit: MAX_COMMAND_BYTES });
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    check(&mut guard, &interleaved(&messages, 128, 3)).expect("within the limit once connected");
}

#[test]
fn a_chunk_size_change_inside_another_message_is_refused() {
    let size =
        RawMessage { csid: 2, type_id: 1, timestamp: 0, stream_id: 0, payload: Bytes::from_static(&[0, 0, 16, 0]) };
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    let refused = check(&mut guard, &interleaved(&[raw(6, 9, 0, 1000), size.clone()], 128, 2)).unwrap_err();
    assert_eq!(refused.refusal, Refusal::ChunkSizeInsideMessage);
    // Between messages it is what every encoder does.
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    let bytes = interleaved(&[size], 128, 2);
    assert_eq!(check(&mut guard, &bytes).unwrap(), bytes);
}

#[test]
fn inconsistent_chunks_are_refused_with_a_reason() {
    let video = chunks(4, 9, &[0x17; 300], 128);
    let mut guard = Guard::new(LIMITS);
    check(&mut guard, &video[..12 + 128]).unwrap();
    let shorter = chunks(4, 9, &[0x17; 100], 128);
    assert_eq!(check(&mut guard, &shorter).unwrap_err().refusal, Refusal::HeaderChangedMessage { csid: 4 });

    let mut guard = Guard::new(LIMITS);
    assert_eq!(check(&mut guard, &[0x44, 0, 0, 0]).unwrap_err().refusal, Refusal::NoPreviousHeader { csid: 4 });

    for size in [0u32, 0x8000_0000] {
        let mut guard = Guard::new(LIMITS);
        let refused = check(&mut guard, &chunks(2, 1, &size.to_be_bytes(), 128)).unwrap_err();
        assert_eq!(refused.refusal, Refusal::BadChunkSize(Some(size)));
    }
}

#[test]
fn a_refusal_keeps_the_complete_media_before_it() {
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    let mut bytes = chunks(6, 9, &[0x17; 1000], 128);
    let media = bytes.len();
    bytes.extend_from_slice(&chunks(3, 20, &nested_connect(0x03, 40), 128));
    let refused = check(&mut guard, &bytes).unwrap_err();
    assert_eq!(refused.refusal, Refusal::TooDeep { type_id: 20 });
    // What passed ends where the command's last chunk starts: it holds the whole media message.
    let safe = refused.passed.len();
    assert!(safe > media && safe < bytes.len());
    assert_eq!(refused.passed[..], bytes[..safe]);
    let mut de = ChunkDeserializer::new();
    let first = de.get_next_message(&refused.passed).unwrap().unwrap();
    assert_eq!((first.type_id, first.data.len()), (9, 1000));
    assert_eq!(de.get_next_message(&[]).unwrap(), None);
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
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    check(&mut guard, &first).unwrap();
    // The next message, type 3 header: the extended field is repeated, and this one is too small.
    assert_eq!(
        check(&mut guard, &[0xC4, 0, 0, 0, 5, 0xAF]).unwrap_err().refusal,
        Refusal::BadExtendedTimestamp { csid: 4 }
    );
    let mut guard = Guard::new(LIMITS);
    guard.connected();
    check(&mut guard, &first).unwrap();
    check(&mut guard, &[0xC4, 1, 0, 0, 40, 0xAF]).expect("a proper extended delta passes");
}
