//! Rate limits: token buckets per principal and per tool (`[rate_limits]`, `[[tool]]
//! rate_limit`). The per-tool concurrency limit is `max_in_flight` (pipeline admission).

use crate::config::policy::RateLimitSettings;
use crate::core::failure::CallFailure;
use crate::core::units::Rate;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
        }
    }

    /// Take one call from the principal's own bucket, or say when to retry: taken before
    /// anything is looked up, so that a flood of unknown names is limited too.
    pub fn check_principal(&self, principal: &Arc<str>) -> Result<(), CallFailure> {
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
    /// it has one, or say when to retry.
    pub fn check_bucket(&self, tool: &str) -> Result<(), CallFailure> {
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
            limits
                .check_principal(p)
                .and_then(|()| limits.check_bucket("t"))
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
