//! The `[metrics]` listener: `GET /metrics` answers the process's metrics as OpenMetrics text
//! (what Prometheus scrapes), without authentication, on an address of its own (not the MCP
//! listener's). Gauges of state (calls in flight, approvals waiting, overrides, sessions, the
//! audit log's health, readiness) are read at each scrape; everything else is counted as it
//! happens ([`crate::core::metrics`]).

use crate::config::metrics::METRICS_MAX_CONNECTIONS;
use crate::control::live::Live;
use crate::core::metrics::{CONTENT_TYPE, KindLabels, encode, metrics};
use crate::serve::listener::ListenerLimits;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Hook = Box<dyn Fn() + Send + Sync>;

/// Gauges read at each scrape by the parts of the server that hold their state (the HTTP
/// sessions).
static ON_SCRAPE: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// Run `hook` before every scrape.
pub fn on_scrape(hook: impl Fn() + Send + Sync + 'static) {
    ON_SCRAPE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(hook));
}

/// Bind the metrics listener (before serving: an address that cannot be bound stops the start).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "[metrics] listen = \"{addr}\": the metrics (tool names, outcomes, grants) are served \
             without authentication beyond this machine; keep the port firewalled to the scraper"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr} ([metrics] listen)"))?;
    let local = listener.local_addr()?;
    // Printed (not only logged) so scripts and tests can find an ephemeral port; at bind, so
    // that it comes before the MCP listener's line.
    // A closed stderr must not stop the server (eprintln! would panic on it).
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "airlock: serving metrics on http://{local}/metrics"
        );
    }
    tracing::info!(address = %local, "serving metrics");
    Ok(listener)
}

/// Serve `GET /metrics` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    live: Arc<Live>,
    shutdown: CancellationToken,
) -> Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            refresh(&live);
            std::future::ready(([(http::header::CONTENT_TYPE, CONTENT_TYPE)], encode()))
        }),
    );
    let limits = ListenerLimits {
        name: "metrics",
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        max_connections: METRICS_MAX_CONNECTIONS as usize,
        // One peer cannot hold every slot and lock the scraper out.
        max_connections_per_peer: 2,
    };
    crate::serve::listener::serve(listener, app, limits, None, shutdown)
        .await
        .context("the metrics listener failed")
}

/// Read the gauges of state.
fn refresh(live: &Live) {
    let m = metrics();
    let operator = live.operator();
    m.calls_in_flight.set(operator.running.len() as i64);
    m.approvals_waiting
        .set(operator.approvals.queue.len() as i64);
    let o = operator.overrides.current();
    let revoked: usize = o
        .revoked
        .values()
        .map(|r| r.grants.len() + r.secrets.len())
        .sum();
    for (kind, n) in [
        ("kill_all", usize::from(o.all)),
        ("killed_tools", o.tools.len()),
        ("killed_principals", o.principals.len()),
        ("killed_resources", o.resources.len()),
        ("killed_prompts", o.prompts.len()),
        ("revoked_grants", revoked),
    ] {
        m.overrides
            .get_or_create(&KindLabels { kind })
            .set(n as i64);
    }
    m.audit_healthy
        .set(i64::from(live.current().audit().healthy().is_ok()));
    m.ready.set(i64::from(live.not_ready().is_none()));
    for hook in ON_SCRAPE.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        hook();
    }
}
