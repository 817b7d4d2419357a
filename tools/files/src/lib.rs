//! Files in the directories the operator granted: list, read, write, move, search, delete.
//!
//! The tool sees only its grants (WASI preopens such as `/reports`); every path is checked by
//! the host, so an error here names what the host refused.

use airlock_sdk::{Json, Tool, ToolError, Toolbox, export_tools};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Longest file `files_read` returns by default.
const DEFAULT_MAX_BYTES: usize = 64 * 1024;

fn io_err(op: &str, path: &Path, e: std::io::Error) -> ToolError {
    let why = match e.kind() {
        ErrorKind::NotFound => "not found (or outside the granted directories)".to_owned(),
        ErrorKind::PermissionDenied => "permission denied by the host".to_owned(),
        _ => e.to_string(),
    };
    ToolError::failed(format!("cannot {op} {}: {why}", path.display()))
}

#[derive(Deserialize, JsonSchema)]
struct PathArgs {
    /// Absolute path inside a granted directory, for example `/reports`.
    path: PathBuf,
}

#[derive(Serialize, JsonSchema)]
struct Entry {
    name: String,
    kind: &'static str,
    bytes: u64,
}

#[derive(Serialize, JsonSchema)]
struct Listing {
    entries: Vec<Entry>,
}

fn list(args: PathArgs) -> Result<Json<Listing>, ToolError> {
    let p = &args.path;
    let mut entries = Vec::new();
    for e in std::fs::read_dir(p).map_err(|e| io_err("list", p, e))? {
        let e = e.map_err(|e| io_err("list", p, e))?;
        let meta = e
            .metadata()
            .map_err(|err| io_err("inspect", &e.path(), err))?;
        let kind = if meta.is_dir() {
            "dir"
        } else if meta.is_file() {
            "file"
        } else {
            "other"
        };
        entries.push(Entry {
            name: e.file_name().to_string_lossy().into_owned(),
            kind,
            bytes: meta.len(),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(Listing { entries }))
}

#[derive(Deserialize, JsonSchema)]
struct ReadArgs {
    /// Absolute path of a file inside a granted directory.
    path: PathBuf,
    /// Return at most this many bytes (default 65536).
    max_bytes: Option<usize>,
}

fn read(args: ReadArgs) -> Result<String, ToolError> {
    let p = &args.path;
    let bytes = std::fs::read(p).map_err(|e| io_err("read", p, e))?;
    let max = args.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    Ok(if bytes.len() > max {
        format!(
            "{text}\n[truncated: {} of {} bytes shown]",
            max,
            bytes.len()
        )
    } else {
        text
    })
}

#[derive(Deserialize, JsonSchema)]
struct WriteArgs {
    /// Absolute path of the file to write, inside a read-write grant.
    path: PathBuf,
    /// The text to write.
    content: String,
    /// Append instead of replacing.
    #[serde(default)]
    append: bool,
}

fn write(args: WriteArgs) -> Result<String, ToolError> {
    use std::io::Write;
    let p = &args.path;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(args.append)
        .truncate(!args.append)
        .open(p)
        .map_err(|e| io_err("write", p, e))?;
    f.write_all(args.content.as_bytes())
        .map_err(|e| io_err("write", p, e))?;
    Ok(format!(
        "wrote {} bytes to {}",
        args.content.len(),
        p.display()
    ))
}

#[derive(Deserialize, JsonSchema)]
struct MoveArgs {
    /// Existing file or directory.
    from: PathBuf,
    /// New path, in the same read-write grant.
    to: PathBuf,
}

fn rename(args: MoveArgs) -> Result<String, ToolError> {
    std::fs::rename(&args.from, &args.to).map_err(|e| io_err("move", &args.from, e))?;
    Ok(format!(
        "moved {} to {}",
        args.from.display(),
        args.to.display()
    ))
}

/// Deletes one file, after a person confirms: the check comes before the only side effect,
/// so that a re-run (MCP 2026-07-28 asks by ending the run and retrying it) deletes once.
fn delete(args: PathArgs) -> Result<String, ToolError> {
    let p = &args.path;
    let meta = std::fs::metadata(p).map_err(|e| io_err("delete", p, e))?;
    if !meta.is_file() {
        return Err(ToolError::invalid(format!(
            "{} is not a file; files_delete removes one file",
            p.display()
        )));
    }
    let prompt = format!("Delete {}?", p.display());
    let details = format!("{} bytes; this cannot be undone.", meta.len());
    if !airlock_sdk::confirm(&prompt, &details) {
        return Ok(format!("kept {}: deletion not confirmed", p.display()));
    }
    std::fs::remove_file(p).map_err(|e| io_err("delete", p, e))?;
    Ok(format!("deleted {}", p.display()))
}

#[derive(Deserialize, JsonSchema)]
struct SearchArgs {
    /// Directory to search, recursively.
    path: PathBuf,
    /// Literal text to look for in file contents.
    text: String,
    /// Stop after this many matches (default 100).
    max_results: Option<usize>,
}

#[derive(Serialize, JsonSchema)]
struct Match {
    path: String,
    line: usize,
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct Matches {
    matches: Vec<Match>,
    truncated: bool,
}

fn search(args: SearchArgs) -> Result<Json<Matches>, ToolError> {
    if args.text.is_empty() {
        return Err(ToolError::invalid("`text` must not be empty"));
    }
    let max = args.max_results.unwrap_or(100);
    let mut out = Matches {
        matches: Vec::new(),
        truncated: false,
    };
    let mut stack = vec![args.path.clone()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io_err("search", &dir, e))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            // Not following symlinks keeps the walk finite; the host refuses escapes anyway.
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                for (i, line) in text.lines().enumerate() {
                    if line.contains(&args.text) {
                        if out.matches.len() == max {
                            out.truncated = true;
                            return Ok(Json(out));
                        }
                        out.matches.push(Match {
                            path: path.display().to_string(),
                            line: i + 1,
                            text: line.to_owned(),
                        });
                    }
                }
            }
        }
    }
    Ok(Json(out))
}

fn toolbox() -> Toolbox {
    Toolbox::new()
        .with(
            Tool::new(
                "files_list",
                "List a directory inside the granted directories.",
                list,
            )
            .output::<Listing>()
            .read_only()
            .closed_world(),
        )
        .with(
            Tool::new(
                "files_read",
                "Read a text file inside the granted directories.",
                read,
            )
            .read_only()
            .closed_world(),
        )
        .with(
            Tool::new(
                "files_write",
                "Write (or append to) a text file inside a read-write grant.",
                write,
            )
            .closed_world(),
        )
        .with(
            Tool::new(
                "files_move",
                "Move or rename a file inside a read-write grant.",
                rename,
            )
            .closed_world(),
        )
        .with(
            Tool::new(
                "files_delete",
                "Delete one file inside a read-write grant, after a person confirms it.",
                delete,
            )
            .idempotent()
            .closed_world(),
        )
        .with(
            Tool::new(
                "files_search",
                "Search file contents for a literal text, recursively.",
                search,
            )
            .output::<Matches>()
            .read_only()
            .closed_world(),
        )
}

export_tools!(toolbox());
