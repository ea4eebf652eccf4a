//! HLS over HTTP as players fetch it: content types, cache headers, HEAD, byte ranges, CORS, 404s, paths
//! that try to escape the data folder, and request limits.

use std::time::Duration;

use crate::support::*;
use livechannel::rtmp::client::Publisher;

async fn server_with_one_channel() -> (tempfile::TempDir, TestServer, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), 2, 3)).await;
    publish(ts.rtmp(), "demo", &tags("media/av_bframes.flv")).await.unwrap();
    ts.wait_flushed("demo").await;
    let last = ts.drain_stored().last().unwrap().seq;
    (dir, ts, last)
}

#[tokio::test]
async fn playlists_and_segments_have_the_right_types_cache_headers_and_cors() {
    let (_dir, ts, last) = server_with_one_channel().await;
    let pl = ts.get("/live/demo/playlist.m3u8").await;
    assert_eq!(pl.status, 200);
    assert_eq!(pl.header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(pl.header("cache-control"), Some("max-age=1"));
    assert_eq!(pl.header("access-control-allow-origin"), Some("*"));
    assert!(pl.text().starts_with("#EXTM3U\n"));
    let seg = ts.get(&format!("/live/demo/{last}.ts")).await;
    assert_eq!(seg.status, 200);
    assert_eq!(seg.header("content-type"), Some("video/mp2t"));
    assert!(seg.header("cache-control").unwrap().contains("max-age=86400"));
    assert_eq!(seg.header("content-length").unwrap().parse::<usize>().unwrap(), seg.body.len());
    assert_eq!(seg.body.len() % 188, 0);
    assert_eq!(seg.header("accept-ranges"), Some("bytes"));
    ts.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn head_byte_ranges_and_preflight_work_as_players_expect() {
    let (_dir, ts, last) = server_with_one_channel().await;
    let path = format!("/live/demo/{last}.ts");
    let full = ts.get(&path).await.body;
    let head = http_request(ts.http(), "HEAD", &path, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").unwrap().parse::<usize>().unwrap(), full.len());
    assert!(head.body.is_empty());

    let part = http_request(ts.http(), "GET", &path, &[("Range", "bytes=188-375")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &full[188..376]);
    assert_eq!(part.header("content-range"), Some(format!("bytes 188-375/{}", full.len()).as_str()));
    let tail = http_request(ts.http(), "GET", &path, &[("Range", "bytes=-188")]).await;
    assert_eq!(tail.body, &full[full.len() - 188..]);
    let beyond = http_request(ts.http(), "GET", &path, &[("Range", &format!("bytes={}-", full.len()))]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some(format!("bytes */{}", full.len()).as_str()));
    let ignored = http_request(ts.http(), "GET", &path, &[("Range", "bytes=0-1,5-6")]).await;
    assert_eq!((ignored.status, ignored.body.len()), (200, full.len()));

    let pre = http_request(
        ts.http(),
        "OPTIONS",
        &path,
        &[("Origin", "http://player.example"), ("Access-Control-Request-Method", "GET")],
    )
    .await;
    assert_eq!(pre.status, 204);
    assert!(pre.header("access-control-allow-methods").unwrap().contains("GET"));
    assert!(pre.header("access-control-allow-headers").unwrap().contains("Range"));
    let pna = http_request(ts.http(), "OPTIONS", &path, &[("Access-Control-Request-Private-Network", "true")]).await;
    assert_eq!(pna.header("access-control-allow-private-network"), Some("true"));
    // Web pages may play, not manage: no write methods or private-network grant for writes in a
    // preflight, and a write that carries an Origin (a "simple" POST needs no preflight) is refused.
    let write = [("Origin", "http://evil.example"), ("Access-Control-Request-Method", "DELETE")];
    let pre = http_request(ts.http(), "OPTIONS", "/live/demo?live", &write).await;
    assert!(!pre.header("access-control-allow-methods").unwrap().contains("DELETE"));
    let pna = http_request(
        ts.http(),
        "OPTIONS",
        "/live/demo?live",
        &[("Access-Control-Request-Method", "PUT"), ("Access-Control-Request-Private-Network", "true")],
    )
    .await;
    assert_eq!(pna.header("access-control-allow-private-network"), None);
    let post = http_request(
        ts.http(),
        "POST",
        "/live/demo/vod.m3u8?vod&startTime=1&endTime=2",
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(post.status, 403, "{}", post.text());
    // DNS rebinding: a name that is not ours, pointed at this loopback server, is not served.
    for (host, status) in [("rebind.example", 421), ("localhost", 200)] {
        let mut s = tokio::net::TcpStream::connect(ts.http()).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nConnection: close\r\n\r\n", ts.http().port());
        tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut raw).await.unwrap();
        let head = String::from_utf8_lossy(&raw[..raw.len().min(20)]).into_owned();
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{host}: {head}");
    }
    ts.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn missing_things_and_escaping_paths_are_404_and_other_methods_405() {
    let (dir, ts, last) = server_with_one_channel().await;
    std::fs::write(dir.path().join("secret.ts"), b"do not serve").unwrap();
    for path in [
        "/live/demo/999999.ts",
        "/live/nochannel/playlist.m3u8",
        "/other/demo/playlist.m3u8",
        "/live/demo/../../secret.ts",
        "/live/%2e%2e/%2e%2e/secret.ts",
        "/live/demo/..%2f..%2fsecret.ts",
        "/live/demo/notes.txt",
        "/live/demo",
    ] {
        let r = ts.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.body.windows(12).any(|w| w == b"do not serve"));
    }
    // Objects are written by publishes only: PutObject is not an operation here.
    let r = http_request(ts.http(), "PUT", &format!("/live/demo/{last}.ts"), &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(ts.get(&format!("/live/demo/{last}.ts")).await.status, 200, "still there");
    ts.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_giant_header_is_refused_without_hurting_the_server() {
    let (_dir, ts, _) = server_with_one_channel().await;
    let huge = "x".repeat(64 * 1024);
    let r = http_request(ts.http(), "GET", "/live/demo/playlist.m3u8", &[("X-Huge", &huge)]).await;
    assert_eq!(r.status, 431);
    assert_eq!(ts.get("/live/demo/playlist.m3u8").await.status, 200);
    ts.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_playlist_is_always_whole_while_it_is_being_replaced() {
    // Readers poll the playlist while a publish rewrites it after every segment: each read must parse.
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(config(dir.path(), 1, 3)).await;
    let rtmp = ts.rtmp();
    let publisher = tokio::spawn(async move {
        let t = tags("media/av_no_bframes.flv");
        for _ in 0..2 {
            let mut p = livechannel::rtmp::client::Publisher::connect(rtmp, "live", "busy").await.unwrap();
            for chunk in t.chunks(8) {
                send_all(&mut p, chunk, 0).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            p.finish().await.unwrap();
        }
    });
    let mut reads = 0;
    while !publisher.is_finished() {
        let r = ts.get("/live/busy/playlist.m3u8").await;
        if r.status == 200 {
            assert!(m3u8_rs::parse_media_playlist_res(&r.body).is_ok(), "torn playlist:\n{}", r.text());
            assert!(r.text().ends_with(".ts\n"), "truncated playlist:\n{}", r.text());
            reads += 1;
        }
    }
    assert!(reads > 50, "only {reads} reads");
    ts.server.shutdown(Duration::from_secs(5)).await;
}

/// A client that trickles its request body holds a connection and memory: the body must arrive within
/// `http_body_timeout_ms`, and the server answers the OSS error and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_request_body_is_cut_off_after_the_body_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, 3);
    cfg.limits.http_body_timeout = Duration::from_millis(500);
    let ts = TestServer::start(cfg).await;
    let mut s = tokio::net::TcpStream::connect(ts.http()).await.unwrap();
    let head = format!("PUT /live/slow?live HTTP/1.1\r\nHost: {}\r\nContent-Length: 200\r\n\r\n<", ts.http());
    s.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(900), trickle).await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer)).await.unwrap().unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("IncompleteBody"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Everyone else is served as before.
    assert_eq!(ts.get("/live?live").await.status, 200);
}

/// The Aliyun and Huawei dialects check what credentials they can before reading a body: a request
/// without valid ones is answered at once, whatever body it promises, instead of holding the
/// connection for the body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_api_requests_without_credentials_are_refused_before_their_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, 3);
    cfg.limits.http_body_timeout = Duration::from_secs(30);
    let ts = TestServer::start(cfg).await;
    let promised = [("Content-Length", "60000"), ("Content-Type", "application/json")];
    let now = chrono::Utc::now();
    let sdk_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let unknown = "SDK-HMAC-SHA256 Access=NOSUCHKEY, SignedHeaders=host;x-sdk-date, Signature=00";
    let project = "/v1/0123456789abcdef0123456789abcdef/notifications/publish?domain=live";
    let stale = (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let rpc = |key: &str, at: &str| {
        format!(
            "/?Action=DescribeLiveStreamsNotifyUrlConfig&DomainName=live&AccessKeyId={key}&Timestamp={at}&SignatureNonce=1&SignatureMethod=HMAC-SHA1&Signature=x"
        )
    };
    let cases = [
        ("PUT", project.to_owned(), Vec::<(&str, &str)>::new(), "401"),
        ("PUT", project.to_owned(), vec![("Authorization", unknown), ("X-Sdk-Date", &sdk_date)], "401"),
        ("POST", rpc("NOSUCHKEY", &now.format("%Y-%m-%dT%H:%M:%SZ").to_string()), vec![], "404"),
        ("POST", rpc("NOSUCHKEY", &stale), vec![], "40"),
    ];
    for (method, path, extra, status) in cases {
        let headers: Vec<(&str, &str)> = promised.iter().copied().chain(extra).collect();
        let answer = tokio::time::timeout(Duration::from_secs(5), http_request(ts.http(), method, &path, &headers))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer before the body"));
        assert!(answer.status.to_string().starts_with(status), "{method} {path}: {} {}", answer.status, answer.text());
    }
}

/// Idle sockets from one address (a flood, or a broken client pool) cannot take every HTTP slot: that
/// address gets closed connections, and everybody else is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_are_capped_in_all_and_per_address() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, 3);
    cfg.limits.max_http_connections = 8;
    cfg.limits.max_http_connections_per_ip = 3;
    let ts = TestServer::start(cfg).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(ts.http()).await.unwrap());
    }
    // The fourth from this address is closed at once, without an answer.
    let mut over = tokio::net::TcpStream::connect(ts.http()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // Another address still gets in (127.0.0.2 is loopback too).
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = other.connect(ts.http()).await.unwrap();
    let request = format!("GET /live?live HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", ts.http());
    tokio::io::AsyncWriteExt::write_all(&mut other, request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    // Once the idle ones go, this address is served again (the server notices each close on its own
    // time, so a try may still find the slots taken and be closed).
    drop(idle);
    let addr = ts.http();
    eventually(Duration::from_secs(5), "a slot for this address", async || {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /live?live HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut s, request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
}

#[tokio::test]
async fn conditional_reads_answer_304_with_the_validators_and_any_object_is_served_by_its_type() {
    let (_dir, ts, last) = server_with_one_channel().await;
    let path = format!("/live/demo/{last}.ts");
    let full = ts.get(&path).await;
    let etag = full.header("etag").expect("an ETag").to_owned();
    let modified = full.header("last-modified").expect("a Last-Modified").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(httpdate::parse_http_date(&modified).is_ok(), "{modified}");

    for (method, headers) in [
        ("GET", vec![("If-None-Match", etag.clone())]),
        ("HEAD", vec![("If-None-Match", format!("\"other\", W/{etag}"))]),
        ("GET", vec![("If-None-Match", "*".to_owned())]),
        ("GET", vec![("If-Modified-Since", modified.clone())]),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = http_request(ts.http(), method, &path, &h).await;
        assert_eq!(r.status, 304, "{method} {headers:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("last-modified"), Some(modified.as_str()));
        assert!(r.header("cache-control").unwrap().contains("immutable"));
    }
    // A stale validator gets the bytes; If-None-Match wins over a current If-Modified-Since.
    let stale =
        http_request(ts.http(), "GET", &path, &[("If-None-Match", "\"stale\""), ("If-Modified-Since", &modified)])
            .await;
    assert_eq!((stale.status, stale.body.len()), (200, full.body.len()));
    let old = http_request(ts.http(), "GET", &path, &[("If-Modified-Since", "Thu, 01 Jan 2015 00:00:00 GMT")]).await;
    assert_eq!(old.status, 200);
    let gone = http_request(ts.http(), "GET", "/live/demo/999999.ts", &[("If-None-Match", "*")]).await;
    assert_eq!(gone.status, 404);

    // Objects other than playlists and segments (snapshots, files put in the folder) are served too.
    let key = livechannel::names::ChannelKey::new("live", "demo").unwrap();
    let jpeg = bytes::Bytes::from_static(b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9");
    let objects = ts.server.store.objects();
    object_store::ObjectStoreExt::put(objects.as_ref(), &key.object("latest.jpg").unwrap(), jpeg.clone().into())
        .await
        .unwrap();
    let img = ts.get("/live/demo/latest.jpg").await;
    assert_eq!(img.status, 200);
    assert_eq!(img.header("content-type"), Some("image/jpeg"));
    assert_eq!(img.header("cache-control"), Some("no-cache"));
    assert_eq!(img.body, jpeg.as_ref());
    ts.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn list_objects_pages_a_channel_folder_and_rolls_up_folders() {
    let (_dir, ts, last) = server_with_one_channel().await;
    let mut keys = Vec::new();
    let mut marker = String::new();
    loop {
        let r = ts.get(&format!("/live/?prefix=demo/&max-keys=2&marker={marker}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let xml = r.text();
        let page: Vec<String> = xml.split("<Key>").skip(1).map(|s| s.split('<').next().unwrap().to_owned()).collect();
        assert!(page.len() <= 2);
        keys.extend(page);
        match xml.split("<NextMarker>").nth(1) {
            Some(rest) => marker = rest.split('<').next().unwrap().to_owned(),
            None => break,
        }
    }
    let mut want: Vec<String> = (0..=last).map(|s| format!("demo/{s}.ts")).collect();
    want.push("demo/playlist.m3u8".into());
    want.sort();
    assert_eq!(keys, want);

    let v2 = ts.get("/live/?list-type=2&delimiter=/&encoding-type=url").await.text();
    assert!(v2.contains("<CommonPrefixes><Prefix>demo/</Prefix></CommonPrefixes>"), "{v2}");
    assert!(v2.contains("<KeyCount>1</KeyCount>") && !v2.contains("<Contents>"), "{v2}");
    let bad = ts.get("/live/?max-keys=1001").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("InvalidArgument"));
    let escape = ts.get("/live/?prefix=../").await;
    assert_eq!(escape.status, 200);
    assert!(!escape.text().contains("<Contents>"));
    ts.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn deleting_objects_removes_index_rows_and_spares_a_live_playlist() {
    let (_dir, ts, last) = server_with_one_channel().await;
    assert!(last >= 2);
    assert!(ts.server.sync_metadata().await);
    let del = http_request(ts.http(), "DELETE", "/live/demo/0.ts", &[]).await;
    assert_eq!(del.status, 204, "{}", del.text());
    assert_eq!(ts.get("/live/demo/0.ts").await.status, 404);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let vod = ts.get(&format!("/live/demo?vod&startTime={}&endTime={}", now - 600, now + 600)).await.text();
    assert!(vod.contains("\n1.ts") && !vod.contains("\n0.ts"), "{vod}");
    // Deleting what is not there succeeds, as on OSS.
    assert_eq!(http_request(ts.http(), "DELETE", "/live/demo/0.ts", &[]).await.status, 204);

    let mut p = Publisher::connect(ts.rtmp(), "live", "on-air").await.unwrap();
    send_all(&mut p, &tags("media/av_bframes.flv"), 0).await.unwrap();
    let key = livechannel::names::ChannelKey::new("live", "on-air").unwrap();
    eventually(Duration::from_secs(20), "on-air is live", async || ts.server.channels.live(&key).map(|_| ())).await;
    let refused = http_request(ts.http(), "DELETE", "/live/on-air/playlist.m3u8", &[]).await;
    assert_eq!(refused.status, 409);
    assert!(refused.text().contains("<Code>ChannelStillLive</Code>"), "{}", refused.text());

    let body = b"<Delete><Quiet>false</Quiet><Object><Key>demo/1.ts</Key></Object>\
        <Object><Key>demo/none.ts</Key></Object><Object><Key>on-air/playlist.m3u8</Key></Object></Delete>";
    let multi = http_request_body(ts.http(), "POST", "/live/?delete", &[], body).await;
    assert_eq!(multi.status, 200, "{}", multi.text());
    let xml = multi.text();
    assert!(xml.contains("<Deleted><Key>demo/1.ts</Key></Deleted><Deleted><Key>demo/none.ts</Key></Deleted>"), "{xml}");
    assert!(xml.contains("<Error><Key>on-air/playlist.m3u8</Key><Code>ChannelStillLive</Code>"), "{xml}");
    assert_eq!(ts.get("/live/demo/1.ts").await.status, 404);
    assert_eq!(ts.get("/live/on-air/playlist.m3u8").await.status, 200);
    let quiet = b"<Delete><Quiet>true</Quiet><Object><Key>demo/2.ts</Key></Object></Delete>";
    let multi = http_request_body(ts.http(), "POST", "/live/?delete", &[], quiet).await;
    assert!(!multi.text().contains("<Deleted>"), "{}", multi.text());
    let broken = http_request_body(ts.http(), "POST", "/live/?delete", &[], b"<Delete><Object>").await;
    assert_eq!(broken.status, 400);
    let md5 =
        http_request_body(ts.http(), "POST", "/live/?delete", &[("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==")], quiet)
            .await;
    assert!(md5.text().contains("InvalidDigest"), "{}", md5.text());
    drop(p);
    ts.server.shutdown(Duration::from_secs(5)).await;
}
