//! The calls running now, for `airlock ctl calls` and for stopping them (`--interrupt`).

use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One call between admission and its end.
pub struct Running {
    pub call_id: String,
    /// The tool, or the prompt, URI or template a read, get or completion names.
    pub tool: Arc<str>,
    /// What it is, when not a tool call: the resources or the prompts of its entry.
    pub family: Option<crate::gate::overrides::Family>,
    /// The `[[tool]]` entry.
    pub component: Arc<str>,
    pub principal: Arc<str>,
    /// The sha256 of the call's arguments (canonical JSON), as its audit record has it.
    pub arguments_sha256: Arc<str>,
    pub started: Instant,
    /// Fuel left, brought up to date by the store at every epoch tick.
    pub fuel_left: Arc<AtomicU64>,
    pub fuel_budget: u64,
    /// Fired by an operator: the call stops at its next epoch tick or await.
    pub stop: CancellationToken,
}

/// What `ctl calls` shows of a call.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CallView {
    pub call_id: String,
    pub tool: String,
    pub component: String,
    pub principal: String,
    /// What the call was asked to do, as a digest (`ctl calls` shows no argument values).
    #[serde(default)]
    pub arguments_sha256: String,
    pub age_ms: u64,
    pub fuel_used: u64,
}

/// The registry. Calls add themselves at admission and leave when their guard drops.
#[derive(Default)]
pub struct RunningCalls {
    calls: Mutex<HashMap<u64, Arc<Running>>>,
    next: AtomicU64,
}

/// Removes its call from the registry when dropped.
pub struct Registered<'a> {
    registry: &'a RunningCalls,
    key: u64,
    pub call: Arc<Running>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

impl RunningCalls {
    pub fn register(&self, call: Running) -> Registered<'_> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let call = Arc::new(call);
        self.lock().insert(key, call.clone());
        Registered {
            registry: self,
            key,
            call,
        }
    }

    /// Every running call, oldest first.
    pub fn list(&self) -> Vec<CallView> {
        let mut calls: Vec<CallView> = self
            .lock()
            .values()
            .map(|c| CallView {
                call_id: c.call_id.clone(),
                tool: c.tool.to_string(),
                component: c.component.to_string(),
                principal: c.principal.to_string(),
                arguments_sha256: c.arguments_sha256.to_string(),
                age_ms: c.started.elapsed().as_millis() as u64,
                fuel_used: c
                    .fuel_budget
                    .saturating_sub(c.fuel_left.load(Ordering::Relaxed)),
            })
            .collect();
        calls.sort_by_key(|c| std::cmp::Reverse(c.age_ms));
        calls
    }

    /// Stop every running call `hit` selects. Returns the ids of the calls stopped.
    pub fn interrupt(&self, hit: impl Fn(&Running) -> bool) -> Vec<String> {
        let calls = self.lock();
        let mut stopped = Vec::new();
        for c in calls.values() {
            if hit(c) && !c.stop.is_cancelled() {
                c.stop.cancel();
                stopped.push(c.call_id.clone());
            }
        }
        stopped
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Running>>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }
}
