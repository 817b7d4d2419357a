//! A tool's output, checked against the output limit and turned into an MCP result.

use crate::core::failure::CallFailure;
use crate::core::redact::Redactor;
use crate::core::units::ByteSize;
use airlock_host_api::{Content, EmbeddedResource, ResourceBody, ToolOutput};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rmcp::model::{
    CallToolResult, CompleteResult, CompletionInfo, ContentBlock, GetPromptResult,
    ReadResourceResult, ResourceContents,
};

/// Bytes a content item costs beyond its data: its JSON envelope (`{"type":"text","text":…}`
/// and the like), so that many empty items are not free.
const ITEM_OVERHEAD: usize = 32;

/// Bytes one content item costs as it will be sent: its data (binary base64-encoded) and its
/// envelope.
pub fn content_size(c: &Content) -> usize {
    let base64 = |n: usize| n.div_ceil(3) * 4;
    ITEM_OVERHEAD
        + match c {
            Content::Text(t) => t.len(),
            Content::Image(m) | Content::Audio(m) => base64(m.data.len()) + m.mime_type.len(),
            Content::Resource(r) => resource_size(r),
            Content::Link(l) => {
                l.uri.len()
                    + l.name.len()
                    + l.description.as_ref().map_or(0, String::len)
                    + l.mime_type.as_ref().map_or(0, String::len)
            }
        }
}

fn resource_size(r: &EmbeddedResource) -> usize {
    r.uri.len()
        + r.mime_type.as_ref().map_or(0, String::len)
        + match &r.body {
            ResourceBody::Text(t) => t.len(),
            ResourceBody::Blob(b) => b.len().div_ceil(3) * 4,
        }
}

/// Bytes of `out` as it will be sent: each item and the structured content.
fn size(out: &ToolOutput) -> usize {
    out.content.iter().map(content_size).sum::<usize>()
        + out.structured.as_ref().map_or(0, String::len)
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
    let content = out.content.into_iter().map(to_block).collect();
    let mut result = if out.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = structured;
    Ok(result)
}

/// One content item in MCP's terms.
pub fn to_block(c: Content) -> ContentBlock {
    match c {
        Content::Text(t) => ContentBlock::text(t),
        Content::Image(m) => ContentBlock::image(STANDARD.encode(&m.data), m.mime_type),
        Content::Audio(m) => ContentBlock::audio(STANDARD.encode(&m.data), m.mime_type),
        Content::Resource(r) => ContentBlock::resource(resource_contents(r)),
        Content::Link(l) => {
            let mut link =
                serde_json::json!({ "type": "resource_link", "uri": l.uri, "name": l.name });
            if let Some(d) = l.description {
                link["description"] = d.into();
            }
            if let Some(m) = l.mime_type {
                link["mimeType"] = m.into();
            }
            serde_json::from_value(link)
                .unwrap_or_else(|e| ContentBlock::text(format!("(an unusable resource link: {e})")))
        }
    }
}

/// A resource's contents in MCP's terms.
pub fn resource_contents(r: EmbeddedResource) -> ResourceContents {
    match r.body {
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
    }
}

/// What a request to a component produced, in MCP's terms.
#[derive(Debug, Clone)]
pub enum Response {
    Tool(CallToolResult),
    Resource(ReadResourceResult),
    Prompt(GetPromptResult),
    Completion(CompleteResult),
}

impl Response {
    /// Bytes of content as sent (binary content counted base64-encoded).
    pub fn size(&self) -> usize {
        match self {
            Response::Tool(r) => size_of_result(r),
            other => other.to_json().map_or(0, |v| v.to_string().len()),
        }
    }

    /// The component ran and reported a failure of its own (a tool's `isError`).
    pub fn is_error(&self) -> bool {
        matches!(self, Response::Tool(r) if r.is_error == Some(true))
    }

    /// The response as JSON, as it will be sent.
    pub fn to_json_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Response::Tool(r) => serde_json::to_value(r),
            Response::Resource(r) => serde_json::to_value(r),
            Response::Prompt(r) => serde_json::to_value(r),
            Response::Completion(r) => serde_json::to_value(r),
        }
    }

    fn to_json(&self) -> Option<serde_json::Value> {
        self.to_json_value().ok()
    }

    /// Secret values out of every piece of text (as [`redact`] does for tool results): binary
    /// data (`blob`, `data`) passes as is. Should the scrubbed reply no longer be well formed,
    /// it is withheld rather than sent unscrubbed.
    pub fn redact(&mut self, redactor: &Redactor) -> Result<(), CallFailure> {
        fn text_fields(v: &mut serde_json::Value, redactor: &Redactor) {
            match v {
                serde_json::Value::String(s) => redactor.redact_in_place(s),
                serde_json::Value::Array(items) => {
                    items.iter_mut().for_each(|i| text_fields(i, redactor))
                }
                serde_json::Value::Object(o) => o
                    .iter_mut()
                    .filter(|(k, _)| !matches!(k.as_str(), "blob" | "data"))
                    .for_each(|(_, x)| text_fields(x, redactor)),
                _ => {}
            }
        }
        fn scrub<T: serde::Serialize + serde::de::DeserializeOwned>(
            r: &mut T,
            redactor: &Redactor,
        ) -> Result<(), CallFailure> {
            let withheld = |e: serde_json::Error| {
                CallFailure::HostError(format!(
                    "the reply could not be scrubbed of secret values, so it is withheld: {e}"
                ))
            };
            let mut v = serde_json::to_value(&*r).map_err(withheld)?;
            text_fields(&mut v, redactor);
            *r = serde_json::from_value(v).map_err(withheld)?;
            Ok(())
        }
        match self {
            Response::Tool(r) => {
                redact(r, redactor);
                Ok(())
            }
            Response::Resource(r) => scrub(r, redactor),
            Response::Prompt(r) => scrub(r, redactor),
            Response::Completion(r) => scrub(r, redactor),
        }
    }
}

/// A resource read's contents, refused when they have more than `max_items` items or are
/// larger than `limit` as sent.
pub fn read_result(
    contents: Vec<EmbeddedResource>,
    limit: ByteSize,
    max_items: u32,
) -> Result<ReadResourceResult, CallFailure> {
    if contents.len() > max_items as usize {
        return Err(CallFailure::OutputTooManyItems { limit: max_items });
    }
    let bytes: usize = contents
        .iter()
        .map(|r| ITEM_OVERHEAD + resource_size(r))
        .sum();
    if bytes as u64 > limit.bytes() {
        return Err(CallFailure::OutputTooLarge { limit });
    }
    if contents.is_empty() {
        return Err(CallFailure::InvalidOutput(
            "the resource read returned no contents".into(),
        ));
    }
    Ok(ReadResourceResult::new(
        contents.into_iter().map(resource_contents).collect(),
    ))
}

/// A filled-in prompt, refused when it has more than `max_items` messages or is larger than
/// `limit` as sent.
pub fn prompt_result(
    prompt: airlock_host_api::Prompt,
    limit: ByteSize,
    max_items: u32,
) -> Result<GetPromptResult, CallFailure> {
    if prompt.messages.len() > max_items as usize {
        return Err(CallFailure::OutputTooManyItems { limit: max_items });
    }
    let bytes: usize = prompt.description.as_ref().map_or(0, String::len)
        + prompt
            .messages
            .iter()
            .map(|m| content_size(&m.content))
            .sum::<usize>();
    if bytes as u64 > limit.bytes() {
        return Err(CallFailure::OutputTooLarge { limit });
    }
    let messages = prompt
        .messages
        .into_iter()
        .map(|m| {
            let role = match m.role {
                airlock_host_api::Role::User => rmcp::model::Role::User,
                airlock_host_api::Role::Assistant => rmcp::model::Role::Assistant,
            };
            rmcp::model::PromptMessage::new(role, to_block(m.content))
        })
        .collect();
    let mut result = GetPromptResult::new(messages);
    result.description = prompt.description;
    Ok(result)
}

/// Suggested values: at most 100 (MCP's cap; beyond it `hasMore` says there are more), at most
/// `limit` bytes in all.
pub fn completion_result(
    completion: airlock_host_api::Completion,
    limit: ByteSize,
) -> Result<CompleteResult, CallFailure> {
    let mut values = completion.values;
    let mut has_more = completion.has_more;
    if values.len() > CompletionInfo::MAX_VALUES {
        values.truncate(CompletionInfo::MAX_VALUES);
        has_more = true;
    }
    let bytes: usize = values.iter().map(|v| v.len() + 4).sum();
    if bytes as u64 > limit.bytes() {
        return Err(CallFailure::OutputTooLarge { limit });
    }
    let mut info = CompletionInfo::new(values).map_err(CallFailure::InvalidOutput)?;
    info.total = completion.total;
    info.has_more = Some(has_more);
    Ok(CompleteResult::new(info))
}

/// An MCP result handed back to a tool (a nested `call-tool`): the same content in the
/// contract's types. Binary content that is not valid base64 (never produced here) becomes
/// empty; content kinds the contract lacks (resource links) become their text form.
pub fn to_tool_output(result: &CallToolResult) -> ToolOutput {
    use airlock_host_api::Media;
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
