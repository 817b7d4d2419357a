//! Layer 3: the `airlock.toml` model, its parsing and validation, and the secrets it names,
//! loaded: the policy and `[server]`, `[trust]` and `airlock.lock`, grants, tiers and rules,
//! `[auth]` and `[roles]`, `[audit]`, `[confine]`, `[metrics]`, `[telemetry]`, `[notify]`,
//! `[server.tls]`, `[fleet]`, `[safety]`, `[secrets]`, tool settings, and the bundled
//! components. Everything that can be checked is checked here, at load time. Uses `core` and
//! `supply`.

pub mod audit;
pub mod auth;
pub mod bundled;
pub mod confine;
pub mod fleet;
pub mod grants;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod risk;
pub mod safety;
pub mod secrets;
pub mod telemetry;
pub mod tls;
pub mod tool_settings;
