//! Requests the host itself makes (not a tool's egress): the JWKS fetch, the content scanner.
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

/// Send `request` and read the answer's body (a non-2xx status is an error).
pub async fn send(request: HostRequest<'_>) -> Result<Vec<u8>, String> {
    use http_body_util::{BodyExt, Full, Limited};
    let uri: http::Uri = request.url.parse().map_err(|_| "not a URL".to_owned())?;
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
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let builder = http::Request::builder()
            .uri(path)
            .header(
                http::header::HOST,
                uri.authority().map_or("", |a| a.as_str()),
            )
            .header(http::header::ACCEPT, "application/json");
        let built = match request.json {
            None => builder
                .method(http::Method::GET)
                .body(Full::new(bytes::Bytes::new())),
            Some(body) => builder
                .method(http::Method::POST)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(bytes::Bytes::from(body))),
        }
        .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(built)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), request.max_answer_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(body.to_vec())
    };
    let after = request.timeout;
    tokio::time::timeout(after, work)
        .await
        .map_err(|_| format!("timed out after {} ms", after.as_millis()))?
}

trait AsyncIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AsyncIo for T {}
