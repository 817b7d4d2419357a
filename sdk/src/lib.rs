//! Write [Airlock](../README.md) tools as plain Rust functions.
//!
//! A tool is a function from a typed argument (anything `serde::Deserialize` +
//! `schemars::JsonSchema`) to an [`Output`] (or anything convertible into one, such as `String`
//! or [`Json`]). The SDK derives the JSON Schema, parses the arguments, and implements the
//! `airlock:tool` world for you:
//!
//! ```ignore
//! use airlock_sdk::{export_tools, JsonSchema, Tool, ToolError, Toolbox};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Shout {
//!     /// The text to shout.
//!     text: String,
//! }
//!
//! fn shout(args: Shout) -> Result<String, ToolError> {
//!     Ok(args.text.to_uppercase())
//! }
//!
//! fn toolbox() -> Toolbox {
//!     Toolbox::new().with(Tool::new("shout", "Upper-case the text", shout).read_only())
//! }
//!
//! export_tools!(toolbox());
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` file in
//! `target/wasm32-wasip2/release/` is the component Airlock loads. The crate must be a
//! `cdylib`.
//!
//! Every call runs in a fresh instance, so keep no state between calls. Standard output and
//! standard error are captured by the host for its log; they never reach the client.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use schemars::{self, JsonSchema};
pub use serde_json;

/// Bindings generated from the `airlock:tool` WIT package.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated: the canonical ABI flattens records into arguments
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/v0.2.0",
        world: "tool",
        pub_export_macro: true,
        export_macro_name: "export_component",
        default_bindings_module: "airlock_sdk::bindings",
    });
}

use bindings::airlock::tool::types as wit;

pub mod client;
mod host;
pub mod http;
pub mod offer;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use client::{
    Ask, Asked, ClientFeatures, Listing, Role, Root, Sample, SampleError, Sampled, ask,
    client_supports, list_changed, resource_updated, roots, sample,
};
pub use offer::{Contents, Prompt, PromptArgs, PromptOutput, Resource, ResourceTemplate, Vars};

/// Severity of a message sent with [`log`].
pub use host::LogLevel;

/// Send a diagnostic message to the host's log (and to the MCP client when it asked for them).
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// Report progress of the current call. `progress` must increase between reports.
pub fn progress(progress: f64, total: Option<f64>, message: Option<&str>) {
    host::progress(progress, total, message);
}

/// Ask a person to approve the next step, and wait for the answer: true only for an explicit
/// yes. `prompt` is the question in one line; `details` says exactly what will happen.
///
/// The host asks through the channel the operator configured for this tool (the caller's user
/// through MCP elicitation, or an operator with `airlock ctl approvals`). A no, a dismissal or
/// no answer before the configured timeout is false. When nobody can be asked, the call ends
/// with a denial and this function does not return.
///
/// **Put every side effect after `confirm`, never before.** With MCP 2026-07-28 clients the
/// host ends the run to ask, and the client's retry runs the tool again from the start; the
/// repeated `confirm` with the same prompt and details then returns the answer at once.
///
/// ```ignore
/// if !airlock_sdk::confirm("Delete 3 files?", "reports/2024-*.csv in /data") {
///     return Ok(Output::text("left the files alone"));
/// }
/// // … delete them …
/// ```
pub fn confirm(prompt: &str, details: &str) -> bool {
    host::confirm(prompt, details)
}

/// The user's answer to [`elicit`].
#[derive(Debug, Clone, PartialEq)]
pub enum Elicited<T> {
    /// The user filled in the form.
    Accepted(T),
    /// The user refused.
    Declined,
    /// The user dismissed the request (or did not answer in time).
    Cancelled,
}

/// Ask the user to fill in a form whose fields are those of `T` (a flat struct of strings,
/// numbers, integers, booleans and unit enums), with the same mechanics as [`confirm`]. Never
/// ask for passwords or keys this way.
pub fn elicit<T: DeserializeOwned + JsonSchema>(message: &str) -> Result<Elicited<T>, ToolError> {
    let schema = form_schema(schema_of::<T>());
    match elicit_with_schema(message, &schema)? {
        Elicited::Accepted(v) => serde_json::from_value(v)
            .map(Elicited::Accepted)
            .map_err(|e| ToolError::failed(format!("the answer does not fit the form: {e}"))),
        Elicited::Declined => Ok(Elicited::Declined),
        Elicited::Cancelled => Ok(Elicited::Cancelled),
    }
}

/// [`elicit`] with a JSON Schema written by hand (an MCP form: a flat object of primitives).
pub fn elicit_with_schema(
    message: &str,
    schema: &serde_json::Value,
) -> Result<Elicited<serde_json::Value>, ToolError> {
    match host::elicit(message, &schema.to_string()) {
        Ok(host::ElicitAnswer::Accept(json)) => serde_json::from_str(&json)
            .map(Elicited::Accepted)
            .map_err(|e| ToolError::failed(format!("the host sent an unreadable answer: {e}"))),
        Ok(host::ElicitAnswer::Decline) => Ok(Elicited::Declined),
        Ok(host::ElicitAnswer::Cancel) => Ok(Elicited::Cancelled),
        Err(why) => Err(ToolError::failed(format!("cannot ask the user: {why}"))),
    }
}

/// An MCP form from a schemars schema: only the keywords MCP forms know.
pub(crate) fn form_schema(schema: serde_json::Value) -> serde_json::Value {
    const KEPT: [&str; 12] = [
        "type",
        "title",
        "description",
        "enum",
        "default",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "format",
        "oneOf",
        "items",
    ];
    let mut properties = serde_json::Map::new();
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, p) in props {
            let mut kept = serde_json::Map::new();
            if let Some(p) = p.as_object() {
                for (k, v) in p {
                    let is_number_format = k == "format"
                        && !matches!(v.as_str(), Some("email" | "uri" | "date" | "date-time"));
                    if KEPT.contains(&k.as_str()) && !is_number_format {
                        kept.insert(k.clone(), v.clone());
                    }
                }
            }
            properties.insert(name.clone(), serde_json::Value::Object(kept));
        }
    }
    serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": schema.get("required").cloned().unwrap_or_else(|| serde_json::json!([])),
    })
}

/// Why a nested [`call_tool`] produced no output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedError {
    /// The stable name of the outcome (`nesting_too_deep`, `nested_budget_exhausted`,
    /// `call_cycle`, `not_authorized`, `approval_denied`, `timed_out`, …).
    pub outcome: String,
    /// What happened, for a human.
    pub message: String,
}

impl std::fmt::Display for NestedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.outcome)
    }
}

impl From<NestedError> for ToolError {
    fn from(e: NestedError) -> Self {
        ToolError::Failed(e.to_string())
    }
}

/// Call another tool hosted by the same Airlock, as the same caller. The call goes through
/// the host's whole pipeline (authorization, rate limits, approval, audit with this call as its
/// parent) and is refused beyond the depth cap, beyond the top-level call's budget of nested
/// calls, and when it would repeat a call already on the stack with the same arguments.
pub fn call_tool(name: &str, arguments: &serde_json::Value) -> Result<Output, NestedError> {
    match host::call_tool(name, &arguments.to_string()) {
        Ok(out) => Ok(from_wit(out)),
        Err(e) => Err(NestedError {
            outcome: e.outcome,
            message: e.message,
        }),
    }
}

/// True once the caller cancelled the call or an operator stopped it: return early. The host
/// gives a tool a short grace period after a stop to notice.
pub fn cancelled() -> bool {
    host::cancelled()
}

/// Who made the current call, as the host authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    /// The principal: an API key's or a JWT's principal, or the local principal (stdio).
    pub principal: String,
    /// The roles the principal holds.
    pub roles: Vec<String>,
    /// True for a principal that may use every tool (the local principal, or everyone when
    /// authentication is off); it holds no roles.
    pub unrestricted: bool,
}

impl Caller {
    /// Whether the caller holds `role` (an unrestricted caller holds them all).
    pub fn has_role(&self, role: &str) -> bool {
        self.unrestricted || self.roles.iter().any(|r| r == role)
    }
}

/// The caller of the current call (read-only).
pub fn caller() -> Caller {
    let c = host::caller();
    Caller {
        principal: c.principal,
        roles: c.roles,
        unrestricted: c.unrestricted,
    }
}

/// The value of the setting `name` from the operator's `[tool.settings]`, if set. Settings are
/// plain configuration (a base URL, an environment name), never secrets: those are granted.
pub fn setting(name: &str) -> Option<String> {
    host::setting(name)
}

/// Every setting from `[tool.settings]`, by name.
pub fn settings() -> Vec<(String, String)> {
    host::settings()
}

/// One item of content in a tool's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// An image: bytes and media type (for example `image/png`).
    Image { data: Vec<u8>, mime_type: String },
    /// Audio: bytes and media type (for example `audio/wav`).
    Audio { data: Vec<u8>, mime_type: String },
    /// An embedded text resource.
    TextResource {
        uri: String,
        mime_type: Option<String>,
        text: String,
    },
    /// An embedded binary resource.
    BlobResource {
        uri: String,
        mime_type: Option<String>,
        data: Vec<u8>,
    },
    /// A link to a resource the client may read.
    Link {
        uri: String,
        name: String,
        description: Option<String>,
        mime_type: Option<String>,
    },
}

/// The result of a tool call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    content: Vec<Content>,
    structured: Option<serde_json::Value>,
    is_error: bool,
}

impl Output {
    /// A result holding one text item.
    pub fn text(text: impl Into<String>) -> Self {
        Output::default().with(Content::Text(text.into()))
    }

    /// A structured result: the JSON value as `structuredContent`, plus its text form so that
    /// clients without structured output see the same data.
    pub fn json<T: Serialize>(value: &T) -> Result<Self, ToolError> {
        let value = serde_json::to_value(value)
            .map_err(|e| ToolError::failed(format!("result is not serialisable: {e}")))?;
        let text = value.to_string();
        Ok(Output {
            content: vec![Content::Text(text)],
            structured: Some(value),
            is_error: false,
        })
    }

    /// A result the model should read as a failure of the task (MCP `isError: true`), as opposed
    /// to a [`ToolError`], which reports that the tool itself could not run.
    pub fn error(text: impl Into<String>) -> Self {
        Output {
            is_error: true,
            ..Output::text(text)
        }
    }

    /// Append a content item.
    pub fn with(mut self, content: Content) -> Self {
        self.content.push(content);
        self
    }

    /// The content items.
    pub fn content(&self) -> &[Content] {
        &self.content
    }

    /// The text items, joined by newlines.
    pub fn text_content(&self) -> String {
        self.content
            .iter()
            .filter_map(|c| match c {
                Content::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The structured result, if any.
    pub fn structured(&self) -> Option<&serde_json::Value> {
        self.structured.as_ref()
    }

    /// Whether the result reports a failure of the task (MCP `isError`).
    pub fn is_error(&self) -> bool {
        self.is_error
    }
}

/// A structured result: `Json(value)` returns `value` as `structuredContent` and as text.
pub struct Json<T>(pub T);

/// Anything a tool function may return on success.
pub trait IntoOutput {
    /// Convert into the result sent to the host.
    fn into_output(self) -> Result<Output, ToolError>;
}

impl IntoOutput for Output {
    fn into_output(self) -> Result<Output, ToolError> {
        Ok(self)
    }
}

impl IntoOutput for String {
    fn into_output(self) -> Result<Output, ToolError> {
        Ok(Output::text(self))
    }
}

impl IntoOutput for &str {
    fn into_output(self) -> Result<Output, ToolError> {
        Ok(Output::text(self))
    }
}

impl<T: Serialize> IntoOutput for Json<T> {
    fn into_output(self) -> Result<Output, ToolError> {
        Output::json(&self.0)
    }
}

/// Why a tool could not run. The message is shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The arguments are unusable (beyond what the schema can say).
    InvalidArguments(String),
    /// The tool failed.
    Failed(String),
}

impl ToolError {
    /// The arguments are unusable.
    pub fn invalid(message: impl Into<String>) -> Self {
        ToolError::InvalidArguments(message.into())
    }

    /// The tool failed.
    pub fn failed(message: impl Into<String>) -> Self {
        ToolError::Failed(message.into())
    }
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError::Failed(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        ToolError::Failed(message.to_owned())
    }
}

type Handler = Box<dyn Fn(&str) -> Result<Output, ToolError>>;

/// A tool: its name, description, hints, argument schema and the function that runs it.
pub struct Tool {
    name: &'static str,
    title: Option<&'static str>,
    description: &'static str,
    input_schema: Box<dyn Fn() -> serde_json::Value>,
    output_schema: Option<fn() -> serde_json::Value>,
    hints: wit::Hints,
    handler: Handler,
}

impl Tool {
    /// A tool named `name` running `f`. Names are 1 to 64 characters from
    /// `A-Z a-z 0-9 _ - .`, unique across everything the host serves.
    ///
    /// Hints start at MCP's cautious defaults (not read-only, destructive, not idempotent,
    /// open world); narrow them with the builder methods.
    pub fn new<A, R, F>(name: &'static str, description: &'static str, f: F) -> Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        R: IntoOutput,
        F: Fn(A) -> Result<R, ToolError> + 'static,
    {
        Tool::typed(name, description, Box::new(schema_of::<A>), f)
    }

    /// A tool of `name` whose arguments parse as `A` and whose schema is `input_schema`, at
    /// MCP's cautious default hints.
    fn typed<A, R, F>(
        name: &'static str,
        description: &'static str,
        input_schema: Box<dyn Fn() -> serde_json::Value>,
        f: F,
    ) -> Self
    where
        A: DeserializeOwned + 'static,
        R: IntoOutput,
        F: Fn(A) -> Result<R, ToolError> + 'static,
    {
        Tool {
            name,
            title: None,
            description,
            input_schema,
            output_schema: None,
            hints: wit::Hints {
                read_only: false,
                destructive: true,
                idempotent: false,
                open_world: true,
            },
            handler: Box::new(move |arguments| {
                let args: A = serde_json::from_str(arguments)
                    .map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
                f(args)?.into_output()
            }),
        }
    }

    /// A tool whose argument schema is written by hand (for JSON Schema features a Rust type
    /// cannot express), running `f` on the arguments as JSON. `schema` must be an object
    /// schema (`"type": "object"`); the function checks what the schema says.
    pub fn with_schema<R, F>(
        name: &'static str,
        description: &'static str,
        schema: serde_json::Value,
        f: F,
    ) -> Self
    where
        R: IntoOutput,
        F: Fn(serde_json::Value) -> Result<R, ToolError> + 'static,
    {
        Tool::typed(name, description, Box::new(move || schema.clone()), f)
    }

    /// A human-readable title.
    pub fn title(mut self, title: &'static str) -> Self {
        self.title = Some(title);
        self
    }

    /// Declare the schema of the structured output (see [`Json`]).
    pub fn output<T: JsonSchema>(mut self) -> Self {
        self.output_schema = Some(schema_of::<T>);
        self
    }

    /// The tool does not modify anything (implies not destructive).
    pub fn read_only(mut self) -> Self {
        self.hints.read_only = true;
        self.hints.destructive = false;
        self
    }

    /// The tool's changes are additive only.
    pub fn non_destructive(mut self) -> Self {
        self.hints.destructive = false;
        self
    }

    /// Repeating a call with the same arguments has no further effect.
    pub fn idempotent(mut self) -> Self {
        self.hints.idempotent = true;
        self
    }

    /// The tool works only on what it is given, not on an open world of external entities.
    pub fn closed_world(mut self) -> Self {
        self.hints.open_world = false;
        self
    }

    fn spec(&self) -> wit::ToolSpec {
        wit::ToolSpec {
            name: self.name.to_owned(),
            title: self.title.map(str::to_owned),
            description: self.description.to_owned(),
            input_schema: (self.input_schema)().to_string(),
            output_schema: self.output_schema.map(|s| s().to_string()),
            hints: self.hints,
        }
    }
}

pub(crate) fn schema_of<T: JsonSchema>() -> serde_json::Value {
    let mut schema = schemars::schema_for!(T).to_value();
    strip_width_formats(&mut schema);
    schema
}

/// schemars marks number widths with formats JSON Schema does not define (`uint`, `uint32`,
/// `int64`, `double`…), which validators in clients warn about on every call; the bounds it
/// also writes (`minimum`, `maximum`) are what the host checks. A property that happens to be
/// called `format` is an object, and stays.
fn strip_width_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let width = map.get("format").and_then(|f| f.as_str()).is_some_and(|f| {
                matches!(
                    f,
                    "uint"
                        | "uint8"
                        | "uint16"
                        | "uint32"
                        | "uint64"
                        | "uint128"
                        | "int"
                        | "int8"
                        | "int16"
                        | "int32"
                        | "int64"
                        | "int128"
                        | "float"
                        | "double"
                )
            });
            if width {
                map.remove("format");
            }
            map.values_mut().for_each(strip_width_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_width_formats),
        _ => {}
    }
}

/// Everything a component offers: tools, resources, resource templates and prompts.
#[derive(Default)]
pub struct Toolbox {
    tools: Vec<Tool>,
    resources: Vec<offer::Resource>,
    templates: Vec<offer::ResourceTemplate>,
    prompts: Vec<offer::Prompt>,
}

impl Toolbox {
    /// An empty toolbox.
    pub fn new() -> Self {
        Toolbox::default()
    }

    /// Add a tool.
    pub fn with(mut self, tool: Tool) -> Self {
        self.tools.push(tool);
        self
    }

    /// Add a resource.
    pub fn resource(mut self, resource: offer::Resource) -> Self {
        self.resources.push(resource);
        self
    }

    /// Add a resource template.
    pub fn template(mut self, template: offer::ResourceTemplate) -> Self {
        self.templates.push(template);
        self
    }

    /// Add a prompt.
    pub fn prompt(mut self, prompt: offer::Prompt) -> Self {
        self.prompts.push(prompt);
        self
    }

    #[doc(hidden)]
    pub fn describe(&self) -> wit::Offer {
        wit::Offer {
            tools: self.tools.iter().map(Tool::spec).collect(),
            resources: self.resources.iter().map(offer::Resource::spec).collect(),
            resource_templates: self
                .templates
                .iter()
                .map(offer::ResourceTemplate::spec)
                .collect(),
            prompts: self.prompts.iter().map(offer::Prompt::spec).collect(),
        }
    }

    #[doc(hidden)]
    pub fn read_resource(
        &self,
        uri: &str,
    ) -> Result<Vec<wit::EmbeddedResource>, wit::RequestError> {
        offer::read(&self.resources, &self.templates, uri)
    }

    #[doc(hidden)]
    pub fn get_prompt(
        &self,
        name: &str,
        arguments: Vec<(String, String)>,
    ) -> Result<wit::Prompt, wit::RequestError> {
        offer::get_prompt(&self.prompts, name, arguments)
    }

    #[doc(hidden)]
    pub fn complete(
        &self,
        request: wit::CompletionRequest,
    ) -> Result<wit::Completion, wit::RequestError> {
        offer::complete(&self.prompts, &self.templates, request)
    }

    #[doc(hidden)]
    pub fn call(&self, name: &str, arguments: &str) -> Result<wit::ToolOutput, wit::CallError> {
        let tool = self
            .tools
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| wit::CallError::UnknownTool(name.to_owned()))?;
        match (tool.handler)(arguments) {
            Ok(output) => Ok(to_wit(output)),
            Err(ToolError::InvalidArguments(m)) => Err(wit::CallError::InvalidArguments(m)),
            Err(ToolError::Failed(m)) => Err(wit::CallError::Failed(m)),
        }
    }
}

fn from_wit(out: wit::ToolOutput) -> Output {
    Output {
        content: out.content.into_iter().map(content_from_wit).collect(),
        structured: out.structured.and_then(|s| serde_json::from_str(&s).ok()),
        is_error: out.is_error,
    }
}

pub(crate) fn content_from_wit(c: wit::Content) -> Content {
    match c {
        wit::Content::Text(t) => Content::Text(t),
        wit::Content::Image(m) => Content::Image {
            data: m.data,
            mime_type: m.mime_type,
        },
        wit::Content::Audio(m) => Content::Audio {
            data: m.data,
            mime_type: m.mime_type,
        },
        wit::Content::Resource(r) => match r.body {
            wit::ResourceBody::Text(text) => Content::TextResource {
                uri: r.uri,
                mime_type: r.mime_type,
                text,
            },
            wit::ResourceBody::Blob(data) => Content::BlobResource {
                uri: r.uri,
                mime_type: r.mime_type,
                data,
            },
        },
        wit::Content::Link(l) => Content::Link {
            uri: l.uri,
            name: l.name,
            description: l.description,
            mime_type: l.mime_type,
        },
    }
}

fn to_wit(output: Output) -> wit::ToolOutput {
    wit::ToolOutput {
        content: output.content.into_iter().map(content_to_wit).collect(),
        structured: output.structured.map(|v| v.to_string()),
        is_error: output.is_error,
    }
}

pub(crate) fn content_to_wit(c: Content) -> wit::Content {
    match c {
        Content::Text(t) => wit::Content::Text(t),
        Content::Image { data, mime_type } => wit::Content::Image(wit::Media { data, mime_type }),
        Content::Audio { data, mime_type } => wit::Content::Audio(wit::Media { data, mime_type }),
        Content::TextResource {
            uri,
            mime_type,
            text,
        } => wit::Content::Resource(wit::EmbeddedResource {
            uri,
            mime_type,
            body: wit::ResourceBody::Text(text),
        }),
        Content::BlobResource {
            uri,
            mime_type,
            data,
        } => wit::Content::Resource(wit::EmbeddedResource {
            uri,
            mime_type,
            body: wit::ResourceBody::Blob(data),
        }),
        Content::Link {
            uri,
            name,
            description,
            mime_type,
        } => wit::Content::Link(wit::ResourceLink {
            uri,
            name,
            description,
            mime_type,
        }),
    }
}

/// Export a [`Toolbox`] as this component's tools. Takes an expression that builds the toolbox;
/// it is evaluated in each (fresh) instance.
#[macro_export]
macro_rules! export_tools {
    ($toolbox:expr) => {
        struct AirlockComponent;

        impl $crate::bindings::Guest for AirlockComponent {
            fn describe() -> $crate::bindings::Offer {
                let toolbox: $crate::Toolbox = $toolbox;
                toolbox.describe()
            }

            fn call(
                name: ::std::string::String,
                arguments: ::std::string::String,
            ) -> ::std::result::Result<$crate::bindings::ToolOutput, $crate::bindings::CallError> {
                let toolbox: $crate::Toolbox = $toolbox;
                toolbox.call(&name, &arguments)
            }

            fn read_resource(
                uri: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::bindings::EmbeddedResource>,
                $crate::bindings::RequestError,
            > {
                let toolbox: $crate::Toolbox = $toolbox;
                toolbox.read_resource(&uri)
            }

            fn get_prompt(
                name: ::std::string::String,
                arguments: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<$crate::bindings::Prompt, $crate::bindings::RequestError> {
                let toolbox: $crate::Toolbox = $toolbox;
                toolbox.get_prompt(&name, arguments)
            }

            fn complete(
                request: $crate::bindings::CompletionRequest,
            ) -> ::std::result::Result<$crate::bindings::Completion, $crate::bindings::RequestError>
            {
                let toolbox: $crate::Toolbox = $toolbox;
                toolbox.complete(request)
            }
        }

        $crate::bindings::export_component!(AirlockComponent with_types_in $crate::bindings);
    };
}
