//! What a running request can ask of the client: forms for its user, messages from its model
//! (sampling), its roots; and the signals that tell clients what changed.

use crate::bindings::airlock::tool::types as wit;
use crate::host;
use crate::{Content, Elicited, JsonSchema, ToolError};

pub use host::{ClientFeatures, Listing, Root};
pub use wit::Role;

/// One request of [`ask`], under a key of the tool's choosing (1 to 64 characters from
/// `A-Z a-z 0-9 _ - .`; on MCP 2026-07-28 the client sees it as its `inputRequests` key).
pub struct Ask {
    key: String,
    kind: host::InputKind,
}

impl Ask {
    /// A form whose fields are those of `T` (see [`crate::elicit`]).
    pub fn form<T: JsonSchema>(key: &str, message: &str) -> Ask {
        Ask::form_schema(key, message, &crate::form_schema(crate::schema_of::<T>()))
    }

    /// A form with a JSON Schema written by hand (an MCP form: a flat object of primitives).
    pub fn form_schema(key: &str, message: &str, schema: &serde_json::Value) -> Ask {
        Ask {
            key: key.to_owned(),
            kind: host::InputKind::Form(host::Form {
                message: message.to_owned(),
                schema: schema.to_string(),
            }),
        }
    }

    /// A message from the client's model (needs the tool's `sample = true` grant).
    pub fn sample(key: &str, request: Sample) -> Ask {
        Ask {
            key: key.to_owned(),
            kind: host::InputKind::Sample(request.into_wit()),
        }
    }

    /// The client's roots.
    pub fn roots(key: &str) -> Ask {
        Ask {
            key: key.to_owned(),
            kind: host::InputKind::Roots,
        }
    }
}

/// The client's answer to one [`Ask`].
#[derive(Debug, Clone)]
pub enum Asked {
    Form(Elicited<serde_json::Value>),
    Sampled(Result<Sampled, SampleError>),
    Roots(Vec<Root>),
}

/// Ask the client several things at once: one round on MCP 2026-07-28 (the client answers
/// all of them, then the tool runs again from the start and gets the answers at once), one
/// after the other on older revisions. Answers come back as `(key, answer)` in the order asked.
/// Put side effects after the answers, never before.
///
/// A request the client did not declare support for (see [`client_supports`]) ends the call
/// with MCP's missing-capability error.
pub fn ask(requests: Vec<Ask>) -> Result<Vec<(String, Asked)>, ToolError> {
    let requests = requests
        .into_iter()
        .map(|a| host::InputRequest {
            key: a.key,
            kind: a.kind,
        })
        .collect::<Vec<_>>();
    let answers = host::ask(&requests)
        .map_err(|why| ToolError::failed(format!("cannot ask the client: {why}")))?;
    answers
        .into_iter()
        .map(|a| {
            let asked = match a.reply {
                host::InputReply::Form(f) => Asked::Form(match f {
                    host::ElicitAnswer::Accept(json) => {
                        Elicited::Accepted(serde_json::from_str(&json).map_err(|e| {
                            ToolError::failed(format!("the host sent an unreadable answer: {e}"))
                        })?)
                    }
                    host::ElicitAnswer::Decline => Elicited::Declined,
                    host::ElicitAnswer::Cancel => Elicited::Cancelled,
                }),
                host::InputReply::Sample(r) => {
                    Asked::Sampled(r.map(Sampled::from_wit).map_err(Into::into))
                }
                host::InputReply::Roots(roots) => Asked::Roots(roots),
            };
            Ok((a.key, asked))
        })
        .collect()
}

/// A request for the client's model to write the next message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    messages: Vec<(Role, Content)>,
    system_prompt: Option<String>,
    max_tokens: u32,
    temperature: Option<f64>,
    stop_sequences: Vec<String>,
    model_hints: Vec<String>,
}

impl Sample {
    /// A conversation starting with the user's `text`; the model writes at most `max_tokens`.
    pub fn new(text: impl Into<String>, max_tokens: u32) -> Sample {
        Sample {
            messages: vec![(Role::User, Content::Text(text.into()))],
            system_prompt: None,
            max_tokens,
            temperature: None,
            stop_sequences: Vec::new(),
            model_hints: Vec::new(),
        }
    }

    /// Another message (text, image or audio).
    pub fn message(mut self, role: Role, content: Content) -> Sample {
        self.messages.push((role, content));
        self
    }

    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Sample {
        self.system_prompt = Some(prompt.into());
        self
    }

    pub fn temperature(mut self, t: f64) -> Sample {
        self.temperature = Some(t);
        self
    }

    pub fn stop_at(mut self, sequence: impl Into<String>) -> Sample {
        self.stop_sequences.push(sequence.into());
        self
    }

    /// A model the tool would prefer (a hint; the client decides).
    pub fn prefer_model(mut self, name: impl Into<String>) -> Sample {
        self.model_hints.push(name.into());
        self
    }

    fn into_wit(self) -> host::SampleRequest {
        host::SampleRequest {
            messages: self
                .messages
                .into_iter()
                .map(|(role, content)| host::SampleMessage {
                    role,
                    content: crate::content_to_wit(content),
                })
                .collect(),
            system_prompt: self.system_prompt,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            stop_sequences: self.stop_sequences,
            model_hints: self.model_hints,
        }
    }
}

/// What the client's model wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub role: Role,
    pub content: Content,
    /// The model that wrote it.
    pub model: String,
    /// Why it stopped (`endTurn`, `maxTokens`, …), when said.
    pub stop_reason: Option<String>,
}

impl Sampled {
    fn from_wit(r: host::SampleReply) -> Sampled {
        Sampled {
            role: r.role,
            content: crate::content_from_wit(r.content),
            model: r.model,
            stop_reason: r.stop_reason,
        }
    }

    /// The message's text (empty when it is not text).
    pub fn text(&self) -> &str {
        match &self.content {
            Content::Text(t) => t,
            _ => "",
        }
    }
}

/// Why [`sample`] produced no message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleError {
    /// The user or the client refused.
    Declined(String),
    /// The request or the answer is unusable.
    Invalid(String),
}

impl From<host::SampleError> for SampleError {
    fn from(e: host::SampleError) -> Self {
        match e {
            host::SampleError::Declined(m) => SampleError::Declined(m),
            host::SampleError::Invalid(m) => SampleError::Invalid(m),
        }
    }
}

impl From<SampleError> for ToolError {
    fn from(e: SampleError) -> Self {
        match e {
            SampleError::Declined(m) => ToolError::failed(format!("sampling declined: {m}")),
            SampleError::Invalid(m) => ToolError::failed(format!("sampling failed: {m}")),
        }
    }
}

/// Ask the client's model for a message (MCP sampling). The operator must grant the tool
/// `sample = true`; without the grant the call ends as blocked by policy.
pub fn sample(request: Sample) -> Result<Sampled, SampleError> {
    host::sample(&request.into_wit())
        .map(Sampled::from_wit)
        .map_err(Into::into)
}

/// The client's roots (the directories or URIs it works in).
pub fn roots() -> Result<Vec<Root>, ToolError> {
    match ask(vec![Ask::roots("roots")])?.pop() {
        Some((_, Asked::Roots(roots))) => Ok(roots),
        _ => Ok(Vec::new()),
    }
}

/// What the client of this request can be asked.
pub fn client_supports() -> ClientFeatures {
    host::client_supports()
}

/// Tell clients that the component's tools, prompts or resources changed.
pub fn list_changed(what: Listing) {
    host::list_changed(what);
}

/// Tell the clients subscribed to `uri` (one of this component's resources) that it changed.
pub fn resource_updated(uri: &str) {
    host::resource_updated(uri);
}
