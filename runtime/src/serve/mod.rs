//! Layer 7 (top): the process. The MCP transports (stdio and Streamable HTTP), the command
//! line, `doctor`, and the host's confinement of itself.

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
