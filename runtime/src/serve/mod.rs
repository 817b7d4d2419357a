//! Layer 8 (top): the process. The MCP transports (stdio and Streamable HTTP, with its
//! listener and sessions), the process's log, the `[metrics]` listener, the command line,
//! `airlock new`, `doctor`, and the host's confinement of itself.

pub mod cli;
pub mod confine;
pub mod doctor;
pub mod listener;
pub mod log;
pub mod mcp;
pub mod metrics;
pub mod new;
pub mod sessions;
pub mod stdio;
