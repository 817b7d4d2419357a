//! `[metrics]`: where the Prometheus metrics are served. Off unless configured.

use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsSection {
    listen: Option<String>,
}

/// `[metrics]`, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// The address of the metrics listener (`GET /metrics`, OpenMetrics text, no
    /// authentication); `None`: no listener.
    pub listen: Option<SocketAddr>,
}

/// Connections the metrics listener holds at once (a scraper needs one or two).
pub const METRICS_MAX_CONNECTIONS: u32 = 8;

pub(crate) fn resolve(s: &MetricsSection) -> Result<MetricsSettings, (String, String)> {
    let listen = match &s.listen {
        None => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            (
                "metrics › listen".to_owned(),
                format!("{text:?} is not an address and port, such as \"127.0.0.1:9464\""),
            )
        })?),
    };
    Ok(MetricsSettings { listen })
}
