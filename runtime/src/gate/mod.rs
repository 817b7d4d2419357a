//! Layer 4: the per-call controls other than the sandbox. Authentication, rate limits, the
//! operator's kill switch and revocations, approvals and their tickets, and the audit log
//! with its journal.

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
