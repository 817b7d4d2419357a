//! Requests the host itself makes (not a tool's egress): the JWKS fetch, the content scanner,
//! the `[notify]` webhook, trace exports.
//! One connection per request, HTTP/1.1, TLS with the public roots for `https://`, a deadline
//! over the whole exchange and a cap on the answer.

use std::time::Duration;

/// A request the host sends.
pub struct HostRequest<'a> {
    pub url: &'a str,
    /// `None`: a GET; `Some(json)`: a POST of that JSON.
    pub json: Option<Vec<u8>>,
    pub timeout: Duration,
    /// The longest answer body read; a longer one is an error.
    pub max_answer_bytes: usize,
}

/// A URL's scheme and host, for log lines (its path and query may carry a token); `unknown`
/// for text that is not a URL.
pub fn shown_origin(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?)))
        .unwrap_or_else(|| "unknown".into())
}

/// Send `request` and read the answer's body (a non-2xx status is an error).
pub async fn send(request: HostRequest<'_>) -> Result<Vec<u8>, String> {
    let uri: http::Uri = request.url.parse().map_err(|_| "not a URL".to_owned())?;
    let builder = http::Request::builder()
        .uri(uri)
        .header(http::header::ACCEPT, "application/json");
    let built = match request.json {
        None => builder.method(http::Method::GET).body(bytes::Bytes::new()),
        Some(body) => builder
            .method(http::Method::POST)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes::Bytes::from(body)),
    }
    .map_err(|e| e.to_string())?;
    let response = exchange(built, request.timeout, request.max_answer_bytes).await?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    Ok(response.into_body().to_vec())
}

/// Send `request` (its URI absolute: `http://` or `https://`) over a connection of its own
/// and read the whole answer, whatever its status: the exchange within `timeout`, the body at
/// most `max_answer_bytes`.
pub async fn exchange(
    request: http::Request<bytes::Bytes>,
    timeout: Duration,
    max_answer_bytes: usize,
) -> Result<http::Response<bytes::Bytes>, String> {
    use http_body_util::{BodyExt, Full, Limited};
    let (mut parts, body) = request.into_parts();
    let uri = parts.uri.clone();
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let io: Box<dyn AsyncIo> = if https {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(crate::sandbox::egress::tls_config())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        // HTTP/1.1 sends the path (origin form) and names the host in its own header.
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| "not a URL".to_owned())?;
        let authority = uri.authority().map_or("", |a| a.as_str());
        parts.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(authority).map_err(|e| e.to_string())?,
        );
        let response = sender
            .send_request(http::Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(|e| e.to_string())?;
        let (head, body) = response.into_parts();
        let body = Limited::new(body, max_answer_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(http::Response::from_parts(head, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("timed out after {} ms", timeout.as_millis()))?
}

trait AsyncIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AsyncIo for T {}
