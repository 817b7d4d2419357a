//! Network egress. Outgoing HTTP (`wasi:http/outgoing-handler`): every request a component makes
//! comes here and is checked against its network grants: scheme, host, port and method, then
//! every address the name resolves to. The host resolves names itself and connects to the
//! address it checked, so a name cannot be re-pointed between the check and the connection (DNS
//! rebinding). Redirects are new requests from the guest and are checked again. Secrets granted
//! as headers are set here, on the way out, so the component never holds them.
//!
//! Raw TCP (`wasi:sockets`) is checked by [`tcp_check`] against the TCP grants.

use crate::config::grants::{Grants, SecretUse, special_range};
use crate::config::policy::EgressLimits;
use crate::core::denial::{Denial, HandleKind, SocketUse};
use crate::core::redact::Redactor;
use crate::core::redact::Reflections;
use crate::core::units::{ByteSize, Span};
use crate::sandbox::live_grants::LiveGrants;
use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The per-call egress gate, installed as the call's `WasiHttpHooks`.
pub struct EgressGate {
    grants: LiveGrants,
    limits: EgressLimits,
    component: Arc<str>,
    denial: Arc<OnceLock<Denial>>,
    /// Hosts and methods in denials are the guest's text: secret values are taken out.
    redactor: Arc<Redactor>,
    shadow: bool,
    /// Requests of the call whose responses are still held (a connection each).
    in_flight: Arc<AtomicU32>,
    /// Request and response body bytes the host carried for the call (TLS, scrubbing, caps):
    /// host work the call's fuel pays for.
    carried: Arc<AtomicU64>,
    /// The call's W3C `traceparent`, set on every granted request (replacing the tool's own),
    /// while traces are exported.
    traceparent: Option<http::HeaderValue>,
}

/// One request of a call in flight, until its response (body included) is dropped.
/// Its body bytes, both ways, are counted in `carried`.
struct InFlight {
    count: Arc<AtomicU32>,
    carried: Arc<AtomicU64>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The first refusal of a call, shared by the HTTP gate and the socket check.
pub type DenialCell = Arc<OnceLock<Denial>>;

impl EgressGate {
    pub fn new(
        grants: LiveGrants,
        limits: EgressLimits,
        component: Arc<str>,
        denial: DenialCell,
        redactor: Arc<Redactor>,
        shadow: bool,
        traceparent: Option<String>,
    ) -> Self {
        EgressGate {
            traceparent: traceparent.and_then(|t| http::HeaderValue::from_str(&t).ok()),
            grants,
            // A shadow call sends no request body at all.
            limits: if shadow {
                EgressLimits {
                    max_request_bytes: ByteSize(0),
                    ..limits
                }
            } else {
                limits
            },
            component,
            denial,
            redactor,
            shadow,
            in_flight: Arc::default(),
            carried: Arc::default(),
        }
    }

    /// The call's grants as the operator's revocations leave them.
    pub fn grants(&self) -> &LiveGrants {
        &self.grants
    }

    /// The count of body bytes carried for the call (see the field).
    pub fn carried(&self) -> Arc<AtomicU64> {
        self.carried.clone()
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

/// The `socket_addr_check` of a call: TCP connections only to granted addresses, binds only the
/// implicit wildcard bind a connect makes, no listening, no UDP.
pub fn tcp_check(
    grants: LiveGrants,
    component: Arc<str>,
    denial: DenialCell,
    shadow: bool,
) -> impl Fn(SocketAddr, wasmtime_wasi::sockets::SocketAddrUse) -> CheckFuture + Send + Sync + 'static
{
    use wasmtime_wasi::sockets::SocketAddrUse;
    move |address, usage| {
        if shadow && matches!(usage, SocketAddrUse::TcpConnect) {
            let d = Denial::Shadow {
                what: "a TCP connection".into(),
                target: address.to_string(),
            };
            count_egress(&component, "none", "refused");
            record_denial(&denial, &component, d);
            return Box::pin(std::future::ready(false));
        }
        let (allowed, usage) = match usage {
            SocketAddrUse::TcpConnect => (grants.current().allows_tcp(address), SocketUse::Connect),
            SocketAddrUse::TcpBind => (
                address.ip().is_unspecified() && address.port() == 0,
                SocketUse::Bind,
            ),
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => (false, SocketUse::Listen),
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                (false, SocketUse::Udp)
            }
        };
        if !allowed {
            let target = address.to_string();
            let revoked = (usage == SocketUse::Connect)
                .then(|| grants.configured().tcp_grant(address))
                .flatten();
            let d = match revoked {
                Some(g) => Denial::Revoked {
                    grant: g.id.clone(),
                    target,
                },
                None => Denial::Socket { usage, target },
            };
            if usage == SocketUse::Connect {
                count_denied(&component, &d);
            }
            record_denial(&denial, &component, d);
        } else if usage == SocketUse::Connect {
            let current = grants.current();
            let grant = current.tcp_grant(address);
            count_egress(&component, grant.map_or("none", |g| &g.id), "allowed");
        }
        Box::pin(std::future::ready(allowed))
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

/// One outgoing request or connect of `component` in the metrics.
fn count_egress(component: &Arc<str>, grant: &str, outcome: &'static str) {
    crate::core::metrics::metrics()
        .egress
        .get_or_create(&crate::core::metrics::EgressLabels {
            component: component.clone(),
            grant: Arc::from(grant),
            outcome,
        })
        .inc();
}

/// A refused request or connect in the metrics: `revoked` with the grant an operator took
/// away, else `refused`.
fn count_denied(component: &Arc<str>, d: &Denial) {
    match d {
        Denial::Revoked { grant, .. } => count_egress(component, grant, "revoked"),
        _ => count_egress(component, "none", "refused"),
    }
}

/// Log a refusal of something `component` tried, and keep it if it is the call's first (which
/// then ends the call as blocked).
pub fn record_denial(denial: &OnceLock<Denial>, component: &str, d: Denial) {
    // Only the first is logged: it is the one that ends the call, and a guest that goes on
    // trying (each try refused) must not flood the log.
    if denial.set(d).is_ok()
        && let Some(d) = denial.get()
    {
        tracing::warn!(target: "airlock::policy", component, grant_kind = d.grant_kind(), target = d.target(), "{d}");
    }
}

/// A refused HTTP request: recorded, and the error wasi-http gives the guest.
fn refuse(denial: &OnceLock<Denial>, component: &str, d: Denial) -> Error {
    record_denial(denial, component, d);
    Error::HttpRequestDenied
}

/// A request the grants admit, before its name is resolved.
#[derive(Debug)]
pub struct Admitted {
    /// Indices in `Grants::net` of every grant covering the request.
    pub covering: Vec<usize>,
    pub https: bool,
    /// Lower case, without brackets or a trailing dot.
    pub host: String,
    pub port: u16,
}

/// `host:port` as denials show it.
fn target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The policy check of one request, without I/O: the network grant covering its scheme, host,
/// port and method, and the secret headers granted for its host, set on the request (after
/// the guest built it, so a header of the same name the guest set is replaced).
pub fn admit<B>(grants: &Grants, request: &mut http::Request<B>) -> Result<Admitted, Denial> {
    let uri = request.uri();
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // One textual form per IPv6 address, as grants store them.
    let host = match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => v6.to_string(),
        Err(_) => host,
    };
    // The userinfo itself is not echoed: it may be a credential.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Denial::Userinfo {
            target: target(&host, port),
        });
    }
    let method = request.method().as_str();
    let covering: Vec<usize> = grants
        .net
        .iter()
        .enumerate()
        .filter(|(_, g)| g.covers(https, &host, port, method))
        .map(|(i, _)| i)
        .collect();
    if covering.is_empty() {
        let method = if crate::config::grants::METHODS.contains(&method) {
            method.to_owned()
        } else {
            // The guest chose this text; it is not echoed.
            "a non-standard method".to_owned()
        };
        return Err(Denial::NotGranted {
            method,
            target: target(&host, port),
        });
    }
    for secret in &grants.secrets {
        if let SecretUse::Header {
            host: pattern,
            header,
            value,
        } = &secret.usage
            && pattern.matches(&host)
        {
            request.headers_mut().insert(header.clone(), value.clone());
            // An echo of the secret is scrubbed from the response; a compressed body would
            // hide it from that.
            request.headers_mut().insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static("identity"),
            );
            request.headers_mut().remove(http::header::TE);
        }
    }
    Ok(Admitted {
        covering,
        https,
        host,
        port,
    })
}

/// The revocation that refuses `request`, when the grants as configured would have covered it.
fn revoked<B>(configured: &Grants, request: &http::Request<B>) -> Option<Denial> {
    let mut probe = http::Request::new(());
    *probe.method_mut() = request.method().clone();
    *probe.uri_mut() = request.uri().clone();
    let admitted = admit(configured, &mut probe).ok()?;
    Some(Denial::Revoked {
        grant: configured.net[admitted.covering[0]].id.clone(),
        target: target(&admitted.host, admitted.port),
    })
}

/// The first of `addresses` (the resolved name) that one of the `covering` grants allows;
/// otherwise the first refused address and its range (an empty list is refused as the
/// unspecified address).
pub fn pick_address(
    grants: &Grants,
    covering: &[usize],
    addresses: &[SocketAddr],
) -> Result<SocketAddr, (IpAddr, &'static str)> {
    let allowed = |ip: IpAddr| covering.iter().any(|&i| grants.net[i].allows_address(ip));
    if let Some(ok) = addresses.iter().find(|a| allowed(a.ip())) {
        return Ok(*ok);
    }
    let first = addresses
        .first()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    Err((first, special_range(first).unwrap_or("non-public")))
}

impl WasiHttpHooks for EgressGate {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        if self.shadow && !matches!(request.method().as_str(), "GET" | "HEAD") {
            let method = request.method().as_str();
            let what = if crate::config::grants::METHODS.contains(&method) {
                format!("HTTP {method}")
            } else {
                "an HTTP request with a non-standard method".to_owned()
            };
            let uri = request.uri();
            let d = Denial::Shadow {
                what,
                target: target(uri.host().unwrap_or_default(), uri.port_u16().unwrap_or(0)),
            };
            count_egress(&self.component, "none", "refused");
            let e = refuse(&self.denial, &self.component, d.redacted(&self.redactor));
            return Box::new(async move { Err(e) });
        }
        let limit = self.limits.max_requests_in_flight;
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            let d = Denial::Handles {
                kind: HandleKind::HttpRequests,
                limit,
            };
            count_egress(&self.component, "none", "refused");
            let e = refuse(&self.denial, &self.component, d);
            return Box::new(async move { Err(e) });
        }
        let held = InFlight {
            count: self.in_flight.clone(),
            carried: self.carried.clone(),
        };
        // Looked up per request: a grant revoked while the call runs stops its next request.
        let grants = self.grants.current();
        let admitted = match admit(&grants, &mut request) {
            Ok(a) => {
                if let Some(t) = &self.traceparent {
                    request.headers_mut().insert("traceparent", t.clone());
                }
                a
            }
            Err(d) => {
                let d = revoked(self.grants.configured(), &request).unwrap_or(d);
                count_denied(&self.component, &d);
                let e = refuse(&self.denial, &self.component, d.redacted(&self.redactor));
                return Box::new(async move { Err(e) });
            }
        };
        let (denial, component, limits, redactor) = (
            self.denial.clone(),
            self.component.clone(),
            self.limits,
            self.redactor.clone(),
        );
        Box::new(async move {
            let Admitted {
                covering,
                https,
                host,
                port,
            } = admitted;
            let grant = &grants.net[covering[0]].id;
            let addresses = resolve(&host, port, limits.timeout)
                .await
                .inspect_err(|_| count_egress(&component, grant, "failed"))?;
            let address = match pick_address(&grants, &covering, &addresses) {
                Ok(a) => a,
                Err((address, range)) => {
                    let d = Denial::Address {
                        target: target(&host, port),
                        address,
                        range,
                    };
                    count_egress(&component, grant, "refused");
                    return Err(refuse(&denial, &component, d.redacted(&redactor)));
                }
            };
            tracing::debug!(target: "airlock::egress", %component, %grant, %address, "egress allowed");
            let sent = send(
                address,
                https,
                &host,
                request,
                limits,
                grants.reflections.clone(),
                held,
            )
            .await;
            count_egress(
                &component,
                grant,
                if sent.is_ok() { "completed" } else { "failed" },
            );
            sent
        })
    }
}

/// The addresses of `host` (itself when it is an IP literal), resolved by the host.
async fn resolve(host: &str, port: u16, timeout: Span) -> Result<Vec<SocketAddr>, Error> {
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(timeout.0, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Error::DnsTimeout)?
            .map_err(|e| Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    Ok(addresses)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Connect to the checked `address` (TLS verified against `host`), send, and return the
/// response with its body capped and the injected secrets' `reflections` scrubbed from it.
async fn send(
    address: SocketAddr,
    https: bool,
    host: &str,
    mut request: http::Request<WasiBody>,
    limits: EgressLimits,
    reflections: Option<Arc<Reflections>>,
    held: InFlight,
) -> SendResult {
    let carried = held.carried.clone();
    let wait = limits.timeout.0;
    let tcp = tokio::time::timeout(wait, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
            _ => Error::Connect(e),
        })?;
    let io: Box<dyn Io> = if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(Error::InvalidDnsNameError)?;
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        let stream = tokio::time::timeout(wait, connector.connect(name, tcp))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = tokio::time::timeout(
        wait,
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // Origin-form on the wire: the authority travels in the Host header.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let limit = limits.max_request_bytes.bytes();
    let request = request
        .map(|b| Capped::new(b, limit, Error::HttpRequestBodySize, carried.clone()).boxed_unsync());
    // The connection does the I/O: drive it while waiting for the response head, then leave it
    // to the worker future wasi-http polls alongside the body.
    let mut connection = Box::pin(connection);
    let mut connection_done = false;
    let send = sender.send_request(request);
    tokio::pin!(send);
    let response = tokio::time::timeout(wait, async {
        loop {
            tokio::select! {
                r = &mut send => break r.map_err(Error::from),
                r = &mut connection, if !connection_done => {
                    connection_done = true;
                    r.map_err(Error::from)?;
                }
            }
        }
    })
    .await
    .map_err(|_| Error::ConnectionReadTimeout)??;
    let limit = limits.max_response_bytes.bytes();
    let mut response = response.map(|b| {
        let mut capped = Capped::new(
            b.map_err(Error::from),
            limit,
            Error::HttpResponseBodySize,
            carried,
        );
        capped.held = Some(held);
        match &reflections {
            Some(r) => Scrubbed::new(capped, r.clone()).boxed_unsync(),
            None => capped.boxed_unsync(),
        }
    });
    if let Some(r) = &reflections {
        // A body the guest would decode itself cannot be scrubbed: refused, whatever the
        // server chose to send despite `Accept-Encoding: identity`.
        let coded = |name: http::header::HeaderName, allowed: &[&str]| {
            response.headers().get_all(name).iter().any(|v| {
                v.to_str().map_or(true, |v| {
                    v.split(',')
                        .map(|c| c.trim().to_ascii_lowercase())
                        .any(|c| !c.is_empty() && !allowed.contains(&c.as_str()))
                })
            })
        };
        if coded(http::header::CONTENT_ENCODING, &["identity"])
            || coded(http::header::TRANSFER_ENCODING, &["chunked", "identity"])
        {
            return Err(Error::HttpResponseContentCoding(Some(
                "a response to a request carrying an injected secret must not be encoded".into(),
            )));
        }
        scrub_headers(response.headers_mut(), r);
        // Scrubbing changes the body's length.
        response.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    let worker = async move {
        if connection_done {
            Ok(())
        } else {
            connection.await.map_err(Error::from)
        }
    };
    Ok((response, Box::new(worker)))
}

/// Response headers with every reflection of an injected secret replaced.
fn scrub_headers(headers: &mut http::HeaderMap, reflections: &Reflections) {
    for value in headers.values_mut() {
        if let std::borrow::Cow::Owned(clean) = reflections.scrub(value.as_bytes())
            && let Ok(v) = http::HeaderValue::from_bytes(&clean)
        {
            *value = v;
        }
    }
}

/// A response body with every reflection of an injected secret replaced, across frame
/// boundaries: the bytes that could begin a match are held back until the next frame (or the
/// end) decides.
struct Scrubbed<B> {
    inner: B,
    reflections: Arc<Reflections>,
    carry: Vec<u8>,
    /// Trailers that arrived while bytes were held back: sent after them.
    trailers: Option<http::HeaderMap>,
    done: bool,
}

impl<B> Scrubbed<B> {
    fn new(inner: B, reflections: Arc<Reflections>) -> Self {
        Scrubbed {
            inner,
            reflections,
            carry: Vec::new(),
            trailers: None,
            done: false,
        }
    }

    /// The held-back bytes, scrubbed, as a frame.
    fn flush(&mut self) -> Frame<Bytes> {
        let held = std::mem::take(&mut self.carry);
        Frame::data(Bytes::from(self.reflections.scrub(&held).into_owned()))
    }
}

impl<B: Body<Data = Bytes, Error = Error> + Unpin> Body for Scrubbed<B> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            if self.done {
                if !self.carry.is_empty() {
                    return Poll::Ready(Some(Ok(self.flush())));
                }
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    continue;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    // Trailers end the body: what is held back goes first.
                    self.trailers = frame.into_trailers().ok().map(|mut t| {
                        scrub_headers(&mut t, &self.reflections);
                        t
                    });
                    self.done = true;
                    continue;
                }
            };
            let mut buffer = std::mem::take(&mut self.carry);
            buffer.extend_from_slice(&data);
            let end = self.reflections.safe_end(&buffer);
            self.carry = buffer.split_off(end);
            if buffer.is_empty() {
                continue;
            }
            let clean = Bytes::from(self.reflections.scrub(&buffer).into_owned());
            return Poll::Ready(Some(Ok(Frame::data(clean))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.carry.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // Scrubbing changes the length.
        http_body::SizeHint::default()
    }
}

/// A body that fails once more than `limit` bytes have passed, counting what passes as the
/// call's host work.
struct Capped<B> {
    inner: B,
    /// The request this is the response of counts as in flight until the body is dropped.
    held: Option<InFlight>,
    left: u64,
    limit: u64,
    too_large: fn(Option<u64>) -> Error,
    carried: Arc<AtomicU64>,
}

impl<B> Capped<B> {
    fn new(
        inner: B,
        limit: u64,
        too_large: fn(Option<u64>) -> Error,
        carried: Arc<AtomicU64>,
    ) -> Self {
        Capped {
            inner,
            held: None,
            left: limit,
            limit,
            too_large,
            carried,
        }
    }
}

impl<B: Body<Data = Bytes, Error = Error> + Unpin> Body for Capped<B> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            if n > self.left {
                return Poll::Ready(Some(Err((self.too_large)(Some(self.limit)))));
            }
            self.left -= n;
            self.carried.fetch_add(n, Ordering::Relaxed);
        }
        polled
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
    use crate::config::secrets::SecretStore;

    #[test]
    fn denials_never_echo_a_secret_the_guest_put_in_the_request() {
        let mut store = SecretStore::default();
        store.insert("TOKEN", "tok-0123456789".into()).unwrap();
        let grants = Grants::default();
        let mut request = http::Request::builder()
            .method("TRACE")
            .uri("https://tok-0123456789.evil.example/")
            .body(())
            .unwrap();
        let d = admit(&grants, &mut request)
            .unwrap_err()
            .redacted(&store.redactor());
        assert_eq!(
            d.to_string(),
            "network egress to [REDACTED].evil.example:443 (a non-standard method) is not granted"
        );
    }
}
