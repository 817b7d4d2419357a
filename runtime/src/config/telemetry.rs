//! `[telemetry]`: OpenTelemetry traces exported over OTLP/HTTP. Off unless configured.

use crate::core::units::Span;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelemetrySection {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    timeout: Option<Span>,
}

/// `[telemetry]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// Where spans are POSTed (OTLP/HTTP, protobuf): `<otlp_endpoint>/v1/traces`.
    pub traces_url: String,
    /// The `service.name` of every span.
    pub service_name: String,
    /// The longest one export may take.
    pub timeout: Span,
}

impl TelemetrySettings {
    /// The port the host connects to (for the confinement plan).
    pub fn port(&self) -> u16 {
        crate::config::auth::host_url_port(&self.traces_url)
    }

    /// Whether the collector's host is a name (looked up over DNS).
    pub fn by_name(&self) -> bool {
        crate::config::auth::host_url_by_name(&self.traces_url)
    }
}

pub(crate) fn resolve(s: &TelemetrySection) -> Result<Option<TelemetrySettings>, (String, String)> {
    let Some(endpoint) = &s.otlp_endpoint else {
        if s.service_name.is_some() || s.timeout.is_some() {
            return Err((
                "telemetry".into(),
                "service_name or timeout set without otlp_endpoint: there is nowhere to send \
                 traces"
                    .into(),
            ));
        }
        return Ok(None);
    };
    crate::config::auth::check_host_url(endpoint)
        .map_err(|e| ("telemetry › otlp_endpoint".to_owned(), e))?;
    if endpoint.contains(['?', '#']) {
        return Err((
            "telemetry › otlp_endpoint".into(),
            "must have no query or fragment (spans go to <endpoint>/v1/traces)".into(),
        ));
    }
    let base = endpoint.trim_end_matches('/');
    let traces_url = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    let service_name = s.service_name.clone().unwrap_or_else(|| "airlock".into());
    if service_name.is_empty()
        || service_name.len() > 128
        || service_name.chars().any(|c| c.is_control())
    {
        return Err((
            "telemetry › service_name".into(),
            "must be 1 to 128 characters, none of them a control character".into(),
        ));
    }
    let timeout = s.timeout.unwrap_or(Span(Duration::from_secs(10)));
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&timeout.0) {
        return Err((
            "telemetry › timeout".into(),
            "must be between 100ms and 60s".into(),
        ));
    }
    Ok(Some(TelemetrySettings {
        traces_url,
        service_name,
        timeout,
    }))
}
