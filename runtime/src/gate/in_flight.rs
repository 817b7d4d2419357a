//! Calls each principal has in flight. The server's slots (`[server] max_in_flight`) are
//! shared by everyone; without a share per principal, one client holding slow calls (or calls
//! waiting on a person) would leave every other principal with `server_busy`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The top-level calls in flight per principal, under one limit. Only principals with calls
/// in flight have an entry: the map is never larger than the server's slots.
#[derive(Debug)]
pub struct PrincipalSlots {
    held: Mutex<HashMap<Arc<str>, u32>>,
    limit: AtomicU32,
}

/// One principal's slot, given back when dropped.
#[derive(Debug)]
pub struct PrincipalSlot {
    slots: Arc<PrincipalSlots>,
    principal: Arc<str>,
}

impl PrincipalSlots {
    pub fn new(limit: u32) -> Arc<PrincipalSlots> {
        Arc::new(PrincipalSlots {
            held: Mutex::default(),
            limit: AtomicU32::new(limit),
        })
    }

    /// The limit for calls taken from now on (a reload); calls in flight keep their slots.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// A slot for `principal`, or `None` when it has the limit's worth in flight.
    pub fn take(self: &Arc<Self>, principal: &Arc<str>) -> Option<PrincipalSlot> {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(principal.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PrincipalSlot {
            slots: self.clone(),
            principal: principal.clone(),
        })
    }

    /// The limit in force.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }
}

impl Drop for PrincipalSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_principal_gets_its_share_and_gives_it_back() {
        let slots = PrincipalSlots::new(2);
        let (alice, bob): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("bob"));
        let a1 = slots.take(&alice).unwrap();
        let _a2 = slots.take(&alice).unwrap();
        assert!(slots.take(&alice).is_none());
        // Another principal is not affected.
        let b = slots.take(&bob).unwrap();
        drop(a1);
        assert!(slots.take(&alice).is_some());
        drop(b);
        slots.set_limit(1);
        assert_eq!(slots.held.lock().unwrap().get(&bob), None);
    }
}
