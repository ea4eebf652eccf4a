//! Nodes telling each other that something changed, through PostgreSQL `LISTEN`/`NOTIFY`: callback
//! configuration (every node's cache reloads) and kicks (the node holding a kicked lease acts at once
//! instead of at its next renewal). Best effort by design: a notification lost while a listener
//! reconnects is covered by the cache's time to live and by the renewal loop, which polls for both.
//! On SQLite there is one node and nothing to tell.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Backend, Meta};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Callback configuration changed (payload unused).
    Config,
    /// A lease was kicked (payload: the node that holds it).
    Kick,
}

impl Topic {
    pub fn channel(self) -> &'static str {
        match self {
            Topic::Config => "livechannel_config",
            Topic::Kick => "livechannel_kick",
        }
    }
}

const RECONNECT: Duration = Duration::from_secs(1);

impl Meta {
    /// Tells every node's listener (after the change committed). Failure is logged, not returned: the
    /// polling fallbacks make up for it.
    pub(crate) async fn notify_nodes(&self, topic: Topic, payload: &str) {
        if self.backend != Backend::Postgres {
            return;
        }
        let sent =
            sqlx::query("SELECT pg_notify($1, $2)").bind(topic.channel()).bind(payload).execute(&self.pool).await;
        if let Err(e) = sent {
            debug!(topic = topic.channel(), error = %e, "cannot notify the other nodes (they poll)");
        }
    }

    /// Listens until `shutdown`: configuration changes reload this node's caches, and `on_kick` is
    /// called with the node id of each kick. Does nothing on SQLite.
    pub async fn listen(self, on_kick: impl Fn(&str) + Send + 'static, shutdown: CancellationToken) {
        let Some(url) = self.url.clone() else { return };
        loop {
            let mut listener = match PgListener::connect(&url).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot connect the notification listener; retrying (nodes poll meanwhile)");
                    tokio::select! {
                        _ = tokio::time::sleep(RECONNECT) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            if let Err(e) = listener.listen_all([Topic::Config.channel(), Topic::Kick.channel()]).await {
                warn!(error = %e, "cannot LISTEN; retrying");
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
            info!("listening for other nodes' changes");
            // Whatever changed before the listener was up may have been missed.
            self.config_changed_elsewhere();
            loop {
                let next = tokio::select! {
                    n = listener.try_recv() => n,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    Ok(Some(n)) if n.channel() == Topic::Config.channel() => self.config_changed_elsewhere(),
                    Ok(Some(n)) if n.channel() == Topic::Kick.channel() => on_kick(n.payload()),
                    Ok(Some(_)) => {}
                    // The connection was lost: notifications in between are gone.
                    Ok(None) => self.config_changed_elsewhere(),
                    Err(e) => {
                        warn!(error = %e, "the notification listener failed; reconnecting");
                        self.config_changed_elsewhere();
                        tokio::time::sleep(RECONNECT).await;
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::meta::both::Db;
    use crate::meta::lease::LeaseRequest;
    use crate::meta::notify::PublishNotify;

    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{what} never happened");
    }

    #[tokio::test]
    #[ignore = "needs LIVECHANNEL_TEST_POSTGRES (a PostgreSQL URL)"]
    async fn another_nodes_configuration_change_and_kick_reach_the_listener() {
        let db = Db::new(true).await;
        let (here, there) = (db.open().await, db.open().await);
        let kicks: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = CancellationToken::new();
        let seen = Arc::clone(&kicks);
        let listener =
            tokio::spawn(here.clone().listen(move |n| seen.lock().unwrap().push(n.to_owned()), stop.clone()));
        // Connected: the listener marks the cache stale once on connecting.
        let start = here.config_generation();
        eventually("the listener connected", || here.config_generation() > start).await;
        let before = here.config_generation();
        let n = PublishNotify {
            domain: "live".into(),
            url: "http://192.0.2.1/h".into(),
            auth_sign_key: String::new(),
            call_back_area: String::new(),
        };
        there.put_publish_notify("p1", "live", &n).await.unwrap();
        eventually("the change reached the other handle", || here.config_generation() > before).await;

        let req = LeaseRequest {
            bucket: "live",
            channel: "k",
            node_id: "node-x",
            holder: "node-x/1/1",
            remote_addr: "192.0.2.1:1",
            user_args: "",
            since: SystemTime::now(),
            lease: Duration::from_secs(60),
        };
        there.claim_lease(&req).await.unwrap();
        assert_eq!(there.kick_lease("live", "k").await.unwrap().as_deref(), Some("node-x"));
        eventually("the kick reached the listener", || kicks.lock().unwrap().as_slice() == ["node-x"]).await;
        stop.cancel();
        listener.await.unwrap();
    }
}
