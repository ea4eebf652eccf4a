//! The black-box harness: a real server on 127.0.0.1:0 in this process, a real RTMP client over TCP,
//! and a minimal HTTP/1.1 client, so tests see exactly what players and encoders see.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use livechannel::config::{ChannelSettings, Config, Database};
use livechannel::flv::file::{self, Tag, TagKind};
use livechannel::names::ChannelKey;
use livechannel::rtmp::client::{ClientError, Publisher};
use livechannel::server::{Observers, Server};
use livechannel::storage::sink::Stored;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

pub fn tags(name: &str) -> Vec<Tag> {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    file::parse(Bytes::from(bytes)).expect("fixture parses")
}

/// The metadata backend a test runs on: SQLite in the test's data folder, or a fresh PostgreSQL
/// database on the server `LIVECHANNEL_TEST_POSTGRES` names.
pub enum Db {
    Sqlite,
    Postgres(String),
}

impl Db {
    pub async fn new(postgres: bool) -> Db {
        if postgres { Db::Postgres(livechannel::meta::testing::fresh_postgres_database().await) } else { Db::Sqlite }
    }

    /// `config` with this backend; the same database every time (restarts see what was written).
    pub fn on(&self, config: Config) -> Config {
        match self {
            Db::Sqlite => config,
            Db::Postgres(url) => {
                Config { database: Database::Postgres { url: url.clone(), max_connections: 8 }, ..config }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }
}

/// A black-box test that touches metadata, once per backend: `<test>::sqlite`, and `<test>::postgres`,
/// ignored unless asked for and failing when `LIVECHANNEL_TEST_POSTGRES` is unset.
macro_rules! on_both {
    (#[$test:meta] async fn $name:ident($db:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::support::Db;

            #[$test]
            async fn sqlite() {
                test_body(Db::new(false).await).await
            }

            #[$test]
            #[ignore = "needs LIVECHANNEL_TEST_POSTGRES (a PostgreSQL URL)"]
            async fn postgres() {
                test_body(Db::new(true).await).await
            }

            async fn test_body($db: Db) $body
        }
    };
}
pub(crate) use on_both;

/// `[storage]` for the S3 server the environment names (`LIVECHANNEL_TEST_S3` and its `_BUCKET`,
/// `_ACCESS_KEY`, `_SECRET_KEY`; .ci/run starts s3s-fs and sets them).
pub fn test_s3_storage(prefix: Option<String>) -> livechannel::config::StorageConfig {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let endpoint = std::env::var("LIVECHANNEL_TEST_S3")
        .expect("LIVECHANNEL_TEST_S3 must name an S3-compatible endpoint (.ci/run starts one)");
    livechannel::config::StorageConfig {
        kind: livechannel::config::StorageKind::S3,
        endpoint: Some(endpoint),
        bucket: Some(env("LIVECHANNEL_TEST_S3_BUCKET", "livechannel-test")),
        region: Some("us-east-1".into()),
        access_key_id: Some(env("LIVECHANNEL_TEST_S3_ACCESS_KEY", "livechannel")),
        secret_access_key: Some(env("LIVECHANNEL_TEST_S3_SECRET_KEY", "livechannel-secret")),
        path_style: Some(true),
        prefix,
        part_size: None,
        retry_timeout_ms: None,
        segment_redirect_expires_s: None,
    }
}

pub fn config(dir: &Path, frag_duration: u32, frag_count: u32) -> Config {
    Config {
        rtmp_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        channel_defaults: ChannelSettings { frag_duration, frag_count, playlist_name: "playlist.m3u8".into() },
        // The callback receivers of the tests listen on loopback, which callbacks may not reach by default.
        notify: livechannel::config::NotifyConfig {
            destinations: livechannel::egress::Destinations::parse(&["127.0.0.0/8".into()]).unwrap(),
            ..Default::default()
        },
        ..Config::default()
    }
}

/// Polls `f` every 20 ms until it returns `Some`, and returns that; fails the test naming `what` when
/// `timeout` passes first. The one way tests wait for something to happen.
pub async fn eventually<T>(timeout: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server for one test. Dropping it (a test that returns or panics) stops its listeners and tasks;
/// call `server.shutdown` to wait for the flush as well.
pub struct TestServer {
    pub server: Server,
    pub stored: mpsc::UnboundedReceiver<Stored>,
    _stop: StopOnDrop,
}

/// A field rather than `Drop` on `TestServer`, so tests can still move `server` out to shut it down.
struct StopOnDrop(tokio_util::sync::CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        TestServer::start_with_store(config, None).await
    }

    pub async fn start_with_store(config: Config, store: Option<livechannel::storage::Store>) -> TestServer {
        let (tx, stored) = mpsc::unbounded_channel();
        let observers = Observers { on_stored: Some(tx), store, ..Observers::default() };
        let server = Server::start_with(config, observers).await.expect("server starts");
        TestServer::from_parts(server, stored)
    }

    /// For tests that build their own [`Observers`]; `stored` is the receiver of their `on_stored`.
    pub fn from_parts(server: Server, stored: mpsc::UnboundedReceiver<Stored>) -> TestServer {
        let stop = StopOnDrop(server.shutdown_token());
        TestServer { server, stored, _stop: stop }
    }

    pub fn rtmp(&self) -> SocketAddr {
        self.server.rtmp_addr
    }

    pub fn http(&self) -> SocketAddr {
        self.server.http_addr
    }

    pub async fn wait_flushed(&self, channel: &str) {
        let key = ChannelKey::new("live", channel).unwrap();
        assert!(
            self.server.channels.wait_flushed(&key, Duration::from_secs(20)).await,
            "channel {channel} never flushed"
        );
        // The index rows and callbacks of what was stored are committed just after it.
        assert!(self.server.sync_metadata().await, "the metadata writer stopped");
    }

    /// Every segment stored so far, in order.
    pub fn drain_stored(&mut self) -> Vec<Stored> {
        let mut v = Vec::new();
        while let Ok(s) = self.stored.try_recv() {
            v.push(s);
        }
        v
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        http_request(self.http(), "GET", path, &[]).await
    }
}

/// Publishes every tag of a fixture as fast as the connection takes it, then unpublishes.
pub async fn publish(rtmp: SocketAddr, channel: &str, tags: &[Tag]) -> Result<(), ClientError> {
    let mut p = Publisher::connect(rtmp, "live", channel).await?;
    send_all(&mut p, tags, 0).await?;
    p.finish().await
}

/// Sends tags with `offset_ms` added to their timestamps, batching writes.
pub async fn send_all(p: &mut Publisher, tags: &[Tag], offset_ms: u32) -> Result<(), ClientError> {
    for (i, tag) in tags.iter().enumerate() {
        if tag.kind == TagKind::Script {
            continue;
        }
        p.queue_tag(tag.kind, tag.body.clone(), tag.timestamp_ms.wrapping_add(offset_ms))?;
        if i % 16 == 0 {
            p.flush_queued().await?;
        }
    }
    p.flush_queued().await
}

/// Media duration of a fixture in seconds: from the first frame to the end of the last frame of whichever
/// track ends last (a frame lasts as long as its track's largest timestamp step).
pub fn media_duration(tags: &[Tag]) -> f64 {
    let frames = |kind: TagKind| -> Vec<u32> {
        tags.iter().filter(|t| t.kind == kind && t.body.get(1) == Some(&1)).map(|t| t.timestamp_ms).collect()
    };
    let (video, audio) = (frames(TagKind::Video), frames(TagKind::Audio));
    let end = |ts: &[u32]| ts.last().map(|l| l + ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0));
    let start = video.first().into_iter().chain(audio.first()).min().copied().unwrap_or(0);
    let end = end(&video).into_iter().chain(end(&audio)).max().unwrap_or(0);
    f64::from(end - start) / 1000.0
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client: one request per connection, `Connection: close`, body read to EOF.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect http");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.expect("http timeout").unwrap();
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> HttpResponse {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head_text = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head_text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked && !head {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The media playlist at a URL path, parsed by m3u8-rs.
pub async fn playlist(ts: &TestServer, path: &str) -> m3u8_rs::MediaPlaylist {
    let resp = ts.get(path).await;
    assert_eq!(resp.status, 200, "GET {path}");
    match m3u8_rs::parse_playlist_res(&resp.body) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!("not a media playlist: {other:?}\n{}", resp.text()),
    }
}

/// One HTTP/1.1 request with a body.
pub async fn http_request_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect http");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.expect("http timeout").unwrap();
    parse_response(&raw, method == "HEAD")
}

/// Sends a fixture's tags paced at real time (timestamps continue from `offset_ms`), until done or error.
pub async fn send_paced(p: &mut Publisher, tags: &[Tag], offset_ms: u32) -> Result<(), ClientError> {
    let start = tokio::time::Instant::now();
    let first = tags.iter().find(|t| t.kind != TagKind::Script).map_or(0, |t| t.timestamp_ms);
    for tag in tags.iter().filter(|t| t.kind != TagKind::Script) {
        let due = start + Duration::from_millis(u64::from(tag.timestamp_ms.saturating_sub(first)));
        if due > tokio::time::Instant::now() {
            p.flush_queued().await?;
            tokio::time::sleep_until(due).await;
        }
        p.queue_tag(tag.kind, tag.body.clone(), tag.timestamp_ms.wrapping_add(offset_ms))?;
    }
    p.flush_queued().await
}

/// The codec configuration tags (AVC and AAC sequence headers) an encoder sends first on every connection.
pub fn config_tags(tags: &[Tag]) -> Vec<Tag> {
    tags.iter().filter(|t| t.kind != TagKind::Script && t.body.get(1) == Some(&0)).cloned().collect()
}

/// The text of the first `<name>` element.
pub fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_owned())
}

/// One node: a `livechannel serve` process with its own config file; its log goes to `<dir>/<id>.log`.
pub struct Node {
    pub child: Child,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
}

impl Node {
    pub fn start(dir: &std::path::Path, id: &'static str, config: &str) -> Node {
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_livechannel"))
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--node-id", id])
            .env("LIVECHANNEL_LOG", "info,livechannel=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log_path = dir.join(format!("{id}.log"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log_path).unwrap();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(log, "{line}");
                if !sent && line.contains("livechannel listening") {
                    let field = |name: &str| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(&format!("{name}=")))
                            .and_then(|v| v.parse::<SocketAddr>().ok())
                    };
                    let _ = tx.send((field("rtmp"), field("http")));
                    sent = true;
                }
            }
        });
        let (rtmp, http) =
            rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("node {id} did not start"));
        Node { child, rtmp: rtmp.unwrap(), http: http.unwrap() }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
