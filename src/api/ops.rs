//! What balancers and monitoring ask a node: `GET /healthz` (the process answers), `GET /readyz` (it can
//! take publishes and serve: database and object store reachable, not draining) and `GET /metrics`
//! (OpenMetrics text). Unauthenticated, like every health endpoint a balancer polls: they say nothing
//! about channels beyond counts.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use crate::reply::{Body, full, text};
use crate::service::Context;

/// How long `/readyz` waits for the database or the object store before it calls the node not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The paths served here. Bucket names are at least 3 characters of `[a-z0-9-]`, so a bucket may be
/// called `metrics`; its path-style listing would be shadowed, and OSS serves none anyway.
pub fn wants(method: &Method, path: &str, query: Option<&str>) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && query.is_none_or(str::is_empty)
        && matches!(path, "/healthz" | "/readyz" | "/metrics")
}

pub async fn handle(ctx: &Context, path: &str) -> Response<Body> {
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => ready(ctx).await,
        _ => metrics(ctx).await,
    }
}

async fn ready(ctx: &Context) -> Response<Body> {
    if ctx.cluster.is_draining() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "draining: this node takes no new publishes\n");
    }
    match tokio::time::timeout(PROBE_TIMEOUT, ctx.meta.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: the metadata database does not answer");
            return text(StatusCode::SERVICE_UNAVAILABLE, "not ready: the metadata database does not answer\n");
        }
        Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "not ready: the metadata database is too slow\n"),
    }
    match tokio::time::timeout(PROBE_TIMEOUT, ctx.store.reachable()).await {
        Ok(Ok(())) => text(StatusCode::OK, "ready\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: the object store does not answer");
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready: the object store does not answer\n")
        }
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: the object store is too slow\n"),
    }
}

async fn metrics(ctx: &Context) -> Response<Body> {
    let m = crate::metrics::metrics();
    m.live_publishes.set(i64::try_from(ctx.channels.live_count()).unwrap_or(i64::MAX));
    // The outbox is shared: every node reports the same depth. A database that does not answer
    // leaves the last value (the database histograms show why).
    if let Ok(Ok(n)) = tokio::time::timeout(PROBE_TIMEOUT, ctx.meta.pending_callbacks()).await {
        m.outbox_pending.set(n);
    }
    let mut resp = Response::new(full(Bytes::from(m.render())));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    resp
}
