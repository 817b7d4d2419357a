//! `[notify]`: a webhook told when a call starts waiting for an operator and when an operator
//! kills something. Off unless configured.

use crate::core::units::Span;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifySection {
    url: Option<String>,
    timeout: Option<Span>,
}

/// `[notify]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// Where each notification is POSTed (JSON): https, or http to a loopback address.
    pub url: String,
    /// The longest one notification may take (connect, send, answer).
    pub timeout: Span,
}

impl NotifySettings {
    /// The port the host connects to (for the confinement plan).
    pub fn port(&self) -> u16 {
        crate::config::auth::host_url_port(&self.url)
    }

    /// Whether its host is a name (looked up over DNS).
    pub fn by_name(&self) -> bool {
        crate::config::auth::host_url_by_name(&self.url)
    }
}

pub(crate) fn resolve(s: &NotifySection) -> Result<Option<NotifySettings>, (String, String)> {
    let Some(url) = &s.url else {
        if s.timeout.is_some() {
            return Err((
                "notify › timeout".into(),
                "set without notify › url: there is nothing to notify".into(),
            ));
        }
        return Ok(None);
    };
    crate::config::auth::check_host_url(url).map_err(|e| ("notify › url".to_owned(), e))?;
    let timeout = s.timeout.unwrap_or(Span(Duration::from_secs(5)));
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&timeout.0) {
        return Err((
            "notify › timeout".into(),
            "must be between 100ms and 60s".into(),
        ));
    }
    Ok(Some(NotifySettings {
        url: url.clone(),
        timeout,
    }))
}
