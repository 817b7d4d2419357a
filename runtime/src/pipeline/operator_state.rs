//! The operator state a serving process keeps across reloads, which every call obeys: the
//! overrides (kills and revocations), the calls running, and the approval queue and tickets.
//! The operator commands that change it are in the control layer.

use crate::gate::approval::Approvals;
use crate::gate::overrides::OverrideStore;
use crate::pipeline::running::RunningCalls;
use crate::sandbox::store::Signal;
use std::sync::Arc;

/// The operator state a serving process keeps across reloads.
pub struct OperatorState {
    pub overrides: Arc<OverrideStore>,
    pub running: RunningCalls,
    /// Approval tickets and the operator queue.
    pub approvals: Approvals,
    /// Configurations put in force since the start: a call that waited for a person across a
    /// reload is refused rather than run under the configuration it started with.
    pub reloads: std::sync::atomic::AtomicU64,
    /// Components' signals (lists changed, a resource updated), for every session that
    /// listens. Bounded: a session that falls behind misses the oldest, never holds the rest up.
    pub signals: tokio::sync::broadcast::Sender<Signal>,
    /// Content-safety detections per tool and rule since the start (`airlock ctl safety`).
    pub detections: crate::gate::safety::DetectionCounts,
    /// The fleet store the overrides, approvals and rate limits are shared through
    /// (`[fleet]`), once joined (the approvals' own link).
    pub fleet: Arc<std::sync::OnceLock<Arc<crate::gate::fleet::Fleet>>>,
}

/// Signals kept for a session that has not read them yet; beyond this it misses the oldest.
const SIGNALS_KEPT: usize = 256;

impl OperatorState {
    pub fn new(overrides: OverrideStore, approvals: Approvals) -> Arc<OperatorState> {
        Arc::new(OperatorState {
            fleet: approvals.fleet.clone(),
            overrides: Arc::new(overrides),
            running: RunningCalls::default(),
            approvals,
            reloads: std::sync::atomic::AtomicU64::new(0),
            signals: tokio::sync::broadcast::channel(SIGNALS_KEPT).0,
            detections: Default::default(),
        })
    }

    /// State kept in memory only (library use, benches).
    pub fn in_memory() -> Arc<OperatorState> {
        OperatorState::new(OverrideStore::in_memory(), Approvals::ephemeral())
    }
}
