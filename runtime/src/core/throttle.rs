//! A log line that a flood cannot multiply: refusals a client can cause at will (a bad
//! credential, a full connection table, a session over its cap) are logged at most once a
//! second each, with the count of those since the last line. The metrics count every one.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What every throttle measures its second from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// `last_ms` before the first line.
const NEVER: u64 = u64::MAX;

/// One kind of line, written at most once a second.
pub struct LogThrottle {
    since_last: AtomicU64,
    last_ms: AtomicU64,
}

impl LogThrottle {
    pub const fn new() -> Self {
        Self {
            since_last: AtomicU64::new(0),
            last_ms: AtomicU64::new(NEVER),
        }
    }

    /// Note one event. `Some(n)` when its line may be written now: `n` events happened since
    /// the last line, this one included. `None`: a line was written less than a second ago.
    pub fn admit(&self) -> Option<u64> {
        let n = self.since_last.fetch_add(1, Ordering::Relaxed) + 1;
        let now = EPOCH.elapsed().as_millis() as u64;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == NEVER || now.saturating_sub(last) >= 1000;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // Events noted between the add and this swap go to the next line's count.
            self.since_last.fetch_sub(n, Ordering::Relaxed);
            return Some(n);
        }
        None
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_counts_the_rest() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.admit(), Some(1), "the first event is logged");
        for _ in 0..99 {
            assert_eq!(
                throttle.admit(),
                None,
                "within the second: counted, not logged"
            );
        }
        // As if the last line were long ago.
        throttle.last_ms.store(NEVER, Ordering::Relaxed);
        assert_eq!(
            throttle.admit(),
            Some(100),
            "the next line counts the 99 and itself"
        );
        assert_eq!(throttle.admit(), None);
    }
}
