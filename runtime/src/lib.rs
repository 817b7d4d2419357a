//! Airlock: a sandboxed tool-execution runtime for the Model Context Protocol.
//!
//! Tools are WASI components; every call runs in a fresh wasmtime store under CPU, memory, time
//! and stack limits. The call path is [`pipeline::Airlock::call`].

pub mod admin;
pub mod approval;
pub mod audit;
pub mod auth;
pub mod bundled;
pub mod capture;
pub mod catalog;
pub mod cli;
pub mod confine;
pub mod ctl;
pub mod doctor;
pub mod egress;
pub mod engine;
pub mod failure;
pub mod grants;
pub mod journal;
pub mod keyfile;
pub mod live;
pub mod mcp;
pub mod operator;
pub mod output;
pub mod overrides;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod risk;
pub mod running;
pub mod sandbox;
pub mod secrets;
pub mod units;
pub mod verified_tokens;
