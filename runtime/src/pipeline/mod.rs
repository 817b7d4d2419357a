//! Layer 6: the call path. [`call::Airlock::call`] composes the gate and the sandbox in one
//! readable sequence of steps, over the loaded [`catalog`] and the [`operator_state`] every
//! call obeys, with the calls in progress registered in [`running`].

pub mod call;
pub mod catalog;
pub mod operator_state;
pub mod running;
