//! The host's imports. In a component (`wasm32`) they are the real `airlock:tool/host`; under a
//! native `cargo test` they go to the [`crate::testing::TestHost`] the test runs under, so that
//! tools that log, ask, call other tools or read settings can be unit-tested.

pub use crate::bindings::airlock::tool::host::*;

// These names shadow the generated functions of the glob import above.
#[cfg(not(target_arch = "wasm32"))]
pub use crate::testing::imports::{
    ask, call_tool, caller, cancelled, client_supports, confirm, elicit, list_changed, log,
    progress, resource_updated, sample, setting, settings,
};
