//! The grants of one component as an operator's revocations leave them, looked up again at
//! every use so that a revocation reaches calls already running. The revocations themselves
//! are operator state, kept by the gate layer; the sandbox sees them through [`Revocations`].

use crate::config::grants::Grants;
use std::sync::Arc;

/// Where the revocations in force come from.
pub trait Revocations: Send + Sync {
    /// The grants of `component` left in force, out of those `configured`.
    fn grants_left(&self, component: &str, configured: &Arc<Grants>) -> Arc<Grants>;

    /// An empty directory shown to a call in place of each revoked filesystem grant, so that
    /// the guest's opens there reach the host and end as a revocation rather than failing in
    /// the guest's libc as a path that does not exist. `None`: revoked grants are left out.
    fn standin_dir(&self) -> Option<&std::path::Path>;
}

/// The grants of one component, with the revocations in force applied at every use.
#[derive(Clone)]
pub struct LiveGrants {
    base: Arc<Grants>,
    component: Arc<str>,
    revocations: Option<Arc<dyn Revocations>>,
}

impl LiveGrants {
    pub fn new(base: Arc<Grants>, component: Arc<str>, revocations: Arc<dyn Revocations>) -> Self {
        LiveGrants {
            base,
            component,
            revocations: Some(revocations),
        }
    }

    /// Grants no operator can change (a component's `describe()` run, benches).
    pub fn fixed(base: Arc<Grants>) -> Self {
        LiveGrants {
            base,
            component: Arc::from(""),
            revocations: None,
        }
    }

    /// The grants in force now.
    pub fn current(&self) -> Arc<Grants> {
        match &self.revocations {
            None => self.base.clone(),
            Some(r) => r.grants_left(&self.component, &self.base),
        }
    }

    /// The grants as configured, before revocations.
    pub fn configured(&self) -> &Grants {
        &self.base
    }

    /// Where a revoked filesystem grant is shown instead ([`Revocations::standin_dir`]).
    pub fn standin_dir(&self) -> Option<&std::path::Path> {
        self.revocations.as_deref().and_then(|r| r.standin_dir())
    }
}
