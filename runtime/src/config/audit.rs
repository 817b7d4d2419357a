//! `[audit]`: whether and where decisions are recorded. The log itself is in the gate layer.

use crate::core::units::{ByteSize, Span};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[audit]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditSection {
    mode: Option<AuditMode>,
    durability: Option<Durability>,
    flush_interval: Option<Span>,
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
    /// Every decision is recorded before its response leaves, as durably as `durability` says.
    Durable,
    /// No audit log (benchmarks, throwaway setups); a warning is logged at start.
    Off,
}

/// When a call's response may leave, relative to its record reaching stable storage
/// (`[audit] durability`). Either way the response waits for its record to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The response waits until its record is on stable storage: nothing acknowledged is lost,
    /// even when the machine stops. The default.
    Machine,
    /// The response waits until its record is in the kernel (it survives `kill -9` of Airlock);
    /// the log reaches stable storage at least every `flush_interval`. A machine crash can lose
    /// the records of that window, and the next start records that the last stop was unclean.
    Process,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Machine => "machine",
            Durability::Process => "process",
        }
    }
}

/// `flush_interval`'s default and range.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(10);
const FLUSH_INTERVAL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(1);

/// `[audit]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub mode: AuditMode,
    /// When a response may leave: its record on stable storage, or in the kernel.
    pub durability: Durability,
    /// With `durability = "process"`, the longest a written record waits to be flushed.
    pub flush_interval: Duration,
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
    let flush_interval = section
        .flush_interval
        .map_or(DEFAULT_FLUSH_INTERVAL, |s| s.0);
    if !FLUSH_INTERVAL_RANGE.contains(&flush_interval) {
        return Err((
            "audit › flush_interval".into(),
            format!("{} is outside 1 ms..=1 s", Span(flush_interval)),
        ));
    }
    let durability = section.durability.unwrap_or(Durability::Machine);
    if section.flush_interval.is_some() && durability == Durability::Machine {
        return Err((
            "audit › flush_interval".into(),
            "applies only with durability = \"process\" (with \"machine\" every response waits for its own flush)".into(),
        ));
    }
    for (i, p) in section.redact_patterns.iter().enumerate() {
        if let Err(e) = regex::Regex::new(p) {
            return Err((format!("audit › redact_patterns[{i}]"), e.to_string()));
        }
    }
    Ok(AuditSettings {
        mode: section.mode.unwrap_or(AuditMode::Durable),
        durability,
        flush_interval,
        dir: section
            .dir
            .as_ref()
            .map_or_else(|| state_dir.join("audit"), |d| base.join(d)),
        checkpoint_every,
        max_file_bytes,
        redact_patterns: section.redact_patterns.clone(),
    })
}
