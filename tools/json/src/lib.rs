//! JSON utilities: query with a JSON Pointer, reformat, apply a merge patch.

use airlock_sdk::{Json, Tool, ToolError, Toolbox, export_tools, serde_json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize, JsonSchema)]
struct QueryArgs {
    /// The JSON document to query.
    document: Value,
    /// An RFC 6901 JSON Pointer, for example `/items/0/name`. The empty string selects the
    /// whole document.
    pointer: String,
}

/// Structured results are objects (clients before MCP 2026-07-28 accept nothing else), so the
/// selected value is wrapped.
#[derive(Serialize, JsonSchema)]
struct Selected {
    value: Value,
}

fn query(args: QueryArgs) -> Result<Json<Selected>, ToolError> {
    if !args.pointer.is_empty() && !args.pointer.starts_with('/') {
        return Err(ToolError::invalid(
            "a JSON Pointer is empty or starts with `/`",
        ));
    }
    args.document
        .pointer(&args.pointer)
        .cloned()
        .map(|value| Json(Selected { value }))
        .ok_or_else(|| ToolError::failed(format!("nothing at pointer `{}`", args.pointer)))
}

#[derive(Deserialize, JsonSchema)]
struct FormatArgs {
    /// JSON text to check and reformat.
    text: String,
    /// `true` for one line, `false` (default) for indented output.
    #[serde(default)]
    compact: bool,
}

fn format(args: FormatArgs) -> Result<String, ToolError> {
    let value: Value = serde_json::from_str(&args.text)
        .map_err(|e| ToolError::failed(format!("not valid JSON: {e}")))?;
    let out = if args.compact {
        serde_json::to_string(&value)
    } else {
        serde_json::to_string_pretty(&value)
    };
    out.map_err(|e| ToolError::failed(e.to_string()))
}

#[derive(Deserialize, JsonSchema)]
struct MergeArgs {
    /// The document to patch.
    document: Value,
    /// An RFC 7396 JSON Merge Patch: objects merge, `null` removes a member, anything else replaces.
    patch: Value,
}

fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(members) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let map = target.as_object_mut().expect("made an object above");
            for (key, value) in members {
                if value.is_null() {
                    map.remove(&key);
                } else {
                    merge(map.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other,
    }
}

#[derive(Serialize, JsonSchema)]
struct Patched {
    document: Value,
}

fn merge_patch(args: MergeArgs) -> Result<Json<Patched>, ToolError> {
    let mut document = args.document;
    merge(&mut document, args.patch);
    Ok(Json(Patched { document }))
}

fn toolbox() -> Toolbox {
    Toolbox::new()
        .with(
            Tool::new(
                "json_query",
                "Select a value from a JSON document with an RFC 6901 JSON Pointer.",
                query,
            )
            .title("Query JSON")
            .read_only()
            .idempotent()
            .closed_world(),
        )
        .with(
            Tool::new(
                "json_format",
                "Validate JSON text and reformat it, indented or compact.",
                format,
            )
            .title("Format JSON")
            .read_only()
            .idempotent()
            .closed_world(),
        )
        .with(
            Tool::new(
                "json_merge_patch",
                "Apply an RFC 7396 JSON Merge Patch to a document.",
                merge_patch,
            )
            .title("Merge-patch JSON")
            .read_only()
            .idempotent()
            .closed_world(),
        )
}

export_tools!(toolbox());
