//! Internal documentation as MCP resources and prompts: the files under the `/docs` grant
//! (an `fs` grant with `guest = "/docs"`, read-only is enough) are the resources
//! `docs:///<path>`, with completion of paths; the prompts `summarize_doc` and
//! `follow_runbook` put a document in front of the model; the tool `docs_search` finds lines.

use airlock_sdk::{
    Content, Contents, Json, Prompt, PromptOutput, Resource, ResourceTemplate, Tool, ToolError,
    Toolbox, export_tools,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the operator's grant puts the documents.
const ROOT: &str = "/docs";
/// Largest document served (the host's output limit applies too).
const MAX_DOC_BYTES: u64 = 1024 * 1024;
/// Most files `docs://index` and a search look at.
const MAX_FILES: usize = 2_000;

/// The file of `docs:///<path>`: plain relative segments only.
fn file_of(path: &str) -> Result<PathBuf, ToolError> {
    let relative = Path::new(path.trim_start_matches('/'));
    let plain = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if path.is_empty() || !plain {
        return Err(ToolError::invalid(format!(
            "\"{path}\" is not a document path (plain segments below {ROOT})"
        )));
    }
    Ok(Path::new(ROOT).join(relative))
}

fn mime_of(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("md") => "text/markdown",
        Some("txt") | Some("log") => "text/plain",
        Some("json") => "application/json",
        Some("toml") => "application/toml",
        Some("yaml") | Some("yml") => "application/yaml",
        Some("html") => "text/html",
        Some("png") => "image/png",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn read_doc(uri: &str, path: &str) -> Result<Vec<Contents>, ToolError> {
    let file = file_of(path)?;
    let meta =
        std::fs::metadata(&file).map_err(|_| ToolError::invalid(format!("no document {path}")))?;
    if !meta.is_file() {
        return Err(ToolError::invalid(format!("{path} is not a document")));
    }
    if meta.len() > MAX_DOC_BYTES {
        return Err(ToolError::failed(format!(
            "{path} is {} bytes, more than the {MAX_DOC_BYTES} served",
            meta.len()
        )));
    }
    let bytes = std::fs::read(&file).map_err(|e| ToolError::failed(format!("{path}: {e}")))?;
    let mime = mime_of(&file);
    Ok(vec![match String::from_utf8(bytes) {
        Ok(text) => Contents::text(uri, text).mime(mime),
        Err(e) => Contents::blob(uri, e.into_bytes(), mime),
    }])
}

/// Every document below the root, as relative paths, sorted (at most [`MAX_FILES`]).
fn all_documents() -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::from(ROOT)];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if found.len() >= MAX_FILES {
                break;
            }
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(t) if t.is_file() => {
                    if let Ok(rel) = path.strip_prefix(ROOT) {
                        found.push(rel.to_string_lossy().into_owned());
                    }
                }
                _ => {}
            }
        }
    }
    found.sort();
    found
}

fn complete_path(value: &str) -> Vec<String> {
    all_documents()
        .into_iter()
        .filter(|p| p.starts_with(value.trim_start_matches('/')))
        .take(100)
        .collect()
}

#[derive(Deserialize, JsonSchema)]
struct Search {
    /// Text to find (case-insensitive).
    query: String,
    /// Most matching lines to return (default 50).
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Serialize, JsonSchema)]
struct Hit {
    /// The document's URI, readable as a resource.
    uri: String,
    line: usize,
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct Hits {
    hits: Vec<Hit>,
}

fn search(args: Search) -> Result<Json<Hits>, ToolError> {
    let query = args.query.to_lowercase();
    if query.trim().is_empty() {
        return Err(ToolError::invalid("`query` must not be blank"));
    }
    let limit = args.limit.unwrap_or(50).min(500) as usize;
    let mut hits = Vec::new();
    for doc in all_documents() {
        let Ok(file) = file_of(&doc) else { continue };
        let small = std::fs::metadata(&file).is_ok_and(|m| m.len() <= MAX_DOC_BYTES);
        let Some(text) = small.then(|| std::fs::read_to_string(&file).ok()).flatten() else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if line.to_lowercase().contains(&query) {
                hits.push(Hit {
                    uri: format!("docs:///{doc}"),
                    line: i + 1,
                    text: line.chars().take(200).collect(),
                });
                if hits.len() >= limit {
                    return Ok(Json(Hits { hits }));
                }
            }
        }
    }
    Ok(Json(Hits { hits }))
}

/// A document embedded in a prompt message.
fn embedded(path: &str) -> Result<Content, ToolError> {
    let uri = format!("docs:///{}", path.trim_start_matches('/'));
    let file = file_of(path)?;
    let text = std::fs::read_to_string(&file)
        .map_err(|_| ToolError::invalid(format!("no text document {path}")))?;
    Ok(Content::TextResource {
        uri,
        mime_type: Some(mime_of(&file).to_owned()),
        text,
    })
}

fn toolbox() -> Toolbox {
    Toolbox::new()
        .with(
            Tool::new("docs_search", "Find lines in the documents that contain a text", search)
                .read_only()
                .closed_world()
                .output::<Hits>(),
        )
        .resource(
            Resource::new("docs://index", "Document index", || {
                let list = all_documents()
                    .iter()
                    .map(|d| format!("- docs:///{d}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(vec![Contents::text("docs://index", list).mime("text/markdown")])
            })
            .description("Every document, one URI per line")
            .mime("text/markdown"),
        )
        .template(
            ResourceTemplate::new("docs:///{+path}", "Document", |uri, vars| {
                read_doc(uri, vars.get("path").unwrap_or_default())
            })
            .description("A document below the docs grant, by its path")
            .complete_with(|_, value, _| complete_path(value)),
        )
        .prompt(
            Prompt::new("summarize_doc", "Summarize a document for a newcomer", |args| {
                Ok(PromptOutput::new()
                    .user(embedded(args.require("path")?)?)
                    .user_text("Summarize the document above in five bullet points for someone new to the team."))
            })
            .argument("path", "The document's path, for example runbooks/deploy.md", true)
            .complete_with(|_, value, _| complete_path(value)),
        )
        .prompt(
            Prompt::new("follow_runbook", "Walk through a runbook step by step", |args| {
                let service = args.get("service").unwrap_or("the service");
                Ok(PromptOutput::new()
                    .user(embedded(args.require("path")?)?)
                    .user_text(format!(
                        "Walk me through this runbook for {service}, one step at a time. Before a step that changes anything, tell me what it will change and wait for my go-ahead."
                    )))
            })
            .argument("path", "The runbook's path", true)
            .argument("service", "The service it is run for", false)
            .complete_with(|argument, value, _| {
                if argument == "path" { complete_path(value) } else { Vec::new() }
            }),
        )
}

export_tools!(toolbox());
