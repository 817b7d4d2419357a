//! Notifications to the `[notify]` webhook: a JSON POST when a call starts waiting for an
//! operator and when an operator kills something. They are the host's own egress
//! ([`crate::gate::host_http`]): one connection each, under the configured timeout, at most
//! [`MAX_IN_FLIGHT`] at once (more are dropped and logged: a flood of questions must not
//! become a flood of connections). A failure is logged and changes nothing else: the log line
//! and `airlock ctl approvals watch` show the same events.

use crate::config::notify::NotifySettings;
use arc_swap::ArcSwapOption;
use std::sync::Arc;

/// Notifications on their way at once.
pub const MAX_IN_FLIGHT: usize = 16;

static TARGET: ArcSwapOption<NotifySettings> = ArcSwapOption::const_empty();
static IN_FLIGHT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_IN_FLIGHT);

/// Put `[notify]` in force (at start and at each reload).
pub fn configure(settings: Option<&NotifySettings>) {
    TARGET.store(settings.cloned().map(Arc::new));
}

/// Send `event` (an object with an `"event"` name) to the webhook, if one is configured,
/// without waiting for it.
pub fn send(event: serde_json::Value) {
    let Some(target) = TARGET.load_full() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let name = event["event"].as_str().unwrap_or("event").to_owned();
    let Ok(permit) = IN_FLIGHT.try_acquire() else {
        tracing::warn!(
            target: "airlock::notify",
            "{name} notification dropped: {MAX_IN_FLIGHT} notifications are already on their way to {}",
            crate::gate::host_http::shown_origin(&target.url)
        );
        return;
    };
    let body = event.to_string().into_bytes();
    runtime.spawn(async move {
        let _permit = permit;
        let sent = crate::gate::host_http::send(crate::gate::host_http::HostRequest {
            url: &target.url,
            json: Some(body),
            timeout: target.timeout.0,
            max_answer_bytes: 64 << 10,
        })
        .await;
        if let Err(e) = sent {
            tracing::warn!(
                target: "airlock::notify",
                "{name} notification to {} failed: {e}",
                crate::gate::host_http::shown_origin(&target.url)
            );
        }
    });
}
