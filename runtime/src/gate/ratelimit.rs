//! Rate limits: token buckets per principal and per tool (`[rate_limits]`, `[[tool]]
//! rate_limit`). The per-tool concurrency limit is `max_in_flight` (pipeline admission).
//!
//! In a fleet (`[fleet]`) the buckets are the fleet's, in its store ([`Fleet::take_tokens`]):
//! a replica takes a few tokens at once (`rate_lease`) and spends them locally for at most
//! [`LEASE_LIFETIME`], so the fleet admits at most `replicas × (lease − 1)` calls beyond a
//! bucket over any interval (the tokens leased and not yet spent), and a busy bucket costs
//! one store round trip per lease, not per call.

use crate::config::policy::RateLimitSettings;
use crate::core::failure::CallFailure;
use crate::core::units::Rate;
use crate::gate::fleet::Fleet;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long tokens leased from a fleet's bucket may be spent here: a lease unused by then
/// goes back to no one (the fleet admits fewer calls, never more).
pub const LEASE_LIFETIME: Duration = Duration::from_secs(1);
/// Buckets with tokens leased here at once; beyond it, what a lease leaves over is not kept
/// (the next call of that bucket asks the store again).
const MAX_LEASES: usize = 10_000;

/// Tokens of a fleet bucket this replica took and has not spent.
struct Lease {
    tokens: u32,
    until: Instant,
}

/// The token bucket of `rate`: a burst of its calls, refilled over its window.
fn quota(rate: &Rate) -> Quota {
    let period = rate.per / rate.calls.get();
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("a non-zero period")
        .allow_burst(rate.calls)
}

/// The live buckets.
pub struct RateLimits {
    principal: Option<(Rate, Arc<DefaultKeyedRateLimiter<Arc<str>>>)>,
    tools: HashMap<String, (Rate, Arc<DefaultDirectRateLimiter>)>,
    clock: DefaultClock,
    /// In a fleet: the tokens leased from its buckets, by bucket.
    leases: Mutex<HashMap<String, Lease>>,
}

impl RateLimits {
    /// Buckets for `settings` and each tool's rate (`None`: the `per_tool` default, if any).
    pub fn new<'a>(
        settings: &RateLimitSettings,
        tools: impl IntoIterator<Item = (&'a str, Option<Rate>)>,
    ) -> RateLimits {
        RateLimits::inheriting(settings, tools, None)
    }

    /// The same, keeping the buckets of `previous` (a reload) wherever the rate is unchanged,
    /// so a reload does not refill them.
    pub fn inheriting<'a>(
        settings: &RateLimitSettings,
        tools: impl IntoIterator<Item = (&'a str, Option<Rate>)>,
        previous: Option<&RateLimits>,
    ) -> RateLimits {
        let principal =
            settings
                .per_principal
                .map(|r| match previous.and_then(|p| p.principal.as_ref()) {
                    Some((old, limiter)) if *old == r => (r, limiter.clone()),
                    _ => (r, Arc::new(RateLimiter::keyed(quota(&r)))),
                });
        let tools = tools
            .into_iter()
            .filter_map(|(name, own)| {
                let r = own.or(settings.per_tool)?;
                let limiter = match previous.and_then(|p| p.tools.get(name)) {
                    Some((old, limiter)) if *old == r => limiter.clone(),
                    _ => Arc::new(RateLimiter::direct(quota(&r))),
                };
                Some((name.to_owned(), (r, limiter)))
            })
            .collect();
        RateLimits {
            principal,
            tools,
            clock: DefaultClock::default(),
            leases: Mutex::default(),
        }
    }

    /// Take one call from the principal's own bucket, or say when to retry: taken before
    /// anything is looked up, so that a flood of unknown names is limited too. In a fleet,
    /// from the fleet's bucket.
    pub async fn check_principal(
        &self,
        fleet: Option<&Fleet>,
        principal: &Arc<str>,
    ) -> Result<(), CallFailure> {
        if let (Some(fleet), Some((rate, _))) = (fleet, &self.principal) {
            return self
                .take_shared(fleet, format!("principal:{principal}"), rate, || {
                    format!("principal {principal}")
                })
                .await;
        }
        if let Some((rate, limiter)) = &self.principal
            && let Err(not_until) = limiter.check_key(principal)
        {
            return Err(CallFailure::RateLimited {
                scope: format!("principal {principal}"),
                rate: *rate,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        Ok(())
    }

    /// Take one call from the bucket of a tool (or of a component's resources or prompts), if
    /// it has one, or say when to retry. In a fleet, from the fleet's bucket.
    pub async fn check_bucket(&self, fleet: Option<&Fleet>, tool: &str) -> Result<(), CallFailure> {
        if let (Some(fleet), Some((rate, _))) = (fleet, self.tools.get(tool)) {
            return self
                .take_shared(fleet, format!("tool:{tool}"), rate, || {
                    format!("tool {tool}")
                })
                .await;
        }
        if let Some((rate, limiter)) = self.tools.get(tool)
            && let Err(not_until) = limiter.check()
        {
            return Err(CallFailure::RateLimited {
                scope: format!("tool {tool}"),
                rate: *rate,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        Ok(())
    }

    /// One call from the fleet's bucket `bucket`: a token leased here earlier, or a new lease
    /// from the store.
    async fn take_shared(
        &self,
        fleet: &Fleet,
        bucket: String,
        rate: &Rate,
        scope: impl FnOnce() -> String,
    ) -> Result<(), CallFailure> {
        {
            let mut leases = lock(&self.leases);
            if let Some(lease) = leases.get_mut(&bucket)
                && lease.tokens > 0
                && lease.until > Instant::now()
            {
                lease.tokens -= 1;
                return Ok(());
            }
        }
        let capacity = rate.calls.get();
        let per_ms = f64::from(capacity) / rate.per.as_secs_f64().max(1e-9) / 1000.0;
        let (got, wait) = fleet
            .take_tokens(&bucket, capacity, per_ms, fleet.lease_for(capacity))
            .await
            .map_err(|e| CallFailure::FleetUnavailable(e.0))?;
        if got == 0 {
            return Err(CallFailure::RateLimited {
                scope: scope(),
                rate: *rate,
                retry_after: wait,
            });
        }
        if got > 1 {
            let now = Instant::now();
            let mut leases = lock(&self.leases);
            if leases.len() >= MAX_LEASES {
                leases.retain(|_, l| l.tokens > 0 && l.until > now);
            }
            if leases.len() < MAX_LEASES || leases.contains_key(&bucket) {
                let lease = leases.entry(bucket).or_insert(Lease {
                    tokens: 0,
                    until: now,
                });
                // Tokens left of an expired lease are not spent.
                let kept = if lease.until > now { lease.tokens } else { 0 };
                *lease = Lease {
                    tokens: kept + got - 1,
                    until: now + LEASE_LIFETIME,
                };
            }
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_limit() {
        assert_eq!("10/s".parse::<Rate>().unwrap().to_string(), "10/s");
        assert_eq!("1_000/h".parse::<Rate>().unwrap().to_string(), "1000/h");
        for bad in ["0/s", "10", "10/d", "x/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let limits = RateLimits::new(
            &RateLimitSettings {
                per_principal: Some("2/m".parse().unwrap()),
                per_tool: None,
            },
            [("t", Some("3/m".parse().unwrap()))],
        );
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        // As the call path takes them: the principal's bucket, then the tool's.
        let check = |p: &Arc<str>| {
            futures_util::FutureExt::now_or_never(async {
                limits.check_principal(None, p).await?;
                limits.check_bucket(None, "t").await
            })
            .expect("no fleet: nothing waits")
        };
        assert!(check(&a).is_ok());
        assert!(check(&a).is_ok());
        match check(&a) {
            Err(CallFailure::RateLimited {
                scope, retry_after, ..
            }) => {
                assert_eq!(scope, "principal a");
                assert!(retry_after > Duration::ZERO);
            }
            other => panic!("{other:?}"),
        }
        // Another principal still has its own bucket, but the tool's is now empty.
        assert!(check(&b).is_ok());
        assert!(matches!(
            check(&b),
            Err(CallFailure::RateLimited { ref scope, .. }) if scope == "tool t"
        ));
    }
}
