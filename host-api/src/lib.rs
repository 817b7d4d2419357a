//! The `airlock:tool` contract: the WIT package in `wit/` and the wasmtime host bindings
//! generated from it.
//!
//! The runtime links the `host` interface and calls the `describe` and `call` exports through
//! these bindings; tool authors use the same WIT through the guest SDK.

/// The WIT source of the contract, for tools and docs that want to show it.
pub const WIT: &str = include_str!("../wit/tool.wit");

wasmtime::component::bindgen!({
    path: "wit",
    world: "tool",
    // Exports are awaited so a call can yield at epoch ticks and be cancelled; the host imports
    // are cheap and never block, so they stay synchronous.
    exports: { default: async },
});

pub use airlock::tool::host::{Host, LogLevel};
pub use airlock::tool::types::{Content, EmbeddedResource, Hints, Media, ResourceBody};
