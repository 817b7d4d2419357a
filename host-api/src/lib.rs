//! The `airlock:tool` contract: the WIT packages in `wit/` and the wasmtime host bindings
//! generated from them.
//!
//! `airlock:tool@0.2.0` (tools, resources, prompts, completions, sampling) is the contract the
//! runtime works in; components built against `airlock:tool@0.1.0` (tools only) are still
//! loaded, through [`v1`] and the conversions at the end of this file. Tool authors use the
//! same WIT through the guest SDK.

/// The WIT source of the current contract, for tools and docs that want to show it.
pub const WIT: &str = include_str!("../../sdk/wit/v0.2.0/tool.wit");

/// `airlock:tool@0.2.0`.
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../sdk/wit/v0.2.0",
        world: "tool",
        // Exports are awaited so a request can yield at epoch ticks and be cancelled. The
        // cheap imports that never block stay synchronous; `log`, `progress` and the signals
        // may end the run (a request over its message budget). The imports that wait for a
        // human, the client or a nested call are async, and may end the run (a trap carrying
        // the reason) when the request cannot go on.
        exports: { default: async },
        imports: {
            "airlock:tool/host.log": trappable,
            "airlock:tool/host.progress": trappable,
            "airlock:tool/host.list-changed": trappable,
            "airlock:tool/host.resource-updated": trappable,
            "airlock:tool/host.confirm": async | trappable,
            "airlock:tool/host.elicit": async | trappable,
            "airlock:tool/host.ask": async | trappable,
            "airlock:tool/host.sample": async | trappable,
            "airlock:tool/host.call-tool": async | trappable,
        },
    });
}

/// `airlock:tool@0.1.0`, for components built before 0.2.0.
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "../sdk/wit/v0.1.0",
        world: "tool",
        exports: { default: async },
        imports: {
            "airlock:tool/host.log": trappable,
            "airlock:tool/host.progress": trappable,
            "airlock:tool/host.confirm": async | trappable,
            "airlock:tool/host.elicit": async | trappable,
            "airlock:tool/host.call-tool": async | trappable,
        },
    });
}

pub use v2::airlock::tool::host::{
    Answer, CallerIdentity, ClientFeatures, ElicitAnswer, Form, Host, InputKind, InputReply,
    InputRequest, Listing, LogLevel, NestedFailure, Root, SampleError, SampleMessage, SampleReply,
    SampleRequest,
};
pub use v2::airlock::tool::types::{
    CallError, Completion, CompletionRequest, CompletionTarget, Content, EmbeddedResource, Hints,
    Media, Offer, Prompt, PromptArgument, PromptMessage, PromptSpec, RequestError, ResourceBody,
    ResourceLink, ResourceSpec, ResourceTemplate, Role, ToolOutput, ToolSpec,
};
pub use v2::{Tool, ToolPre};

mod from_v1 {
    //! A 0.1.0 component's answers in 0.2.0 terms, and 0.2.0 answers in 0.1.0 terms for its
    //! imports. 0.2.0 only adds to 0.1.0, so every conversion is total.
    use super::v1::airlock::tool::{host as h1, types as t1};
    use super::v2::airlock::tool::{host as h2, types as t2};

    impl From<t1::Hints> for t2::Hints {
        fn from(h: t1::Hints) -> Self {
            t2::Hints {
                read_only: h.read_only,
                destructive: h.destructive,
                idempotent: h.idempotent,
                open_world: h.open_world,
            }
        }
    }

    impl From<t1::ToolSpec> for t2::ToolSpec {
        fn from(s: t1::ToolSpec) -> Self {
            t2::ToolSpec {
                name: s.name,
                title: s.title,
                description: s.description,
                input_schema: s.input_schema,
                output_schema: s.output_schema,
                hints: s.hints.into(),
            }
        }
    }

    fn media(m: t1::Media) -> t2::Media {
        t2::Media {
            data: m.data,
            mime_type: m.mime_type,
        }
    }

    impl From<t1::Content> for t2::Content {
        fn from(c: t1::Content) -> Self {
            match c {
                t1::Content::Text(t) => t2::Content::Text(t),
                t1::Content::Image(m) => t2::Content::Image(media(m)),
                t1::Content::Audio(m) => t2::Content::Audio(media(m)),
                t1::Content::Resource(r) => t2::Content::Resource(t2::EmbeddedResource {
                    uri: r.uri,
                    mime_type: r.mime_type,
                    body: match r.body {
                        t1::ResourceBody::Text(t) => t2::ResourceBody::Text(t),
                        t1::ResourceBody::Blob(b) => t2::ResourceBody::Blob(b),
                    },
                }),
            }
        }
    }

    impl From<t1::ToolOutput> for t2::ToolOutput {
        fn from(o: t1::ToolOutput) -> Self {
            t2::ToolOutput {
                content: o.content.into_iter().map(Into::into).collect(),
                structured: o.structured,
                is_error: o.is_error,
            }
        }
    }

    impl From<t1::CallError> for t2::CallError {
        fn from(e: t1::CallError) -> Self {
            match e {
                t1::CallError::UnknownTool(m) => t2::CallError::UnknownTool(m),
                t1::CallError::InvalidArguments(m) => t2::CallError::InvalidArguments(m),
                t1::CallError::Failed(m) => t2::CallError::Failed(m),
            }
        }
    }

    impl From<h1::LogLevel> for h2::LogLevel {
        fn from(l: h1::LogLevel) -> Self {
            match l {
                h1::LogLevel::Debug => h2::LogLevel::Debug,
                h1::LogLevel::Info => h2::LogLevel::Info,
                h1::LogLevel::Warn => h2::LogLevel::Warn,
                h1::LogLevel::Error => h2::LogLevel::Error,
            }
        }
    }

    impl From<h2::ElicitAnswer> for h1::ElicitAnswer {
        fn from(a: h2::ElicitAnswer) -> Self {
            match a {
                h2::ElicitAnswer::Accept(json) => h1::ElicitAnswer::Accept(json),
                h2::ElicitAnswer::Decline => h1::ElicitAnswer::Decline,
                h2::ElicitAnswer::Cancel => h1::ElicitAnswer::Cancel,
            }
        }
    }

    impl From<h2::NestedFailure> for h1::NestedFailure {
        fn from(f: h2::NestedFailure) -> Self {
            h1::NestedFailure {
                outcome: f.outcome,
                message: f.message,
            }
        }
    }

    /// A nested call's output as a 0.1.0 component can read it: a resource link becomes its
    /// URI as text (0.1.0 has no links).
    impl From<t2::ToolOutput> for t1::ToolOutput {
        fn from(o: t2::ToolOutput) -> Self {
            let m = |m: t2::Media| t1::Media {
                data: m.data,
                mime_type: m.mime_type,
            };
            t1::ToolOutput {
                content: o
                    .content
                    .into_iter()
                    .map(|c| match c {
                        t2::Content::Text(t) => t1::Content::Text(t),
                        t2::Content::Image(x) => t1::Content::Image(m(x)),
                        t2::Content::Audio(x) => t1::Content::Audio(m(x)),
                        t2::Content::Resource(r) => t1::Content::Resource(t1::EmbeddedResource {
                            uri: r.uri,
                            mime_type: r.mime_type,
                            body: match r.body {
                                t2::ResourceBody::Text(t) => t1::ResourceBody::Text(t),
                                t2::ResourceBody::Blob(b) => t1::ResourceBody::Blob(b),
                            },
                        }),
                        t2::Content::Link(l) => t1::Content::Text(l.uri),
                    })
                    .collect(),
                structured: o.structured,
                is_error: o.is_error,
            }
        }
    }
}
