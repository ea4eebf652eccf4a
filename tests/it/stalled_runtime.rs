//! A node whose media runtime stalls for longer than a lease keeps its leases and its publishes: the
//! lease renewal, the journal and every lease write run on the metadata thread (`server::meta_runtime`),
//! not on the workers that an overload (1000 streams on two cores) keeps busy. Before that thread, the
//! renewal waited for a worker, the node's fence lapsed, and the node ended every publish it had.

use std::time::Duration;

use livechannel::names::ChannelKey;
use livechannel::rtmp::client::Publisher;

use crate::support::*;

const LEASE: Duration = Duration::from_millis(300);
const RENEW: Duration = Duration::from_millis(100);
/// Five leases: without renewals the lease row lapses, and the node's fence with it.
const STALL: Duration = Duration::from_millis(1500);

// One worker: blocking it stalls every task of the media runtime (connections, writers' hand-offs,
// HTTP). The test body runs on its own thread (`block_on`), so it can watch the database meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_media_runtime_stalled_for_five_leases_keeps_the_lease_and_the_publish() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1, 20);
    cfg.node.lease = LEASE;
    cfg.node.renew = RENEW;
    let mut ts = TestServer::start(cfg).await;
    let key = ChannelKey::new("live", "stall").unwrap();
    let tags = tags("media/av_no_bframes.flv");
    let (first, rest) = tags.split_at(tags.len() / 3);

    let mut p = Publisher::connect(ts.rtmp(), "live", "stall").await.unwrap();
    send_all(&mut p, first, 0).await.unwrap();
    let meta = ts.server.meta.clone();
    let holder = eventually(Duration::from_secs(10), "the publish's lease row", async || {
        ts.server.channels.live(&key)?;
        meta.live_lease("live", "stall").await.unwrap().map(|l| l.holder)
    })
    .await;

    let stall = tokio::spawn(async { std::thread::sleep(STALL) });
    // While no worker runs, the lease row must stay unexpired: checked after one, two and four leases.
    let started = tokio::time::Instant::now();
    for at in [LEASE, LEASE * 2, LEASE * 4] {
        tokio::time::sleep_until(started + at).await;
        let lease = meta.live_lease("live", "stall").await.unwrap();
        assert_eq!(
            lease.map(|l| l.holder).as_deref(),
            Some(holder.as_str()),
            "{at:?} into a {STALL:?} stall of the media runtime, the lease is no longer renewed"
        );
    }
    stall.await.unwrap();

    let live = ts.server.channels.live(&key).expect("the publish is still live after the stall");
    assert!(!live.kick.is_kicked(), "the publish was ended after the stall: {:?}", live.kick.reason());
    // The node's fence held throughout: what comes after the stall is stored like what came before.
    let offset = first.last().map_or(0, |t| t.timestamp_ms + 40);
    send_all(&mut p, rest, offset).await.unwrap();
    p.finish().await.unwrap();
    ts.wait_flushed("stall").await;
    let stored = ts.drain_stored();
    let counts = live.health.counts();
    assert_eq!(counts.failed, 0, "segments were refused (fenced) after the stall: {counts:?}");
    assert!(
        stored.len() as f64 >= media_duration(&tags).floor() - 1.0,
        "{} segments stored from {:.1} s of media",
        stored.len(),
        media_duration(&tags)
    );
    assert!(!live.kick.is_kicked(), "the publish was ended, not finished: {:?}", live.kick.reason());
}
