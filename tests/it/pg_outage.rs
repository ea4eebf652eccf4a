//! PostgreSQL going away under a running server, for real: the server reaches its database through a
//! TCP proxy this test can cut (every open connection reset, new ones refused), which is what a database
//! restart, failover or partition looks like from the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use livechannel::config::Database;
use livechannel::rtmp::client::Publisher;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::support::*;

/// Forwards 127.0.0.1:<port> to the database; `cut` resets every connection and refuses new ones.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (d, o) = (Arc::clone(&down), Arc::clone(&open));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused as soon as it opens
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                o.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { addr, down, open }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for task in self.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs LIVECHANNEL_TEST_POSTGRES (a PostgreSQL URL)"]
async fn postgres_going_away_stops_neither_ingest_nor_playback_and_everything_resumes() {
    let url = livechannel::meta::testing::fresh_postgres_database().await;
    let mut through = reqwest::Url::parse(&url).unwrap();
    let target = tokio::net::lookup_host((through.host_str().unwrap(), through.port().unwrap_or(5432)))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(target).await;
    through.set_host(Some("127.0.0.1")).unwrap();
    through.set_port(Some(proxy.addr.port())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let database = Database::Postgres { url: through.to_string(), max_connections: 4 };
    let mut ts = TestServer::start(livechannel::config::Config { database, ..config(dir.path(), 1, 20) }).await;
    // The publish starts while the database is there (admission reads the channel record).
    let tags = tags("media/av_no_bframes.flv");
    let mut p = Publisher::connect(ts.rtmp(), "live", "pgdown").await.unwrap();
    proxy.cut();
    let started = std::time::Instant::now();
    for chunk in tags.chunks(8) {
        send_all(&mut p, chunk, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.finish().await.unwrap();
    let key = livechannel::names::ChannelKey::new("live", "pgdown").unwrap();
    assert!(ts.server.channels.wait_flushed(&key, Duration::from_secs(30)).await);
    // Media and playlists did not wait for the database.
    assert_eq!(ts.drain_stored().len(), 10, "every segment stored while the database was away");
    let pl = playlist(&ts, "/live/pgdown/playlist.m3u8").await;
    assert_eq!(pl.segments.len(), 10, "the playlist is current");
    assert!(pl.segments.iter().all(|s| !s.discontinuity));
    eprintln!("published 10 s of media in {:?} with the database away", started.elapsed());

    // The API says "try again later", in its dialect.
    let resp = ts.get("/live?live").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.text().contains("<Code>ServiceUnavailable</Code>"), "{}", resp.text());
    let counters = ts.server.journal_counters();
    assert!(counters.commit_failures.load(Ordering::Relaxed) >= 1, "commits were tried and failed");

    // Back: the queued index rows are committed, the API answers again, nothing was dropped.
    proxy.restore();
    let meta = ts.server.meta.clone();
    let all = (SystemTime::UNIX_EPOCH, SystemTime::now() + Duration::from_secs(3600));
    let rows = eventually(Duration::from_secs(30), "the index rows after the outage", async || {
        let rows = meta.segments_between("live", "pgdown", all.0, all.1).await.ok()?;
        (rows.len() == 10).then_some(rows)
    })
    .await;
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
    let resp = ts.get("/live?live").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().contains("<Name>pgdown</Name>"), "{}", resp.text());
    // A new publish after the outage continues the sequence.
    publish(ts.rtmp(), "pgdown", &tags).await.unwrap();
    ts.wait_flushed("pgdown").await;
    assert_eq!(ts.drain_stored().first().map(|s| s.seq), Some(10));
    ts.server.shutdown(Duration::from_secs(20)).await;
}

/// A server whose database is unreachable at start exits with an error naming the URL, password redacted.
#[test]
fn an_unreachable_database_at_start_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("lc.toml");
    let url = format!("postgres://livechannel:topsecret@127.0.0.1:{port}/livechannel");
    std::fs::write(&config, format!("[database]\nurl = \"{url}\"\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_livechannel"))
        .args(["serve", "--rtmp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let shown = format!("postgres://livechannel:***@127.0.0.1:{port}/livechannel");
    assert!(stderr.contains(&shown), "{stderr}");
    assert!(!stderr.contains("topsecret"), "{stderr}");
}
