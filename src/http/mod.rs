//! The HTTP listener, on hyper 1: transport only. It accepts connections, hands those that speak RTMP to
//! `rtmp`, applies the per-connection limits (header size, header read timeout) and graceful shutdown, and
//! passes every request to [`crate::api::route`].
//!
//! RTMP on this port: oss2's `sign_rtmp_url` on an IP endpoint points publishers at the HTTP port, so a
//! connection whose first byte is 0x03 (RTMP C0; HTTP starts with a method letter) goes to `rtmp`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::service::Context;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head we read (request line + headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The first byte of an RTMP handshake (C0: protocol version 3).
const RTMP_C0: u8 = 0x03;

pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    rtmp: Option<Arc<crate::rtmp::Context>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots =
        crate::slots::Slots::new(ctx.config.limits.max_http_connections, ctx.config.limits.max_http_connections_per_ip);
    let mut refused = 0u64;
    loop {
        let (stream, remote) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        // Over the limit the socket is closed at once: idle or trickling connections (each one costs a
        // file descriptor and a task) must not starve players and publishers.
        let slot = match slots.take(remote.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                refused += 1;
                // The first, then every 1000th: a flood would otherwise flood the log too.
                if refused == 1 || refused.is_multiple_of(1000) {
                    warn!(%remote, refused, ?full, limit = slots.max, per_address = slots.per_ip_max(), "HTTP connection refused: connection limit reached");
                }
                continue;
            }
        };
        let ctx2 = Arc::clone(&ctx);
        let rtmp = rtmp.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Some(rtmp) = rtmp {
                let mut first = [0u8; 1];
                let peeked = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await;
                match peeked {
                    Ok(Ok(1)) if first[0] == RTMP_C0 => {
                        // RTMP's own limits apply from here.
                        drop(slot);
                        crate::rtmp::accept(stream, remote, rtmp);
                        return;
                    }
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    _ => {}
                }
            }
            let service = hyper::service::service_fn(move |req| {
                let ctx = Arc::clone(&ctx2);
                async move { Ok::<_, Infallible>(crate::api::route(&ctx, req, remote).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let _slot = slot;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { debug!(%remote, error = %e, "HTTP connection error") },
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
