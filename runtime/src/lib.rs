//! Airlock: a sandboxed tool-execution runtime for the Model Context Protocol.
//!
//! Tools are WASI components; every call runs in a fresh wasmtime store under CPU, memory, time
//! and stack limits. The call path is [`pipeline::call::Airlock::call`].
//!
//! The crate is built in layers, bottom to top. A module uses only its own layer and the
//! layers below it (checked by `tests/layers.rs`; `docs/architecture.md` explains each):
//!
//! 1. [`core`]: shared types (ids, principals, outcomes, units, redaction).
//! 2. [`supply`]: where components come from (OCI registries, `https://`) and who signed them.
//! 3. [`config`]: the configuration model, validation and secrets.
//! 4. [`sandbox`]: the engine, components, the store per call, grants, egress.
//! 5. [`gate`]: authentication, rate limits, overrides, approvals, the audit log.
//! 6. [`pipeline`]: the call path, composing gate and sandbox.
//! 7. [`control`]: the operator plane: commands, live reload, the admin socket, `ctl`.
//! 8. [`serve`]: the MCP transports, the command line, `doctor`, confinement.

// In layer order (blank lines keep rustfmt from sorting them).
pub mod core;

pub mod supply;

pub mod config;

pub mod sandbox;

pub mod gate;

pub mod pipeline;

pub mod control;

pub mod serve;
