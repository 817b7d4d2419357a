//! The audit log for investigations: which records a question selects (`--tool`,
//! `--principal`, `--outcome`, `--call`, `--since`, `--until`) and how a person reads them, for
//! `airlock audit tail` and `airlock audit search`.

use serde_json::Value;
use std::fmt::Write as _;
use std::time::SystemTime;

/// What an investigation asks for. Every condition given must hold; a record without the field
/// a condition names does not match it.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub tool: Option<String>,
    pub principal: Option<String>,
    pub outcome: Option<String>,
    /// A call id: the call's own records and its nested calls' (`parent_call_id`).
    pub call: Option<String>,
    /// A correlation id (the client's W3C trace id, or the top-level call's id): every record
    /// of that request. The client chooses it; `call` is the host's.
    pub correlation: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

impl RecordFilter {
    pub fn is_empty(&self) -> bool {
        self.tool.is_none()
            && self.principal.is_none()
            && self.outcome.is_none()
            && self.call.is_none()
            && self.correlation.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    /// Whether the record (one line of the log, parsed) is selected.
    pub fn matches(&self, r: &Value) -> bool {
        let field = |name: &str, want: &Option<String>| {
            want.as_deref().is_none_or(|w| r[name].as_str() == Some(w))
        };
        if !(field("tool", &self.tool)
            && field("principal", &self.principal)
            && field("outcome", &self.outcome)
            && field("correlation_id", &self.correlation))
        {
            return false;
        }
        if let Some(call) = &self.call
            && !["call_id", "parent_call_id"]
                .iter()
                .any(|f| r[*f].as_str() == Some(call))
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(at) = record_time(r) else {
                return false;
            };
            if self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at > u) {
                return false;
            }
        }
        true
    }
}

/// When a record was written.
pub fn record_time(r: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(r["time"].as_str()?).ok()
}

/// `--since`/`--until`: an RFC 3339 time (`2026-12-01T09:30:00Z`) or a span before now
/// (`15m`, `2h`, `1d`).
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(SystemTime::UNIX_EPOCH)),
        Err(_) => Err(format!(
            "{text:?} is neither a time (2026-12-01T09:30:00Z) nor a span before now (15m, 2h, 1d)"
        )),
    }
}

/// One record as a person reads it: the time, the sequence number, what happened, to what, by
/// whom, and how it ended. Control characters (anything a tool or a client supplied may
/// carry them) are escaped.
pub fn human(r: &Value) -> String {
    let s = |k: &str| r[k].as_str().unwrap_or("-");
    let time = s("time");
    let seq = r["seq"].as_u64().unwrap_or(0);
    let kind = s("kind");
    let mut line = format!("{time}  #{seq:<7} ");
    let _ = match kind {
        "call" | "intent" => {
            let mut l = format!(
                "{kind:<10} {} {} by {}: {}",
                s("request"),
                s("tool"),
                s("principal"),
                if kind == "intent" {
                    "about to act outside its sandbox"
                } else {
                    s("outcome")
                }
            );
            if r["tool_error"] == true {
                l.push_str(" (the tool reported an error)");
            }
            if let Some(reason) = r["reason"].as_str() {
                let _ = write!(l, " — {reason}");
            }
            let _ = write!(l, "  [call {}", s("call_id"));
            if let Some(parent) = r["parent_call_id"].as_str() {
                let _ = write!(l, ", in {parent}");
            }
            if let Some(us) = r["duration_us"].as_u64() {
                let _ = write!(l, ", {} ms", us as f64 / 1000.0);
            }
            if let Some(by) = r["approved_by"].as_str() {
                let _ = write!(l, ", approved by {by}");
            }
            l.push(']');
            line.push_str(&l);
            Ok::<(), std::fmt::Error>(())
        }
        "operator" => {
            let mut l = format!("{kind:<10} {} by {}", s("action"), s("by"));
            let mut rest = r.clone();
            if let Some(o) = rest.as_object_mut() {
                for k in ["seq", "time", "prev", "hash", "kind", "action", "by"] {
                    o.remove(k);
                }
            }
            let _ = write!(l, " {rest}");
            line.push_str(&l);
            Ok(())
        }
        "checkpoint" => {
            line.push_str(&format!(
                "{kind:<10} signed{}",
                if r["stop"] == true {
                    ", a clean stop"
                } else {
                    ""
                }
            ));
            Ok(())
        }
        _ => {
            let mut rest = r.clone();
            if let Some(o) = rest.as_object_mut() {
                for k in ["seq", "time", "prev", "hash", "kind"] {
                    o.remove(k);
                }
            }
            line.push_str(&format!("{kind:<10} {rest}"));
            Ok(())
        }
    };
    crate::core::text::escape_controls(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_select_by_field_call_and_time() {
        let r = json!({"seq": 7, "time": "2026-12-01T10:00:00.000Z", "kind": "call",
            "tool": "files_read", "principal": "alice", "outcome": "completed",
            "call_id": "c1", "parent_call_id": "p0", "correlation_id": "k9"});
        let f = |edit: &dyn Fn(&mut RecordFilter)| {
            let mut f = RecordFilter::default();
            edit(&mut f);
            f.matches(&r)
        };
        assert!(f(&|_| {}));
        assert!(f(&|f| f.tool = Some("files_read".into())));
        assert!(!f(&|f| f.tool = Some("files_write".into())));
        assert!(!f(&|f| f.principal = Some("bob".into())));
        assert!(f(&|f| f.outcome = Some("completed".into())));
        for id in ["c1", "p0"] {
            assert!(f(&|f| f.call = Some(id.into())), "{id}");
        }
        assert!(
            !f(&|f| f.call = Some("k9".into())),
            "not by the client's id"
        );
        assert!(f(&|f| f.correlation = Some("k9".into())));
        assert!(!f(&|f| f.call = Some("c2".into())));
        let at = |t: &str| humantime::parse_rfc3339(t).unwrap();
        assert!(f(&|f| f.since = Some(at("2026-12-01T09:00:00Z"))));
        assert!(!f(&|f| f.since = Some(at("2026-12-01T11:00:00Z"))));
        assert!(!f(&|f| f.until = Some(at("2026-12-01T09:00:00Z"))));
        // A record without the field is not selected by a condition on it.
        assert!(
            !RecordFilter {
                tool: Some("x".into()),
                ..Default::default()
            }
            .matches(&json!({"kind": "checkpoint"}))
        );
        assert!(parse_time("15m").is_ok() && parse_time("yesterday").is_err());
    }

    #[test]
    fn a_call_reads_as_one_line_with_controls_escaped() {
        let r = json!({"seq": 12, "time": "2026-12-01T10:00:00.000Z", "kind": "call",
            "request": "tools/call", "tool": "files_read", "principal": "alice",
            "outcome": "blocked_by_policy", "reason": "no\nforged line", "call_id": "c1",
            "duration_us": 1500});
        assert_eq!(
            human(&r),
            "2026-12-01T10:00:00.000Z  #12      call       tools/call files_read by alice: \
             blocked_by_policy — no\\nforged line  [call c1, 1.5 ms]"
        );
    }
}
