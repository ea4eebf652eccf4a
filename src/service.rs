//! What every HTTP request handler shares: configuration, storage, metadata, the live registry, keys and
//! the callback notifier. A leaf of the control plane: `api` reads it, `server` builds it, and nothing in
//! it knows about sockets.

use std::sync::Arc;

use crate::auth::Keys;
use crate::channels::Channels;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::meta::Meta;
use crate::notify::Notifier;
use crate::storage::Store;

pub struct Context {
    pub config: Arc<Config>,
    pub store: Store,
    pub meta: Meta,
    pub channels: Arc<Channels>,
    /// Live publishes on every node: kicks and stats go through it.
    pub cluster: Arc<Cluster>,
    pub keys: Keys,
    /// Nonces of Aliyun-signed requests seen in the last 15 minutes (replays are refused).
    pub nonces: crate::auth::aliyun::Nonces,
    pub notifier: Notifier,
    /// `host[:port]` written into PublishUrls and PlayUrls.
    pub endpoint: String,
    /// The bound RTMP address (the console's publish settings name its port).
    pub rtmp_addr: std::net::SocketAddr,
}
