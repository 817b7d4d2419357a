//! Layer 5: the call path. [`call::Airlock::call`] composes the gate and the sandbox in one
//! readable sequence of steps, over the loaded [`catalog`] and the [`operator_state`] every
//! call obeys.

pub mod call;
pub mod catalog;
pub mod operator_state;
pub mod running;
