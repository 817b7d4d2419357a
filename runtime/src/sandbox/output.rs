//! A tool's output, checked against the output limit and turned into an MCP result.

use crate::core::failure::CallFailure;
use crate::core::redact::Redactor;
use crate::core::units::ByteSize;
use airlock_host_api::{Content, ResourceBody, ToolOutput};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};

/// Bytes a content item costs beyond its data: its JSON envelope (`{"type":"text","text":…}`
/// and the like), so that many empty items are not free.
const ITEM_OVERHEAD: usize = 32;

/// Bytes of `out` as it will be sent: each item's data (binary base64-encoded), its envelope,
/// and the structured content.
fn size(out: &ToolOutput) -> usize {
    let base64 = |n: usize| n.div_ceil(3) * 4;
    let content: usize = out
        .content
        .iter()
        .map(|c| {
            ITEM_OVERHEAD
                + match c {
                    Content::Text(t) => t.len(),
                    Content::Image(m) | Content::Audio(m) => {
                        base64(m.data.len()) + m.mime_type.len()
                    }
                    Content::Resource(r) => {
                        r.uri.len()
                            + r.mime_type.as_ref().map_or(0, String::len)
                            + match &r.body {
                                ResourceBody::Text(t) => t.len(),
                                ResourceBody::Blob(b) => base64(b.len()),
                            }
                    }
                }
        })
        .sum();
    content + out.structured.as_ref().map_or(0, String::len)
}

/// Bytes of content in an MCP result as sent (binary content counted base64-encoded).
pub fn size_of_result(result: &CallToolResult) -> usize {
    let content: usize = result
        .content
        .iter()
        .map(|c| match c {
            ContentBlock::Text(t) => t.text.len(),
            ContentBlock::Image(i) => i.data.len(),
            ContentBlock::Audio(a) => a.data.len(),
            ContentBlock::Resource(r) => match &r.resource {
                ResourceContents::TextResourceContents { text, .. } => text.len(),
                ResourceContents::BlobResourceContents { blob, .. } => blob.len(),
                _ => 0,
            },
            _ => 0,
        })
        .sum();
    let structured = result
        .structured_content
        .as_ref()
        .map_or(0, |s| serde_json::to_vec(s).map_or(0, |v| v.len()));
    content + structured
}

/// Replace secret values in every piece of text in `result`: text, resource URIs and text,
/// MIME types, structured content (keys too). Binary data (images, audio, blobs) is passed as
/// is: a value hidden in encoded bytes is beyond a text scan.
pub fn redact(result: &mut CallToolResult, redactor: &Redactor) {
    for block in &mut result.content {
        match block {
            ContentBlock::Text(t) => redactor.redact_in_place(&mut t.text),
            ContentBlock::Image(i) => redactor.redact_in_place(&mut i.mime_type),
            ContentBlock::Audio(a) => redactor.redact_in_place(&mut a.mime_type),
            ContentBlock::Resource(r) => match &mut r.resource {
                ResourceContents::TextResourceContents {
                    uri,
                    mime_type,
                    text,
                    ..
                } => {
                    redactor.redact_in_place(uri);
                    mime_type
                        .iter_mut()
                        .for_each(|m| redactor.redact_in_place(m));
                    redactor.redact_in_place(text);
                }
                ResourceContents::BlobResourceContents { uri, mime_type, .. } => {
                    redactor.redact_in_place(uri);
                    mime_type
                        .iter_mut()
                        .for_each(|m| redactor.redact_in_place(m));
                }
                _ => {}
            },
            _ => {}
        }
    }
    if let Some(s) = &mut result.structured_content {
        redactor.redact_json(s);
    }
}

/// Convert the tool's output, refusing it when it has more than `max_items` content items, is
/// larger than `limit` as sent, or is malformed.
pub fn to_mcp(
    out: ToolOutput,
    limit: ByteSize,
    max_items: u32,
) -> Result<CallToolResult, CallFailure> {
    if out.content.len() > max_items as usize {
        return Err(CallFailure::OutputTooManyItems { limit: max_items });
    }
    if size(&out) as u64 > limit.bytes() {
        return Err(CallFailure::OutputTooLarge { limit });
    }
    let structured = out
        .structured
        .map(|s| serde_json::from_str::<serde_json::Value>(&s))
        .transpose()
        .map_err(|e| CallFailure::InvalidOutput(format!("structured content is not JSON: {e}")))?;
    let content = out
        .content
        .into_iter()
        .map(|c| match c {
            Content::Text(t) => ContentBlock::text(t),
            Content::Image(m) => ContentBlock::image(STANDARD.encode(&m.data), m.mime_type),
            Content::Audio(m) => ContentBlock::audio(STANDARD.encode(&m.data), m.mime_type),
            Content::Resource(r) => {
                let contents = match r.body {
                    ResourceBody::Text(t) => ResourceContents::TextResourceContents {
                        uri: r.uri,
                        mime_type: r.mime_type,
                        text: t,
                        meta: None,
                    },
                    ResourceBody::Blob(b) => ResourceContents::BlobResourceContents {
                        uri: r.uri,
                        mime_type: r.mime_type,
                        blob: STANDARD.encode(&b),
                        meta: None,
                    },
                };
                ContentBlock::resource(contents)
            }
        })
        .collect();
    let mut result = if out.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = structured;
    Ok(result)
}

/// An MCP result handed back to a tool (a nested `call-tool`): the same content in the
/// contract's types. Binary content that is not valid base64 (never produced here) becomes
/// empty; content kinds the contract lacks (resource links) become their text form.
pub fn to_tool_output(result: &CallToolResult) -> ToolOutput {
    use airlock_host_api::{EmbeddedResource, Media};
    let decode = |b: &str| STANDARD.decode(b).unwrap_or_default();
    let content = result
        .content
        .iter()
        .map(|c| match c {
            ContentBlock::Text(t) => Content::Text(t.text.clone()),
            ContentBlock::Image(i) => Content::Image(Media {
                data: decode(&i.data),
                mime_type: i.mime_type.clone(),
            }),
            ContentBlock::Audio(a) => Content::Audio(Media {
                data: decode(&a.data),
                mime_type: a.mime_type.clone(),
            }),
            ContentBlock::Resource(r) => match &r.resource {
                ResourceContents::TextResourceContents {
                    uri,
                    mime_type,
                    text,
                    ..
                } => Content::Resource(EmbeddedResource {
                    uri: uri.clone(),
                    mime_type: mime_type.clone(),
                    body: ResourceBody::Text(text.clone()),
                }),
                ResourceContents::BlobResourceContents {
                    uri,
                    mime_type,
                    blob,
                    ..
                } => Content::Resource(EmbeddedResource {
                    uri: uri.clone(),
                    mime_type: mime_type.clone(),
                    body: ResourceBody::Blob(decode(blob)),
                }),
                other => Content::Text(serde_json::to_string(other).unwrap_or_default()),
            },
            other => Content::Text(serde_json::to_string(other).unwrap_or_default()),
        })
        .collect();
    ToolOutput {
        content,
        structured: result.structured_content.as_ref().map(|v| v.to_string()),
        is_error: result.is_error.unwrap_or(false),
    }
}
