//! Layer 7: the operator plane. Operator commands (kill, revoke, …), live reload, the admin
//! socket server, and `airlock ctl`, its client. Never reachable through MCP.

pub mod admin;
pub mod ctl;
pub mod live;
pub mod operator;
