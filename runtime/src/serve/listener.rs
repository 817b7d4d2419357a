//! The HTTP listener, with every connection bounded before anyone is authenticated: connections
//! in total and per peer address (refused with 503 above the cap), the time to send a request's
//! headers (which on a keep-alive connection counts from the end of the previous response, so
//! it is the idle timeout too), and the time to send a request's body. A client that sends half
//! a request and waits holds a connection for the header timeout at most, and one address
//! cannot take more than its share (an IPv6 peer is its /64).

use crate::config::policy::FdNeed;
use crate::core::throttle::LogThrottle;
use crate::gate::client_cert::ClientCertificate;
use anyhow::Result;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The listener's limits (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// The listener's name in the metrics (`mcp`, `metrics`).
    pub name: &'static str,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
}

/// Connections open per peer address; a slot gives its place back when dropped.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

/// The address a peer is counted under: an IPv4 address (also written IPv4-mapped), or an
/// IPv6 address's /64. One host is usually given a whole /64, and can pick any address in it,
/// so counting exact IPv6 addresses would give it 2^64 shares.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl Peers {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let ip = peer_key(ip);
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Refusals are logged at most once a second (a flood of them must not flood the log).
#[derive(Default)]
struct RefusalLog(LogThrottle);

impl RefusalLog {
    fn note(&self, why: &str) {
        if let Some(n) = self.0.admit() {
            tracing::warn!(target: "airlock::http", refused = n, "connections refused: {why}");
        }
    }
}

/// Answer a refused connection with 503 and close it, without waiting on the client long. A
/// TLS listener's is closed at once: a plain-text answer would be noise to a TLS client, and
/// a handshake would cost what the refusal saves.
fn refuse(mut tcp: tokio::net::TcpStream, tls: bool, why: &'static str) {
    if tls {
        return;
    }
    tokio::spawn(async move {
        let body = format!("{why}; try again later\n");
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(1), tcp.write_all(answer.as_bytes())).await;
    });
}

/// Make sure the process may open what `need` says, raising its soft RLIMIT_NOFILE up to the
/// hard one if needed; otherwise the start stops (the caps could not be enforced: the process
/// would run out of descriptors before a call or the listener reached its cap).
pub fn ensure_fd_budget(need: &FdNeed) -> Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let total = need.total();
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= total {
        return Ok(());
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < total {
        anyhow::bail!(
            "this configuration needs {need}, but this process may open at most {hard} \
             (RLIMIT_NOFILE); lower those limits or raise RLIMIT_NOFILE"
        );
    }
    limit.current = Some(total);
    setrlimit(Resource::Nofile, limit)
        .map_err(|e| anyhow::anyhow!("cannot raise RLIMIT_NOFILE to {total}: {e}"))?;
    Ok(())
}

/// The TLS configuration a new connection gets (the one in force: a renewed certificate is
/// served from the next handshake on).
pub type TlsSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// Serve `app` on `listener` until `shutdown` fires, then let open connections finish (up to
/// a few seconds). With `tls`, every connection is a TLS one, its handshake within the header
/// timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ListenerLimits,
    tls: Option<TlsSource>,
    shutdown: CancellationToken,
) -> Result<()> {
    let body_timeout = limits.body_timeout;
    let app = app.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            next.run(request.map(|body| {
                axum::body::Body::new(Deadline {
                    inner: body,
                    sleep: Box::pin(tokio::time::sleep(body_timeout)),
                    after: body_timeout,
                })
            }))
        },
    ));
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(Peers::default());
    let refusals = RefusalLog::default();
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: the listener waits rather than spins.
                    tracing::warn!(target: "airlock::http", "cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let m = crate::core::metrics::metrics();
        let listener_label = crate::core::metrics::ListenerLabels {
            listener: limits.name,
        };
        let refused = |reason| {
            m.connections_refused
                .get_or_create(&crate::core::metrics::RefusedLabels {
                    listener: limits.name,
                    reason,
                })
                .inc();
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            refused("max_connections");
            refusals.note("the server's connection limit (max_connections) is reached");
            refuse(tcp, tls.is_some(), "too many connections to this server");
            continue;
        };
        let Some(slot) = peers.take(peer.ip(), limits.max_connections_per_peer) else {
            refused("max_connections_per_peer");
            refusals.note("a peer's connection limit (max_connections_per_peer) is reached");
            refuse(tcp, tls.is_some(), "too many connections from this address");
            continue;
        };
        // Small JSON-RPC responses must not wait for Nagle's algorithm (40 ms with delayed ACKs).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let app = app.clone();
        let shutdown = shutdown.clone();
        m.connections.get_or_create(&listener_label).inc();
        m.connections_open.get_or_create(&listener_label).inc();
        let tls = tls.as_ref().map(|config| config());
        tracker.spawn(async move {
            let _held = (permit, slot, OpenConnection(limits.name));
            match tls {
                None => serve_connection(tcp, app, None, limits, shutdown).await,
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    // A client that starts a handshake and stalls holds its slot no longer
                    // than one that sends half a request.
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            // The certificate the client showed (mutual TLS; rustls checked
                            // it), read once for every request on the connection.
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|leaf| Arc::new(ClientCertificate::from_der(leaf)));
                            serve_connection(stream, app, cert, limits, shutdown).await
                        }
                        // Counted, and logged at debug only: anyone can fail a handshake.
                        failed => {
                            let reason = match failed {
                                Ok(Err(e)) => {
                                    tracing::debug!(target: "airlock::http", peer = %peer, "TLS handshake failed: {e}");
                                    "tls_handshake"
                                }
                                _ => "tls_handshake_timeout",
                            };
                            crate::core::metrics::metrics()
                                .connections_refused
                                .get_or_create(&crate::core::metrics::RefusedLabels {
                                    listener: limits.name,
                                    reason,
                                })
                                .inc();
                        }
                    }
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    Ok(())
}

/// Serve HTTP/1.1 on one connection (plain or TLS) until it ends or `shutdown` fires. Each
/// request carries the connection's client certificate, if any, in its extensions.
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    client_cert: Option<Arc<ClientCertificate>>,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            if let Some(cert) = &client_cert {
                request.extensions_mut().insert(cert.clone());
            }
            tower::ServiceExt::oneshot(app.clone(), request)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
}

/// Counts an open connection in the metrics while it lives.
struct OpenConnection(&'static str);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        crate::core::metrics::metrics()
            .connections_open
            .get_or_create(&crate::core::metrics::ListenerLabels { listener: self.0 })
            .dec();
    }
}

/// A request body that fails once its deadline passes before it has all arrived.
struct Deadline {
    inner: axum::body::Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    after: Duration,
}

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            let after = self.after;
            return Poll::Ready(Some(Err(axum::Error::new(format!(
                "the request body did not arrive within {} s (http_body_timeout)",
                after.as_secs_f64()
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_slash_64_is_one_peer() {
        let peers = Arc::new(Peers::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:0:0:9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let first = peers.take(a, 2).expect("a first connection");
        let _second = peers.take(b, 2).expect("the same /64, second connection");
        assert!(
            peers.take(b, 2).is_none(),
            "a third from the /64 is over the cap"
        );
        assert!(
            peers.take(other, 2).is_some(),
            "another /64 has its own share"
        );
        drop(first);
        assert!(
            peers.take(a, 2).is_some(),
            "a slot given back is free again"
        );
        // IPv4, and IPv4 written IPv4-mapped, are one address.
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let _one = peers.take(v4, 1).expect("an IPv4 peer");
        assert!(peers.take(mapped, 1).is_none(), "the same address, mapped");
        assert_eq!(
            peer_key("192.0.2.8".parse().unwrap()),
            "192.0.2.8".parse::<IpAddr>().unwrap()
        );
    }
}
