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
    // Exports are awaited so a call can yield at epoch ticks and be cancelled. `log`,
    // `progress` and `cancelled` are cheap and never block, so they stay synchronous; `log`
    // and `progress` may end the run (a call over its message budget). The imports that wait
    // for a human or run a nested call are async, and may end the run (a trap carrying the
    // reason) when the call cannot go on.
    exports: { default: async },
    imports: {
        "airlock:tool/host.log": trappable,
        "airlock:tool/host.progress": trappable,
        "airlock:tool/host.confirm": async | trappable,
        "airlock:tool/host.elicit": async | trappable,
        "airlock:tool/host.call-tool": async | trappable,
    },
});

pub use airlock::tool::host::{ElicitAnswer, Host, LogLevel, NestedFailure};
pub use airlock::tool::types::{Content, EmbeddedResource, Hints, Media, ResourceBody};
