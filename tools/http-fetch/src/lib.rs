//! Fetch a URL the operator granted: status, selected headers and the body as text, truncated.
//!
//! Requests go through the SDK's HTTP client (`wasi:http`); the host checks each one (and each
//! redirect, which this tool follows as a new request) against the tool's network grants.

use airlock_sdk::{Json, Tool, ToolError, Toolbox, export_tools, http};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// `location` (a redirect's target) as an absolute URL, relative to `base`.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{authority}{dir}/{location}")
    }
}

fn fetch(args: FetchArgs) -> Result<Json<Fetched>, ToolError> {
    let method = match args
        .method
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("GET") => http::Method::Get,
        Some("HEAD") => http::Method::Head,
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
        // Each redirect is a new request, which the host checks against the grants again.
        let resp = http::Request::new(method, url.clone())
            .max_response_bytes(max)
            .send()?;
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if (300..400).contains(&resp.status)
            && args.follow_redirects.unwrap_or(true)
            && let Some(location) = resp.header("location")
        {
            if redirects.len() == MAX_REDIRECTS {
                return Err(ToolError::failed(format!(
                    "more than {MAX_REDIRECTS} redirects"
                )));
            }
            url = resolve(&url, location);
            redirects.push(url.clone());
            continue;
        }
        let headers = headers
            .into_iter()
            .filter(|(k, _)| args.all_headers || SHOWN_HEADERS.contains(&k.as_str()))
            .collect();
        return Ok(Json(Fetched {
            url,
            status: resp.status,
            headers,
            body: resp.text(),
            truncated: resp.truncated,
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
