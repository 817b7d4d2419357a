//! Who makes a call, once authenticated.

use std::sync::Arc;

/// The principal of HTTP requests with `[auth] mode = "none"` (loopback only).
pub const ANONYMOUS_PRINCIPAL: &str = "anonymous";

/// The principal of a request the auth layer did not vouch for (it can do nothing).
pub const UNAUTHENTICATED_PRINCIPAL: &str = "unauthenticated";

/// Names only Airlock itself gives: no API key, JWT subject or local principal may take
/// them, so that one principal's kills, rate limits, approvals and audit trail cannot be
/// another's.
pub const RESERVED_PRINCIPALS: [&str; 2] = [ANONYMOUS_PRINCIPAL, UNAUTHENTICATED_PRINCIPAL];

/// What a principal may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every tool: the local principal, and everyone when `mode = "none"`.
    All,
    /// The tools of these roles (shared: a principal is cloned into every request).
    Roles(Arc<[String]>),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: Arc<str>,
    pub access: Access,
}

impl Principal {
    /// May this principal use a component whose tools are granted to `roles`?
    pub fn may_use(&self, roles: &[String]) -> bool {
        match &self.access {
            Access::All => true,
            Access::Roles(mine) => mine.iter().any(|r| roles.contains(r)),
        }
    }
}
