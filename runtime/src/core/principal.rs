//! Who makes a call, once authenticated.

use std::sync::Arc;

/// The principal of HTTP requests with `[auth] mode = "none"` (loopback only).
pub const ANONYMOUS_PRINCIPAL: &str = "anonymous";

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
