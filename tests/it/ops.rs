//! What balancers and operators see of one node: `/healthz`, `/readyz`, `/metrics`, draining, and the
//! single-node lease (a restarted node's dead publish is closed and its PUBLISH_DONE queued).

use std::time::Duration;

use livechannel::rtmp::client::{ClientError, Publisher};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_on_drain_which_ends_live_publishes_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = TestServer::start(config(dir.path(), 1, 5)).await;
    assert_eq!(ts.get("/healthz").await.status, 200);
    let ready = ts.get("/readyz").await;
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
    let metrics = ts.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    assert!(metrics.text().ends_with("# EOF\n"), "{}", metrics.text());
    // A query makes it an OSS request again (no bucket is called "readyz": names are checked).
    assert_ne!(ts.get("/readyz?acl").await.text(), "ready\n");

    let tags = tags("media/av_no_bframes.flv");
    let mut p = Publisher::connect(ts.rtmp(), "live", "drained").await.unwrap();
    send_all(&mut p, &tags[..tags.len() / 2], 0).await.unwrap();
    eventually(Duration::from_secs(10), "a segment stored", async || (!ts.drain_stored().is_empty()).then_some(()))
        .await;
    assert!(ts.server.drain(Duration::from_secs(20)).await, "the live channel was stored and released");
    let ready = ts.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("draining"), "{}", ready.text());
    // The drained publisher was disconnected; a new one is told to go elsewhere.
    let more = async {
        for _ in 0..50 {
            send_all(&mut p, &tags[tags.len() / 2..], 0).await?;
        }
        Ok::<(), ClientError>(())
    };
    assert!(tokio::time::timeout(Duration::from_secs(10), more).await.unwrap().is_err(), "still publishing");
    match Publisher::connect(ts.rtmp(), "live", "other").await {
        Err(ClientError::Refused { code, description }) => {
            assert_eq!(code, "NetStream.Publish.Failed");
            assert!(description.contains("draining"), "{description}");
        }
        other => panic!("a draining node takes no publish: {:?}", other.map(|_| ())),
    }
    let text = ts.get("/metrics").await.text();
    assert!(text.contains("livechannel_rtmp_refused_total{reason=\"draining\"}"), "{text}");
    // Playback is still served while draining.
    assert_eq!(ts.get("/live/drained/playlist.m3u8").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_data_folder_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = livechannel::server::Server::start(config(dir.path(), 1, 3)).await.unwrap();
    let second = livechannel::server::Server::start(config(dir.path(), 1, 3)).await;
    let err = second.err().expect("two servers must not share a data folder").to_string();
    assert!(err.contains("in use by another livechannel server"), "{err}");
    assert!(first.shutdown(Duration::from_secs(5)).await);
    // Stopped, it lets the next one in (a restart).
    let again = livechannel::server::Server::start(config(dir.path(), 1, 3)).await.unwrap();
    again.shutdown(Duration::from_secs(5)).await;
}
