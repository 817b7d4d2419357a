//! `[audit]`: whether and where decisions are recorded. The log itself is in the gate layer.

use crate::core::units::ByteSize;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[audit]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditSection {
    mode: Option<AuditMode>,
    dir: Option<PathBuf>,
    checkpoint_every: Option<u64>,
    max_file_bytes: Option<ByteSize>,
    #[serde(default)]
    redact_patterns: Vec<String>,
}

/// Whether decisions are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditMode {
    /// Every decision is written and fsynced before the response leaves.
    Durable,
    /// No audit log (benchmarks, throwaway setups); a warning is logged at start.
    Off,
}

/// `[audit]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub mode: AuditMode,
    /// Directory of the log files (default: `<state_dir>/audit`).
    pub dir: PathBuf,
    /// A signed checkpoint after every this many records.
    pub checkpoint_every: u64,
    /// A file is closed (with a checkpoint) and a new one started past this size.
    pub max_file_bytes: ByteSize,
    /// Extra secret shapes (regular expressions) redacted from audited arguments and reasons.
    pub redact_patterns: Vec<String>,
}

pub(crate) fn resolve(
    section: &AuditSection,
    base: &Path,
    state_dir: &Path,
) -> Result<AuditSettings, (String, String)> {
    let checkpoint_every = section.checkpoint_every.unwrap_or(1000);
    if !(1..=1_000_000).contains(&checkpoint_every) {
        return Err((
            "audit › checkpoint_every".into(),
            format!("{checkpoint_every} is outside 1..=1000000"),
        ));
    }
    let max_file_bytes = section.max_file_bytes.unwrap_or(ByteSize::mib(64));
    if max_file_bytes < ByteSize::kib(4) {
        return Err((
            "audit › max_file_bytes".into(),
            "must be at least 4KiB".into(),
        ));
    }
    for (i, p) in section.redact_patterns.iter().enumerate() {
        if let Err(e) = regex::Regex::new(p) {
            return Err((format!("audit › redact_patterns[{i}]"), e.to_string()));
        }
    }
    Ok(AuditSettings {
        mode: section.mode.unwrap_or(AuditMode::Durable),
        dir: section
            .dir
            .as_ref()
            .map_or_else(|| state_dir.join("audit"), |d| base.join(d)),
        checkpoint_every,
        max_file_bytes,
        redact_patterns: section.redact_patterns.clone(),
    })
}
