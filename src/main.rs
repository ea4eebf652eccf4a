//! The `livechannel` binary: parse arguments, load config, init logging, run until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use livechannel::config::{Config, Overrides};
use livechannel::server::Server;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (`_RJEM_MALLOC_CONF` in the environment still overrides them). By
/// default jemalloc purges freed pages only as later allocations pass by, so after a storage stall the
/// RSS stays near the peak; a background thread that purges dirty pages after 1 s and skips the lazy
/// "muzzy" stage brings it back near idle within seconds (BENCHMARKS.md, "Overload").
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// glibc malloc (the build without `jemalloc`) gets one arena, and a thread that hands freed pages back
/// every 5 s. One arena: with glibc's default of one per thread that allocates (the runtime's
/// workers, the writer threads, SQLite's), 200 publishers held 69-70 KiB of RSS each instead of 55-58
/// (BENCHMARKS.md, "Run 6"); the allocations are few (about two per RTMP message), so sharing one lock
/// costs nothing measurable. The trim: glibc keeps freed memory that is not at the top of the heap, so
/// after a storage stall the RSS would stay near its peak ("Overload"); `malloc_trim` returns every
/// whole free page. Not while media waits for storage, though: then the freed pages are taken again
/// at once, each fault zeroing a page (at 1000 streams with storage behind, 22 % of the server's
/// samples were `clear_page_erms` under the workers' copies and allocations); the trim after the
/// backlog drains returns the peak.
#[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    const TRIM_EVERY: Duration = Duration::from_secs(5);
    /// Media bytes waiting for storage above which a trim is skipped: a few seconds of a few hundred
    /// streams, far above what a node whose storage keeps up holds between two writes.
    const BACKLOG: i64 = 64 << 20;
    // SAFETY: mallopt only sets a parameter of the allocator, before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let trim = std::thread::Builder::new().name("livechannel-trim".to_owned()).spawn(|| {
        loop {
            std::thread::sleep(TRIM_EVERY);
            if livechannel::metrics::metrics().media_bytes_waiting.get() > BACKLOG {
                continue;
            }
            // SAFETY: malloc_trim takes the arena's lock like any allocation; it has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
    });
    if let Err(e) = trim {
        eprintln!("warning: cannot start the malloc trim thread: {e}");
    }
}

#[derive(Parser)]
#[command(name = "livechannel", version, about = "A live media server: RTMP in, keyframe-aligned HLS out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. With no config file: RTMP on 127.0.0.1:1935, HTTP on 127.0.0.1:8080, data in ./data,
    /// and an open bucket `live` that creates a channel on its first push.
    Serve {
        /// TOML config file (see fixtures/config/example.toml for every key). Flags override it.
        #[arg(long, env = "LIVECHANNEL_CONFIG")]
        config: Option<PathBuf>,
        /// Address for RTMP ingest; port 0 picks a free port (the bound address is logged).
        #[arg(long, env = "LIVECHANNEL_RTMP_LISTEN")]
        rtmp_listen: Option<SocketAddr>,
        /// Address for HTTP (HLS playback); port 0 picks a free port (the bound address is logged).
        #[arg(long, env = "LIVECHANNEL_HTTP_LISTEN")]
        http_listen: Option<SocketAddr>,
        /// Folder for segments, playlists and metadata.
        #[arg(long, env = "LIVECHANNEL_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// This node's id in a cluster (lease rows, push history, callbacks). Default: the host name.
        #[arg(long, env = "LIVECHANNEL_NODE_ID")]
        node_id: Option<String>,
        /// How other nodes and balancers reach this node, `host[:port]` (callbacks carry its host).
        #[arg(long, env = "LIVECHANNEL_NODE_ADDRESS")]
        node_address: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    #[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
    tune_malloc();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr, without a backtrace: an operator reads this, not a developer.
            eprintln!("error: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes in one line. Most of our errors already print their source in their own
/// message, so a cause whose text is already there is not repeated.
fn report(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(part.trim()) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(part.trim_end());
        }
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVECHANNEL_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written is dropped. tracing-subscriber would report it with
        // `eprintln!`, which panics when stderr itself cannot be written: with the log on a full disk,
        // every thread that logged died (the server at start, a storage writer thread at its first
        // "not stored" warning, a connection's task), on the very disk full it should ride out.
        .log_internal_errors(false)
        .init();
    let Command::Serve { config, rtmp_listen, http_listen, data_dir, node_id, node_address } = cli.command;
    let config =
        Config::load(config.as_deref(), Overrides { rtmp_listen, http_listen, data_dir, node_id, node_address })?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        wait_for_signal().await;
        // Out of the balancer first (readyz 503, publishes refused and ended), then stop.
        tracing::info!("stopping: draining, then flushing open segments");
        server.drain(Duration::from_secs(30)).await;
        server.shutdown(Duration::from_secs(30)).await;
        Ok(())
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        // SIGHUP (the terminal that ran `serve` closed) stops the server the same orderly way.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
            _ = hangup => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on {addr}: {source}")]
    struct Bind {
        addr: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn an_error_and_its_causes_are_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = anyhow::Error::new(Bind { addr: "127.0.0.1:1935", source: io });
        assert_eq!(report(&e), "cannot listen on 127.0.0.1:1935: address in use");
        // A context whose message does not name the cause keeps it.
        let e = anyhow::Error::new(std::io::Error::other("disk full")).context("starting the runtime");
        assert_eq!(report(&e), "starting the runtime: disk full");
    }
}
