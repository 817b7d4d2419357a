//! Layer 1 (bottom): small shared types with no behaviour beyond themselves. Every other layer
//! may use them; they use nothing of Airlock's. `metrics` is the one piece of shared state:
//! the process's counters, which every layer records into.

pub mod canonical;
pub mod denial;
pub mod failure;
pub mod files;
pub mod ids;
pub mod interaction;
pub mod kill_scope;
pub mod metrics;
pub mod principal;
pub mod redact;
pub mod text;
pub mod throttle;
pub mod units;
