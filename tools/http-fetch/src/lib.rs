//! Fetch a URL the operator granted: status, selected headers and the body as text, truncated.
//!
//! Requests go through `wasi:http`; the host checks each one (and each redirect, which this
//! tool follows as a new request) against the tool's network grants.

use airlock_sdk::{Json, Tool, ToolError, Toolbox, export_tools};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};

const MAX_REDIRECTS: usize = 5;
const SHOWN_HEADERS: [&str; 5] = ["content-type", "content-length", "location", "date", "etag"];

#[derive(Deserialize, JsonSchema)]
struct FetchArgs {
    /// `http://` or `https://` URL.
    url: String,
    /// `GET` (default) or `HEAD`.
    #[serde(default)]
    method: Option<String>,
    /// Return at most this many bytes of the body (default 65536).
    max_bytes: Option<usize>,
    /// Follow redirects (default true, at most 5).
    follow_redirects: Option<bool>,
    /// Also report every response header, not only the usual ones.
    #[serde(default)]
    all_headers: bool,
}

#[derive(Serialize, JsonSchema)]
struct Fetched {
    url: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    truncated: bool,
    redirects: Vec<String>,
}

struct Target {
    https: bool,
    authority: String,
    path: String,
}

fn parse(url: &str) -> Result<Target, ToolError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| ToolError::invalid(format!("not a URL: {url}")))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        other => return Err(ToolError::invalid(format!("unsupported scheme `{other}`"))),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    if authority.is_empty() {
        return Err(ToolError::invalid(format!("no host in {url}")));
    }
    Ok(Target {
        https,
        authority: authority.to_owned(),
        path,
    })
}

fn resolve(base: &Target, location: &str) -> String {
    if location.contains("://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!(
            "{}://{}{location}",
            if base.https { "https" } else { "http" },
            base.authority
        )
    } else {
        let dir = base.path.rsplit_once('/').map_or("", |(d, _)| d);
        format!(
            "{}://{}{dir}/{location}",
            if base.https { "https" } else { "http" },
            base.authority
        )
    }
}

fn send(t: &Target, method: &Method) -> Result<IncomingResponse, ToolError> {
    let req = OutgoingRequest::new(Fields::new());
    let set = |ok: Result<(), ()>, what: &str| {
        ok.map_err(|_| ToolError::invalid(format!("invalid {what}")))
    };
    set(req.set_method(method), "method")?;
    set(
        req.set_scheme(Some(if t.https {
            &Scheme::Https
        } else {
            &Scheme::Http
        })),
        "scheme",
    )?;
    set(req.set_authority(Some(&t.authority)), "host")?;
    set(req.set_path_with_query(Some(&t.path)), "path")?;
    let body = req
        .body()
        .map_err(|_| ToolError::failed("cannot open the request body"))?;
    let pending = outgoing_handler::handle(req, None).map_err(http_err)?;
    OutgoingBody::finish(body, None).map_err(http_err)?;
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(resp))) => Ok(resp),
        Some(Ok(Err(e))) => Err(http_err(e)),
        _ => Err(ToolError::failed("the response never arrived")),
    }
}

fn http_err(e: ErrorCode) -> ToolError {
    ToolError::failed(format!("request failed: {e:?}"))
}

fn read_body(resp: IncomingResponse, max: usize) -> Result<(Vec<u8>, bool), ToolError> {
    let body = resp
        .consume()
        .map_err(|_| ToolError::failed("cannot read the response body"))?;
    let stream = body
        .stream()
        .map_err(|_| ToolError::failed("cannot read the response body"))?;
    let mut out = Vec::new();
    let mut truncated = false;
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
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                return Err(ToolError::failed(format!(
                    "reading the body failed: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    Ok((out, truncated))
}

fn fetch(args: FetchArgs) -> Result<Json<Fetched>, ToolError> {
    let method = match args
        .method
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some(other) => {
            return Err(ToolError::invalid(format!(
                "method must be GET or HEAD, not {other}"
            )));
        }
    };
    let max = args.max_bytes.unwrap_or(64 * 1024);
    let mut url = args.url.clone();
    let mut redirects = Vec::new();
    loop {
        let target = parse(&url)?;
        let resp = send(&target, &method)?;
        let status = resp.status();
        let headers: Vec<(String, String)> = resp
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let location = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone());
        if (300..400).contains(&status)
            && args.follow_redirects.unwrap_or(true)
            && let Some(loc) = location
        {
            if redirects.len() == MAX_REDIRECTS {
                return Err(ToolError::failed(format!(
                    "more than {MAX_REDIRECTS} redirects"
                )));
            }
            url = resolve(&target, &loc);
            redirects.push(url.clone());
            continue;
        }
        let headers = headers
            .into_iter()
            .filter(|(k, _)| args.all_headers || SHOWN_HEADERS.contains(&k.as_str()))
            .collect();
        let (body, truncated) = read_body(resp, max)?;
        return Ok(Json(Fetched {
            url,
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            truncated,
            redirects,
        }));
    }
}

fn toolbox() -> Toolbox {
    Toolbox::new().with(
        Tool::new(
            "http_fetch",
            "Fetch a URL the operator allows: status, main headers and the body as text.",
            fetch,
        )
        .title("Fetch a URL")
        .output::<Fetched>()
        .read_only(),
    )
}

export_tools!(toolbox());
