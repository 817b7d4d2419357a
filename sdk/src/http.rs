//! Outgoing HTTP through the host (`wasi:http`). The operator's `net` grants decide what a tool
//! may reach; a request no grant allows fails with [`HttpError::BlockedByPolicy`], and the
//! host then ends the call as `blocked_by_policy` whatever the tool does next. Redirects are
//! not followed: a redirect is a response like any other, and following it is a new request
//! the grants check again.
//!
//! ```ignore
//! use airlock_sdk::http::Request;
//!
//! let base = airlock_sdk::setting("base_url").unwrap_or("https://api.example".into());
//! let response = Request::get(format!("{base}/status")).header("accept", "application/json").send()?;
//! let status: Status = response.json()?;
//! ```

use crate::ToolError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Response bodies longer than this are cut unless [`Request::max_response_bytes`] says
/// otherwise (the host has its own cap, `max_response_bytes`, too).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host's policy refused it: no grant allows this destination (or method).
    BlockedByPolicy(String),
    /// The request cannot be sent as given (a malformed URL, header or method).
    InvalidRequest(String),
    /// It was sent, or tried, and failed: name resolution, connection, TLS, timeout.
    Failed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::BlockedByPolicy(m) => write!(f, "blocked by policy: {m}"),
            HttpError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            HttpError::Failed(m) => write!(f, "request failed: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for ToolError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::InvalidRequest(m) => ToolError::invalid(m),
            other => ToolError::failed(other.to_string()),
        }
    }
}

/// A request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    max_response_bytes: usize,
}

/// A request as it was sent (what [`crate::testing::TestHost::requests`] records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was longer than the request's `max_response_bytes` and was cut.
    pub truncated: bool,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::Failed(format!("the response is not the JSON expected: {e}")))
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `GET url`.
pub fn get(url: impl Into<String>) -> Result<Response, HttpError> {
    Request::get(url).send()
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Request::new(Method::Get, url)
    }

    pub fn post(url: impl Into<String>) -> Self {
        Request::new(Method::Post, url)
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// `value` as a JSON body, with `content-type: application/json`.
    pub fn json<T: Serialize>(self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| HttpError::InvalidRequest(format!("cannot serialise the body: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Keep at most `max` bytes of the response body (the rest is not read).
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Send it and read the response.
    pub fn send(self) -> Result<Response, HttpError> {
        let sent = SentRequest {
            method: self.method,
            url: self.url,
            headers: self.headers,
            body: self.body,
        };
        #[cfg(target_arch = "wasm32")]
        return wasi::send(sent, self.max_response_bytes);
        #[cfg(not(target_arch = "wasm32"))]
        {
            split_url(&sent.url)?;
            let max = self.max_response_bytes;
            crate::testing::send(sent).map(|mut r| {
                r.truncated = r.body.len() > max;
                r.body.truncate(max);
                r
            })
        }
    }
}

/// `scheme`, `authority` and `path?query` of an `http(s)://` URL.
fn split_url(url: &str) -> Result<(bool, &str, String), HttpError> {
    let invalid = |why: &str| HttpError::InvalidRequest(format!("{why}: {url}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("not a URL"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(invalid("only http and https URLs can be fetched")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(invalid("no host in the URL"));
    }
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok((https, authority, path))
}

#[cfg(target_arch = "wasm32")]
mod wasi {
    use super::*;
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, Method as WasiMethod, OutgoingBody, OutgoingRequest, Scheme,
    };
    use wasip2::io::streams::StreamError;

    fn error(e: ErrorCode) -> HttpError {
        match e {
            ErrorCode::HttpRequestDenied => {
                HttpError::BlockedByPolicy("the host's network grants do not allow it".into())
            }
            other => HttpError::Failed(format!("{other:?}")),
        }
    }

    pub(super) fn send(request: SentRequest, max: usize) -> Result<Response, HttpError> {
        let (https, authority, path) = split_url(&request.url)?;
        let headers = Fields::new();
        for (k, v) in &request.headers {
            headers
                .append(k, v.as_bytes())
                .map_err(|e| HttpError::InvalidRequest(format!("header {k}: {e:?}")))?;
        }
        let req = OutgoingRequest::new(headers);
        let method = match request.method {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Patch => WasiMethod::Patch,
            Method::Delete => WasiMethod::Delete,
        };
        let invalid = |what: &str| HttpError::InvalidRequest(format!("invalid {what}"));
        req.set_method(&method).map_err(|_| invalid("method"))?;
        req.set_scheme(Some(if https { &Scheme::Https } else { &Scheme::Http }))
            .map_err(|_| invalid("scheme"))?;
        req.set_authority(Some(authority))
            .map_err(|_| invalid("host"))?;
        req.set_path_with_query(Some(&path))
            .map_err(|_| invalid("path"))?;
        let body = req
            .body()
            .map_err(|_| HttpError::Failed("cannot open the request body".into()))?;
        let pending = outgoing_handler::handle(req, None).map_err(error)?;
        // A write fails when the request was refused or the server stopped reading: the
        // response (or its error code) below says which, so it is awaited all the same.
        let mut write_failed = None;
        if !request.body.is_empty() {
            let stream = body
                .write()
                .map_err(|_| HttpError::Failed("cannot write the request body".into()))?;
            for chunk in request.body.chunks(4096) {
                if let Err(e) = stream.blocking_write_and_flush(chunk) {
                    write_failed = Some(format!("writing the body: {e:?}"));
                    break;
                }
            }
            drop(stream);
        }
        if let Err(e) = OutgoingBody::finish(body, None)
            && write_failed.is_none()
        {
            return Err(error(e));
        }
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => return Err(error(e)),
            _ => {
                return Err(HttpError::Failed(
                    write_failed.unwrap_or_else(|| "the response never arrived".into()),
                ));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|_| HttpError::Failed("cannot read the response body".into()))?;
        let stream = incoming
            .stream()
            .map_err(|_| HttpError::Failed("cannot read the response body".into()))?;
        let (mut out, mut truncated) = (Vec::new(), false);
        loop {
            match stream.blocking_read(16 * 1024) {
                Ok(chunk) => {
                    let room = max - out.len();
                    if chunk.len() > room {
                        out.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    out.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Failed(format!(
                        "reading the body: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body: out,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_and_path() {
        assert_eq!(
            split_url("https://a.example:8443/x?y=1#f").unwrap(),
            (true, "a.example:8443", "/x?y=1".to_owned())
        );
        assert_eq!(
            split_url("http://a.example?q").unwrap(),
            (false, "a.example", "/?q".to_owned())
        );
        assert!(matches!(
            split_url("ftp://a.example/"),
            Err(HttpError::InvalidRequest(_))
        ));
        assert!(matches!(
            split_url("https:///x"),
            Err(HttpError::InvalidRequest(_))
        ));
    }
}
