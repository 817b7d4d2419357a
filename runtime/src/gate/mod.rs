//! Layer 5: the per-call controls other than the sandbox. Authentication (API keys, JWTs and
//! the verified-token cache, client certificates, DPoP), rate limits, each principal's
//! in-flight slots, the operator's kill switch and revocations (on one machine or shared by a
//! fleet), approvals and their tickets, content safety, the audit log with its journal, its
//! readable view and evidence bundles, and the host's own outgoing requests (the `[notify]`
//! webhook, OpenTelemetry traces).

pub mod approval;
pub mod audit;
pub mod audit_view;
pub mod auth;
pub mod client_cert;
pub mod dpop;
pub mod evidence;
pub mod fleet;
pub mod host_http;
pub mod in_flight;
pub mod journal;
pub mod notify;
pub mod overrides;
pub mod ratelimit;
pub mod safety;
pub mod telemetry;
pub mod verified_tokens;
