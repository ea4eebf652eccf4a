//! Hostile clients, seen from outside: each attack on a live server, then proof that only the attacker's
//! connection ended and the server still takes a real publish.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;
use livechannel::rtmp::client::{chunks, handshake, nested_connect};

/// Sends `bytes` after a handshake and waits for the server to close the connection.
async fn closed_after(addr: SocketAddr, bytes: &[u8]) -> Result<(), String> {
    let (mut stream, _) = handshake(addr).await.map_err(|e| format!("handshake: {e}"))?;
    // The server may close before it has read everything: a failed write is fine, silence is not.
    let _ = stream.write_all(bytes).await;
    let mut buf = vec![0u8; 16 * 1024];
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| "the server kept the connection open".to_string())
}

// Before the guard, the first of these overflowed a worker thread's stack and aborted the process (and this
// test binary with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_connect_ends_only_its_connection_on_both_ports() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 1, 3)).await;
    for addr in [ts.rtmp(), ts.http()] {
        for kind in [0x03, 0x08, 0x0A] {
            // 5,000 levels fit in a command message (the depth check refuses them); 100,000 do not (the size
            // check does, at the message header).
            for depth in [5_000, 100_000] {
                let bytes = chunks(3, 20, &nested_connect(kind, depth), 128);
                closed_after(addr, &bytes).await.unwrap_or_else(|e| panic!("{addr} kind {kind:#x} depth {depth}: {e}"));
            }
        }
    }
    // Still serving: a real publish through either port is stored and played.
    let tags = tags("media/av_no_bframes.flv");
    for (addr, channel) in [(ts.rtmp(), "after-rtmp"), (ts.http(), "after-http")] {
        publish(addr, channel, &tags).await.expect("publish after the attack");
        ts.wait_flushed(channel).await;
        let pl = playlist(&ts, &format!("/live/{channel}/playlist.m3u8")).await;
        assert!(!pl.segments.is_empty(), "{channel}");
    }
}

/// A publish whose channel state cannot be read is refused with `NetStream.Publish.Failed`, instead of
/// being accepted and recorded nowhere.
#[tokio::test]
async fn a_publish_whose_recording_cannot_resume_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 1, 3)).await;
    // The stored playlist cannot be read: a link to itself where the object should be (ELOOP).
    let folder = dir.path().join("media/live/stuck");
    std::fs::create_dir_all(&folder).unwrap();
    std::os::unix::fs::symlink(folder.join("playlist.m3u8"), folder.join("playlist.m3u8")).unwrap();
    let refused = livechannel::rtmp::client::Publisher::connect(ts.rtmp(), "live", "stuck").await.err();
    match refused {
        Some(livechannel::rtmp::client::ClientError::Refused { code, description }) => {
            assert_eq!(code, "NetStream.Publish.Failed", "{description}");
            assert!(description.contains("cannot resume"), "{description}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The channel is not left claimed: once the link is gone, a publish goes through.
    std::fs::remove_file(folder.join("playlist.m3u8")).unwrap();
    publish(ts.rtmp(), "stuck", &tags("media/av_no_bframes.flv")).await.unwrap();
}

/// A second `connect` on a publishing connection ends that connection and its publish the ordinary way
/// (open segment stored, history closed), instead of starting a second publish beside the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_on_a_publishing_connection_ends_it_cleanly() {
    use livechannel::rtmp::client::Publisher;
    use rml_rtmp::rml_amf0::{Amf0Value, serialize};
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 1, 10)).await;
    let tags = tags("media/av_no_bframes.flv");
    let mut p = Publisher::connect(ts.rtmp(), "live", "twice").await.unwrap();
    send_all(&mut p, &tags[..tags.len() / 2], 0).await.unwrap();
    let object = Amf0Value::Object([("app".to_string(), Amf0Value::Utf8String("live".into()))].into());
    let connect = serialize(&vec![Amf0Value::Utf8String("connect".into()), Amf0Value::Number(9.0), object]).unwrap();
    p.send_raw(&chunks(3, 20, &connect, 128)).await.unwrap();
    let _ = p.closed_by_server(Duration::from_secs(10)).await.expect("the server closes the connection");
    ts.wait_flushed("twice").await;
    let pl = playlist(&ts, "/live/twice/playlist.m3u8").await;
    assert!(!pl.segments.is_empty());
    let history = ts.get("/live/twice?live&comp=history").await.text();
    assert_eq!(history.matches("<LiveRecord>").count(), 1, "{history}");
    // The channel is free again.
    publish(ts.rtmp(), "twice", &tags).await.unwrap();
}

/// Sends AMF0 `values` as one command message.
fn command(values: Vec<rml_rtmp::rml_amf0::Amf0Value>) -> Vec<u8> {
    chunks(3, 20, &rml_rtmp::rml_amf0::serialize(&values).unwrap(), 128)
}

fn connect_command() -> Vec<u8> {
    use rml_rtmp::rml_amf0::Amf0Value;
    let object = Amf0Value::Object([("app".to_string(), Amf0Value::Utf8String("live".into()))].into());
    command(vec![Amf0Value::Utf8String("connect".into()), Amf0Value::Number(1.0), object])
}

/// A client that floods requests and never reads the answers is dropped once a write to it has waited
/// `rtmp_send_timeout_ms`, instead of holding its connection slot forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped() {
    use rml_rtmp::rml_amf0::Amf0Value;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, 3);
    cfg.limits.rtmp_send_timeout = Duration::from_millis(300);
    let ts = TestServer::start(cfg).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(ts.rtmp()).await.unwrap();
    let (mut stream, _) = livechannel::rtmp::client::handshake_on(stream).await.unwrap();
    stream.write_all(&connect_command()).await.unwrap();
    // Each createStream is answered; deleting the stream again keeps within the open-stream bound.
    let create = command(vec![Amf0Value::Utf8String("createStream".into()), Amf0Value::Number(2.0), Amf0Value::Null]);
    let delete = |id: u32| {
        let name = Amf0Value::Utf8String("deleteStream".into());
        command(vec![name, Amf0Value::Number(3.0), Amf0Value::Null, Amf0Value::Number(f64::from(id))])
    };
    let mut next_id = 1;
    let dropped = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut batch = Vec::new();
            for _ in 0..250 {
                batch.extend_from_slice(&create);
                batch.extend_from_slice(&delete(next_id));
                next_id += 1;
            }
            if stream.write_all(&batch).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(dropped.is_ok(), "the server kept a client that reads nothing");
    // Its slot is free: a real publish goes through.
    publish(ts.rtmp(), "after-flood", &tags("media/av_no_bframes.flv")).await.unwrap();
}

/// A client that keeps creating message streams is cut off: rml_rtmp keeps an entry for each.
#[tokio::test]
async fn a_create_stream_flood_ends_its_connection() {
    use rml_rtmp::rml_amf0::Amf0Value;
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 1, 3)).await;
    let create = command(vec![Amf0Value::Utf8String("createStream".into()), Amf0Value::Number(2.0), Amf0Value::Null]);
    let mut flood = connect_command();
    for _ in 0..100 {
        flood.extend_from_slice(&create);
    }
    closed_after(ts.rtmp(), &flood).await.unwrap();
    publish(ts.rtmp(), "after-create-flood", &tags("media/av_no_bframes.flv")).await.unwrap();
}

/// One address cannot take every connection slot.
#[tokio::test]
async fn connections_per_address_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, 3);
    cfg.limits.max_rtmp_connections_per_ip = 2;
    let ts = TestServer::start(cfg).await;
    let first = handshake(ts.rtmp()).await.unwrap();
    let second = handshake(ts.http()).await.unwrap();
    assert!(handshake(ts.rtmp()).await.is_err(), "a third connection from 127.0.0.1 is refused");
    drop(first);
    let third =
        eventually(Duration::from_secs(5), "a slot after one closed", async || handshake(ts.rtmp()).await.ok()).await;
    drop((second, third));
}

/// 5,000 idle connections (half on the RTMP port, half on the HTTP port, from four loopback addresses so
/// the per-address limits are not what holds them off) do not stop a real publish or its playback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an open-file limit of at least 12000 (ulimit -n)"]
async fn five_thousand_idle_connections_do_not_stop_a_publish_or_playback() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, 20);
    cfg.limits.max_rtmp_connections = 8192;
    cfg.limits.max_http_connections = 8192;
    let mut ts = TestServer::start(cfg).await;
    let mut idle = Vec::with_capacity(5000);
    for i in 0..5000u32 {
        let source: SocketAddr = format!("127.0.0.{}:0", 2 + (i / 2) % 4).parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(source).unwrap();
        let target = if i % 2 == 0 { ts.rtmp() } else { ts.http() };
        match socket.connect(target).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("idle connection {i}: {e} (raise ulimit -n to 12000 or more)"),
        }
    }
    publish(ts.rtmp(), "busy", &tags("media/av_no_bframes.flv")).await.unwrap();
    ts.wait_flushed("busy").await;
    assert_eq!(ts.drain_stored().len(), 10, "every segment stored");
    let pl = playlist(&ts, "/live/busy/playlist.m3u8").await;
    assert!(!pl.segments.is_empty());
    let segment = ts.get(&format!("/live/busy/{}", pl.segments[0].uri)).await;
    assert_eq!(segment.status, 200);
    // The idle ones are still held open by the server (none was dropped to make room).
    let mut closed = [0, 0];
    for (i, s) in idle.iter().enumerate() {
        let mut probe = [0u8; 1];
        if !matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            closed[i % 2] += 1;
        }
    }
    assert_eq!(closed, [0, 0], "idle connections closed (RTMP, HTTP)");
}

/// RTMP abuse, each on its own connection while a real publish goes on: chunk size 2^31-1 with a 16 MiB
/// message, thousands of chunk stream ids, a publish without a connect, and a second publish on a
/// publishing connection. Each connection is closed; the real publish loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_abuse_ends_only_the_abusers_connection() {
    use livechannel::rtmp::client::Publisher;
    use rml_rtmp::rml_amf0::Amf0Value;
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), 1, 20)).await;
    let tags = tags("media/av_no_bframes.flv");
    let mut real = Publisher::connect(ts.rtmp(), "live", "steady").await.unwrap();
    let (first, second) = tags.split_at(tags.len() / 2);
    send_all(&mut real, first, 0).await.unwrap();

    let publish_cmd = |name: &str| {
        let values = vec![
            Amf0Value::Utf8String("publish".into()),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            Amf0Value::Utf8String(name.into()),
            Amf0Value::Utf8String("live".into()),
        ];
        let mut bytes = chunks(4, 20, &rml_rtmp::rml_amf0::serialize(&values).unwrap(), 128);
        bytes[8] = 1; // message stream 1, the one createStream gives
        bytes
    };
    // Chunk size 2^31-1 is legal; a 16 MiB message is not, before or after connect.
    let mut huge = chunks(2, 1, &0x7FFF_FFFFu32.to_be_bytes(), 128);
    huge.extend_from_slice(&connect_command());
    huge.extend_from_slice(&[6, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0]);
    huge.extend_from_slice(&vec![0x17; 64 * 1024]);
    closed_after(ts.rtmp(), &huge).await.unwrap();
    // Thousands of chunk stream ids (three-byte basic headers).
    let mut ids = Vec::new();
    for csid in 0..3000u16 {
        let [lo, hi] = csid.to_le_bytes();
        ids.extend_from_slice(&[1, lo, hi, 0, 0, 0, 0, 0, 1, 8, 1, 0, 0, 0, 0xAF]);
    }
    closed_after(ts.rtmp(), &ids).await.unwrap();
    // A publish without a connect.
    closed_after(ts.rtmp(), &publish_cmd("sneaky")).await.unwrap();
    // A second publish on a publishing connection.
    let mut twice = Publisher::connect(ts.rtmp(), "live", "first").await.unwrap();
    send_all(&mut twice, &tags[..40], 0).await.unwrap();
    twice.send_raw(&publish_cmd("second")).await.unwrap();
    let _ = twice.closed_by_server(Duration::from_secs(10)).await.expect("the server closes the connection");
    let second_channel = ts.get("/live/second?live&comp=stat").await;
    assert_ne!(second_channel.status, 200, "no second channel went live: {}", second_channel.text());

    // The real publish went on untouched.
    send_all(&mut real, second, 0).await.unwrap();
    real.finish().await.unwrap();
    ts.wait_flushed("steady").await;
    let stored: Vec<_> = ts.drain_stored().into_iter().filter(|s| s.segment.bytes > 0).collect();
    assert!(stored.len() >= 10, "{} segments of the real publish stored", stored.len());
    let pl = playlist(&ts, "/live/steady/playlist.m3u8").await;
    assert_eq!(pl.segments.len(), 10, "the real publish lost nothing");
}
