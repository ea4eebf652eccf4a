//! The `livechannel` binary as an operator runs it: what it prints when it cannot start, and the access
//! log it writes at the default level.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use livechannel::rtmp::client::{ClientError, Publisher};

use crate::support::*;

#[test]
fn a_startup_error_is_printed_once_on_one_line_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "rtmp_listen = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_livechannel"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines[0].starts_with("error: config file") && stderr.contains("unknown field `bogus`"), "{stderr}");
    assert_eq!(stderr.matches("unknown field `bogus`").count(), 1, "printed more than once: {stderr}");
    assert!(!stderr.contains("Caused by") && !stderr.contains("backtrace"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_line_per_publish_start_end_and_refusal_and_none_for_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lc.toml");
    std::fs::write(
        &config,
        format!(
            "rtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
             [channel_defaults]\nfrag_duration = 1\n\
             [[buckets]]\nname = \"live\"\nacl = \"public-read-write\"\nauto_create_channels = true\n\
             [[buckets]]\nname = \"closed\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_livechannel"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("LIVECHANNEL_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("livechannel listening") {
                let addr =
                    |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)?.parse::<SocketAddr>().ok());
                let _ = tx.send(addr("rtmp=").zip(addr("http=")));
            }
            all.push(line);
        }
        all
    });
    let (rtmp, http) = rx.recv_timeout(Duration::from_secs(30)).expect("the server starts").expect("its addresses");

    // A balancer's TCP health check: open, close.
    drop(tokio::net::TcpStream::connect(rtmp).await.unwrap());
    // A publish, and a refused one (an unsigned push to a private bucket).
    publish(rtmp, "logged", &tags("media/av_no_bframes.flv")).await.unwrap();
    match Publisher::connect(rtmp, "closed/live", "nope").await {
        Err(ClientError::Refused { .. }) => {}
        other => panic!("an unsigned push to a private bucket: {:?}", other.err()),
    }
    // The publisher has sent everything; once the server has taken it all, the channel is idle.
    eventually(Duration::from_secs(20), "the publish to end", async || {
        http_request(http, "GET", "/live/logged?live&comp=stat", &[])
            .await
            .text()
            .contains("<Status>Idle</Status>")
            .then_some(())
    })
    .await;
    // The end line comes when the recording is complete; SIGTERM waits for it.
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());
    let lines = reader.join().unwrap();
    let text = lines.join("\n");
    let with = |needle: &str| lines.iter().filter(|l| l.contains(needle)).collect::<Vec<_>>();

    let started = with("publish started");
    assert_eq!(started.len(), 1, "{text}");
    assert!(started[0].contains("channel=live/logged") && started[0].contains("remote=127.0.0.1:"), "{text}");
    let ended = with("publish ended");
    assert_eq!(ended.len(), 1, "{text}");
    for field in ["channel=live/logged", "remote=127.0.0.1:", "seconds=", "bytes=", "segments=10", "dropped_segments=0"]
    {
        assert!(ended[0].contains(field), "no {field} in: {}", ended[0]);
    }
    let refused = with("publish refused");
    assert_eq!(refused.len(), 1, "{text}");
    assert!(refused[0].contains("AccessDenied"), "{text}");
    assert!(with("health check").is_empty() && with("before the handshake").is_empty(), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes when stderr is not a terminal");
}

/// The port the process `pid` listens on at `ip` (in /proc/net/tcp's hex: 127.0.0.1 is `0100007F`):
/// found through its own sockets, so that no other test's listener can be mistaken for it.
fn listening_port(pid: u32, ip: &str) -> Option<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| Some(l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    std::fs::read_to_string("/proc/net/tcp").ok()?.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (addr, port) = f.get(1)?.split_once(':')?;
        // State 0A is LISTEN; field 9 is the socket's inode.
        (addr == ip && f.get(3) == Some(&"0A") && inodes.contains(*f.get(9)?))
            .then(|| u16::from_str_radix(port, 16).ok())?
    })
}

/// A log that cannot be written (stderr on `/dev/full`, as on a full disk) costs log lines, not the
/// server: it starts, takes a publish at debug level and stores and serves every segment. Before, the
/// logging library reported the failed write with `eprintln!`, which panics when stderr fails: the
/// server exited with 101 at its first line, and under load a storage writer thread died at its first
/// "not stored" warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_costs_log_lines_not_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lc.toml");
    // Port 0 on two loopback addresses: the server cannot print what it bound, so the test reads its
    // sockets, and tells RTMP from HTTP by address.
    std::fs::write(
        &config,
        format!(
            "rtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.2:0\"\ndata_dir = {:?}\n\
             [channel_defaults]\nfrag_duration = 1\nfrag_count = 20\n\
             [[buckets]]\nname = \"live\"\nacl = \"public-read-write\"\nauto_create_channels = true\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_livechannel"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("LIVECHANNEL_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(full))
        .spawn()
        .unwrap();
    let (rtmp, http) = eventually(Duration::from_secs(20), "the server to listen", async || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited with {status} while its log could not be written");
        }
        let rtmp = listening_port(child.id(), "0100007F")?;
        let http = listening_port(child.id(), "0200007F")?;
        Some((SocketAddr::from(([127, 0, 0, 1], rtmp)), SocketAddr::from(([127, 0, 0, 2], http))))
    })
    .await;

    let tags = tags("media/av_no_bframes.flv");
    if let Err(e) = publish(rtmp, "nolog", &tags).await {
        panic!(
            "the publish failed ({e}); the server: {:?}",
            child.try_wait().unwrap().map_or("running".into(), |s| s.to_string())
        );
    }
    // Everything is sent; the writer stores the last segments after the publish ends.
    let expected = media_duration(&tags).floor() as usize - 1;
    let text = eventually(Duration::from_secs(20), "every segment in the playlist", async || {
        let text = http_request(http, "GET", "/live/nolog/playlist.m3u8", &[]).await.text();
        (text.lines().filter(|l| l.ends_with(".ts")).count() >= expected).then_some(text)
    })
    .await;
    for name in text.lines().filter(|l| l.ends_with(".ts")) {
        let ts = http_request(http, "GET", &format!("/live/nolog/{name}"), &[]).await;
        assert_eq!(ts.status, 200, "{name}");
        assert_eq!(ts.body.first(), Some(&0x47), "{name} is not TS");
    }
    assert!(child.try_wait().unwrap().is_none(), "the server exited");
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success(), "a clean stop, with nothing to log to");
}
