//! Time and date math on RFC 3339 timestamps.

use airlock_sdk::{Json, Tool, ToolError, Toolbox, export_tools};
use chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn parse_time(field: &str, s: &str) -> Result<DateTime<FixedOffset>, ToolError> {
    DateTime::parse_from_rfc3339(s).map_err(|e| {
        ToolError::invalid(format!("`{field}` is not an RFC 3339 timestamp ({e}): {s}"))
    })
}

/// Parses `[-]<n><unit>...` with units w, d, h, m, s, ms, for example `1d2h30m` or `-90s`.
fn parse_duration(s: &str) -> Result<TimeDelta, ToolError> {
    let bad = || {
        ToolError::invalid(format!(
            "`duration` must look like `1d2h30m`, `-90s` or `250ms`: {s}"
        ))
    };
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = TimeDelta::zero();
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "w" => TimeDelta::try_weeks(n),
            "d" => TimeDelta::try_days(n),
            "h" => TimeDelta::try_hours(n),
            "m" => TimeDelta::try_minutes(n),
            "s" => TimeDelta::try_seconds(n),
            "ms" => TimeDelta::try_milliseconds(n),
            _ => None,
        }
        .ok_or_else(bad)?;
        total = total.checked_add(&part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(if negative { -total } else { total })
}

fn human(delta: TimeDelta) -> String {
    let sign = if delta < TimeDelta::zero() { "-" } else { "" };
    let mut secs = delta.num_seconds().unsigned_abs();
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if parts.is_empty() {
        parts.push("0s".into());
    }
    format!("{sign}{}", parts.join(" "))
}

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    /// RFC 3339 timestamp, for example `2026-11-25T10:00:00Z`.
    timestamp: String,
    /// Duration to add: `1d2h30m`, `-90s`, `2w`, `250ms`.
    duration: String,
}

fn add(args: AddArgs) -> Result<String, ToolError> {
    let t = parse_time("timestamp", &args.timestamp)?;
    let d = parse_duration(&args.duration)?;
    let r = t
        .checked_add_signed(d)
        .ok_or_else(|| ToolError::failed("result is out of range"))?;
    Ok(r.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

#[derive(Deserialize, JsonSchema)]
struct DiffArgs {
    /// Start, RFC 3339.
    from: String,
    /// End, RFC 3339.
    to: String,
}

#[derive(Serialize, JsonSchema)]
struct Diff {
    seconds: i64,
    human: String,
}

fn diff(args: DiffArgs) -> Result<Json<Diff>, ToolError> {
    let d = parse_time("to", &args.to)? - parse_time("from", &args.from)?;
    Ok(Json(Diff {
        seconds: d.num_seconds(),
        human: human(d),
    }))
}

#[derive(Deserialize, JsonSchema)]
struct NowArgs {}

#[derive(Serialize, JsonSchema)]
struct Now {
    utc: String,
    unix_seconds: i64,
}

fn now(_: NowArgs) -> Result<Json<Now>, ToolError> {
    let now: DateTime<Utc> = std::time::SystemTime::now().into();
    Ok(Json(Now {
        utc: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        unix_seconds: now.timestamp(),
    }))
}

fn toolbox() -> Toolbox {
    Toolbox::new()
        .with(
            Tool::new(
                "time_add",
                "Add a duration such as `1d2h30m` or `-90s` to an RFC 3339 timestamp.",
                add,
            )
            .title("Add to a timestamp")
            .read_only()
            .idempotent()
            .closed_world(),
        )
        .with(
            Tool::new(
                "time_diff",
                "The time between two RFC 3339 timestamps, in seconds and in words.",
                diff,
            )
            .title("Time between")
            .output::<Diff>()
            .read_only()
            .idempotent()
            .closed_world(),
        )
        .with(
            Tool::new(
                "time_now",
                "The current time in UTC, as RFC 3339 and Unix seconds.",
                now,
            )
            .title("Current time")
            .output::<Now>()
            .read_only()
            .closed_world(),
        )
}

export_tools!(toolbox());
