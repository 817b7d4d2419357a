//! Layer 4: running one call of a component. The wasmtime engines and the compile cache, the
//! fresh store per call under its limits, grants turned into a WASI context, network egress,
//! the filesystem imports and the quotas of writable grants, live grants (as revocations leave
//! them), the call's clock, output conversion and capture, and generic (non-`airlock:tool`)
//! components. Knows nothing of MCP, authentication or the audit log; it asks the layers above
//! for people and nested calls through [`store::CallServices`].

pub mod capture;
pub mod clock;
pub mod egress;
pub mod engine;
pub mod files;
pub mod generic;
pub mod live_grants;
pub mod output;
pub mod quota;
pub mod store;
