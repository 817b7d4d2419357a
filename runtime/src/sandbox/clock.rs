//! A call's clock: its wall-clock deadline, which time spent waiting for people does not
//! use up.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A call's wall-clock deadline: its timeout, moved later by the time spent waiting for people
/// who answered, and never later than its calling call's deadline (a nested call).
#[derive(Clone)]
pub struct Clock {
    end: Instant,
    pause: Arc<Pause>,
    waited_at_start: Duration,
    parent: Option<Arc<Clock>>,
}

impl Clock {
    pub fn start(timeout: Duration, parent: Option<Clock>, pause: Arc<Pause>) -> Clock {
        Clock {
            end: Instant::now() + timeout,
            waited_at_start: pause.waited(),
            pause,
            parent: parent.map(Arc::new),
        }
    }

    /// The deadline as it stands now.
    pub fn end(&self) -> Instant {
        let own = self.end + self.pause.waited().saturating_sub(self.waited_at_start);
        self.parent.as_ref().map_or(own, |p| p.end().min(own))
    }

    /// Resolves once the deadline has passed with no one being waited for.
    pub async fn expired(&self) {
        loop {
            let end = self.end();
            tokio::time::sleep_until(end.into()).await;
            if self.pause.waiting() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            } else if Instant::now() >= self.end() {
                return;
            }
        }
    }
}

/// Time spent waiting for people, which does not count against a call's wall-clock limit.
#[derive(Default)]
pub struct Pause {
    waiting: AtomicU32,
    waited_ns: AtomicU64,
    /// Waits that ended without an answer: they count against the clock after all, so that
    /// a tool asking again and again cannot run on for ever.
    forfeited_ns: AtomicU64,
}

impl Pause {
    /// Whether someone is being waited for now.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Total time waited so far.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(
            self.waited_ns
                .load(Ordering::Acquire)
                .saturating_sub(self.forfeited_ns.load(Ordering::Acquire)),
        )
    }

    pub fn forfeit(&self, d: Duration) {
        self.forfeited_ns
            .fetch_add(d.as_nanos() as u64, Ordering::AcqRel);
    }

    pub async fn during<T>(&self, f: impl Future<Output = T>) -> T {
        struct Waiting<'a>(&'a Pause, Instant);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0
                    .waited_ns
                    .fetch_add(self.1.elapsed().as_nanos() as u64, Ordering::AcqRel);
                self.0.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _guard = Waiting(self, Instant::now());
        f.await
    }
}
