//! The call path. Every `tools/call` goes through [`Airlock::call`], which runs the steps in
//! order, top to bottom; each step passes the call on or ends it with a [`CallFailure`].
//!
//! Steps present so far: (authentication, in the transport) → look up → authorize → operator
//! kill switch → rate limit → admit (in-flight limits) → validate input → execute in the sandbox
//! (with the grants the operator's revocations leave) → check output → redact secrets → audit
//! record (durable before the response) → log event. Approval slots in at its place when it
//! lands.

use crate::audit::{AuditLog, Expected};
use crate::auth::Principal;
use crate::catalog::{Catalog, CatalogTool};
use crate::failure::CallFailure;
use crate::operator::Operator;
use crate::output;
use crate::overrides::LiveGrants;
use crate::policy::{AuditArguments, ConfigError, Policy};
use crate::ratelimit::RateLimits;
use crate::running::Running;
use crate::sandbox::{self, Answer, GuestEvent, Invocation, RunReport, RunSignals};
use crate::secrets::{Redactor, Shapes};
use rmcp::model::{CallToolResult, JsonObject, Tool};
use sha2::Digest;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// What the transport knows about a call.
pub struct CallContext {
    /// Fires when the client cancels the request or goes away.
    pub cancel: CancellationToken,
    /// Where the tool's log and progress messages go, when the client wants them.
    pub events: Option<mpsc::Sender<GuestEvent>>,
}

/// Who makes a call and how the call is known, for the audit record.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// Unique per call; returned to the client in `_meta`.
    pub call_id: String,
    /// The W3C trace id the request carried, else generated; returned to the client in `_meta`.
    pub correlation_id: String,
    /// The calling tool's call, for nested calls.
    pub parent_call_id: Option<String>,
}

impl Caller {
    /// A top-level call by `principal`, correlated with `traceparent` when it is a valid W3C
    /// trace context header.
    pub fn new(principal: Principal, traceparent: Option<&str>) -> Caller {
        let call_id = random_id();
        let correlation_id = traceparent
            .and_then(trace_id)
            .unwrap_or_else(|| call_id.clone());
        Caller {
            principal,
            call_id,
            correlation_id,
            parent_call_id: None,
        }
    }
}

/// 128 random bits, hex.
fn random_id() -> String {
    let mut b = [0u8; 16];
    // getrandom fails only without any entropy source; a time-and-counter id still keeps calls
    // apart in the record.
    if getrandom::getrandom(&mut b).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b[..8].copy_from_slice(&t.to_be_bytes());
        b[8..].copy_from_slice(&n.to_be_bytes());
    }
    hex::encode(b)
}

/// The trace id of a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), if valid.
fn trace_id(header: &str) -> Option<String> {
    let mut parts = header.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0'))
    .then(|| trace.to_ascii_lowercase())
}

/// The host: a loaded catalog, the server-wide limits and the audit log.
pub struct Airlock {
    catalog: Catalog,
    operator: Arc<Operator>,
    in_flight: Arc<Semaphore>,
    rate_limits: RateLimits,
    audit: AuditLog,
    shapes: Arc<Shapes>,
}

impl Airlock {
    /// Load every component of `policy`; decisions go to `audit`; `operator` holds the
    /// overrides and running calls, which outlive a policy (reloads).
    pub async fn load(
        policy: Policy,
        audit: AuditLog,
        operator: Arc<Operator>,
    ) -> Result<Airlock, ConfigError> {
        Airlock::build(policy, audit, operator, None).await
    }

    /// The host for `policy` that replaces this one (a reload): the same audit log and
    /// operator state, and this one's in-flight slots and rate buckets, resized where the new
    /// limits differ, so that calls still running and recent calls keep counting.
    pub async fn successor(&self, policy: Policy) -> Result<Airlock, ConfigError> {
        let next = Airlock::build(
            policy,
            self.audit.clone(),
            self.operator.clone(),
            Some(self),
        )
        .await?;
        let old = &self.catalog;
        resize(
            &next.in_flight,
            old.policy.server.max_in_flight,
            next.catalog.policy.server.max_in_flight,
        );
        for c in &next.catalog.components {
            if let Some(was) = old.components.iter().find(|o| o.entry.name == c.entry.name) {
                resize(
                    &c.in_flight,
                    was.entry.limits.max_in_flight,
                    c.entry.limits.max_in_flight,
                );
            }
        }
        Ok(next)
    }

    async fn build(
        policy: Policy,
        audit: AuditLog,
        operator: Arc<Operator>,
        previous: Option<&Airlock>,
    ) -> Result<Airlock, ConfigError> {
        let in_flight = previous.map_or_else(
            || Arc::new(Semaphore::new(policy.server.max_in_flight as usize)),
            |p| p.in_flight.clone(),
        );
        let shapes = Shapes::new(&policy.audit.redact_patterns).map_err(|e| ConfigError {
            file: policy.origin.clone(),
            key: "audit › redact_patterns".into(),
            problem: e.to_string(),
        })?;
        let shapes = Arc::new(shapes);
        let catalog = Catalog::load(policy, shapes.clone(), previous.map(|p| &p.catalog)).await?;
        let rate_limits = RateLimits::inheriting(
            &catalog.policy.rate_limits,
            catalog
                .components
                .iter()
                .flat_map(|c| c.tools.iter().map(|t| (t.as_str(), c.entry.rate_limit))),
            previous.map(|p| &p.rate_limits),
        );
        Ok(Airlock {
            catalog,
            operator,
            in_flight,
            rate_limits,
            audit,
            shapes,
        })
    }

    /// The audit log decisions go to.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The operator state this host obeys.
    pub fn operator(&self) -> &Arc<Operator> {
        &self.operator
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Every tool, as the local principal sees them.
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        self.catalog.listed()
    }

    /// The tools `principal` may see (and so call): those its roles reach and no operator
    /// kill covers.
    pub fn tools_for(&self, principal: &Principal) -> Vec<Tool> {
        let all = self.catalog.listed();
        let overrides = self.operator.overrides.current();
        if principal.access == crate::auth::Access::All && overrides.is_empty() {
            return all.as_ref().clone();
        }
        if overrides.all || overrides.principals.contains(&*principal.name) {
            return Vec::new();
        }
        all.iter()
            .filter(|t| {
                self.catalog.tool(&t.name).is_ok_and(|c| {
                    principal.may_use(&c.component.entry.roles)
                        && overrides.tool_listed(&t.name, &c.component.entry.name)
                })
            })
            .cloned()
            .collect()
    }

    /// Run one call through the pipeline. Every outcome, including refusals before the
    /// sandbox, leaves an audit record (on disk before this returns) and a structured log
    /// event. When the record cannot be written the call fails: no result leaves unrecorded.
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        ctx: CallContext,
    ) -> Result<CallToolResult, CallFailure> {
        let started = Instant::now();
        let expected = self.audit.expect();
        let mut usage = Usage::default();
        let result = self.steps(name, arguments, caller, ctx, &mut usage).await;
        let result = match usage.redactor.clone() {
            Some(r) if !r.is_empty() => redact(&r, result, &mut usage),
            _ => result,
        };
        let audited = self
            .audit_call(expected, name, arguments, caller, &result, started, &usage)
            .await;
        let result = match audited {
            Ok(_) => result,
            Err(e) => Err(CallFailure::AuditUnavailable(e.0)),
        };
        record(name, caller, &result, started, &usage, &self.shapes);
        result
    }

    /// Write the call's audit record and wait until it is durable.
    #[allow(clippy::too_many_arguments)]
    async fn audit_call(
        &self,
        expected: Expected,
        tool: &str,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        result: &Result<CallToolResult, CallFailure>,
        started: Instant,
        usage: &Usage,
    ) -> Result<u64, crate::audit::AuditError> {
        if !self.audit.is_on() {
            return Ok(0);
        }
        let empty = JsonObject::new();
        let arguments = arguments.unwrap_or(&empty);
        let mut canonical = Vec::with_capacity(256);
        write_canonical_object(arguments, &mut canonical);
        let kept = match usage.audit_arguments {
            AuditArguments::None => None,
            AuditArguments::Full => Some(serde_json::Value::Object(arguments.clone())),
            AuditArguments::Redacted => {
                let mut v = serde_json::Value::Object(arguments.clone());
                self.scrub_json(&mut v, usage.redactor.as_deref());
                Some(v)
            }
        };
        let (decision, outcome, reason, tool_error, output_bytes) = match result {
            Ok(r) => (
                "completed",
                "completed",
                None,
                r.is_error.unwrap_or(false),
                output::size_of_result(r),
            ),
            Err(f) => (
                f.decision(),
                f.kind(),
                Some(
                    self.scrub(&f.to_string(), usage.redactor.as_deref())
                        .into_owned(),
                ),
                false,
                0,
            ),
        };
        let record = CallRecord {
            principal: &caller.principal.name,
            tool,
            component: usage.component.as_deref(),
            call_id: &caller.call_id,
            parent_call_id: caller.parent_call_id.as_deref(),
            correlation_id: &caller.correlation_id,
            decision,
            outcome,
            reason,
            tool_error,
            arguments_sha256: hex::encode(sha2::Sha256::digest(&canonical)),
            arguments: kept,
            duration_us: started.elapsed().as_micros() as u64,
            fuel_used: usage.fuel_used,
            peak_memory: usage.peak_memory,
            output_bytes,
        };
        expected.append("call", &record).await
    }

    /// Secret values, then secret shapes, out of `text`.
    fn scrub<'t>(&self, text: &'t str, redactor: Option<&Redactor>) -> Cow<'t, str> {
        let text = redactor.map_or(Cow::Borrowed(text), |r| r.redact(text));
        if let Cow::Owned(clean) = self.shapes.redact(&text) {
            Cow::Owned(clean)
        } else {
            text
        }
    }

    fn scrub_json(&self, v: &mut serde_json::Value, redactor: Option<&Redactor>) {
        crate::secrets::rewrite_json_strings(v, &|s| self.scrub(s, redactor));
    }

    async fn steps(
        &self,
        name: &str,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        ctx: CallContext,
        usage: &mut Usage,
    ) -> Result<CallToolResult, CallFailure> {
        let tool = self.catalog.tool(name)?;
        usage.component = Some(tool.component.prepared.name.clone());
        authorize(&caller.principal, tool)?;
        self.check_kill(caller, tool)?;
        self.rate_limits.check(&caller.principal.name, name)?;
        usage.audit_arguments = tool.component.entry.audit_arguments;
        usage.redactor = Some(tool.component.prepared.redactor.clone());
        let _permits = self.admit(tool)?;
        let running = self.operator.running.register(Running {
            call_id: caller.call_id.clone(),
            tool: Arc::from(name),
            component: tool.component.prepared.name.clone(),
            principal: caller.principal.name.clone(),
            started: Instant::now(),
            fuel_left: Arc::new(AtomicU64::new(tool.component.entry.limits.fuel)),
            fuel_budget: tool.component.entry.limits.fuel,
            stop: CancellationToken::new(),
        });
        // Checked again now that the call is registered: a kill given between the first check
        // and here either sees this call (and interrupts it) or is seen by this check.
        self.check_kill(caller, tool)?;
        let arguments = validate_input(tool, arguments)?;
        let report = self.execute(tool, &arguments, ctx, &running.call).await;
        usage.fuel_used = report.fuel_used;
        usage.peak_memory = report.peak_memory;
        usage.stdout = report.stdout;
        usage.stderr = report.stderr;
        match report.result? {
            Answer::Called(out) => {
                output::to_mcp(out, tool.component.entry.limits.max_output_bytes)
            }
            Answer::Described(_) => unreachable!("a call answers with output"),
        }
    }

    /// The operator's kill switch: everything, the principal, the tool or its component.
    fn check_kill(&self, caller: &Caller, tool: &CatalogTool) -> Result<(), CallFailure> {
        match self.operator.overrides.current().kill_for(
            &caller.principal.name,
            &tool.tool.name,
            &tool.component.entry.name,
        ) {
            None => Ok(()),
            Some(scope) => Err(CallFailure::Disabled { scope }),
        }
    }

    /// Take a server-wide and a per-component in-flight slot, or refuse at once.
    fn admit(&self, tool: &CatalogTool) -> Result<[OwnedSemaphorePermit; 2], CallFailure> {
        let server =
            self.in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| CallFailure::ServerBusy {
                    limit: self.catalog.policy.server.max_in_flight,
                })?;
        let component = tool
            .component
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| CallFailure::ToolBusy {
                tool: tool.tool.name.to_string(),
                component: tool.component.entry.name.clone(),
                limit: tool.component.entry.limits.max_in_flight,
            })?;
        Ok([server, component])
    }

    async fn execute(
        &self,
        tool: &CatalogTool,
        arguments: &str,
        ctx: CallContext,
        running: &Running,
    ) -> RunReport<Answer> {
        let prepared = &tool.component.prepared;
        let invocation = Invocation::Call {
            tool: &tool.tool.name,
            arguments,
            grants: LiveGrants::new(
                prepared.grants.clone(),
                prepared.name.clone(),
                self.operator.overrides.clone(),
            ),
        };
        let signals = RunSignals {
            cancel: ctx.cancel,
            stop: running.stop.clone(),
            fuel_left: Some(running.fuel_left.clone()),
        };
        sandbox::run(prepared, invocation, ctx.events, &signals).await
    }
}

/// Make `slots`, sized for `from` permits, hold `to`, without disturbing the calls holding some:
/// permits not free now are taken as they are released.
fn resize(slots: &Arc<Semaphore>, from: u32, to: u32) {
    if to >= from {
        slots.add_permits((to - from) as usize);
        return;
    }
    let excess = (from - to) as usize;
    let owed = excess - slots.forget_permits(excess);
    if owed > 0 {
        let slots = slots.clone();
        tokio::spawn(async move {
            if let Ok(p) = slots.acquire_many_owned(owed as u32).await {
                p.forget();
            }
        });
    }
}

/// The same rule as `tools/list`, applied again: a tool a principal cannot see is not a tool it
/// can call.
fn authorize(principal: &Principal, tool: &CatalogTool) -> Result<(), CallFailure> {
    if principal.may_use(&tool.component.entry.roles) {
        Ok(())
    } else {
        Err(CallFailure::NotAuthorized {
            principal: principal.name.to_string(),
            tool: tool.tool.name.to_string(),
        })
    }
}

/// Serialise the arguments once, for the guest, and enforce their size limit.
fn validate_input(
    tool: &CatalogTool,
    arguments: Option<&JsonObject>,
) -> Result<String, CallFailure> {
    let limit = tool.component.entry.limits.max_argument_bytes;
    let text = match arguments {
        None => "{}".to_owned(),
        Some(a) => {
            serde_json::to_string(a).map_err(|e| CallFailure::InvalidArguments(e.to_string()))?
        }
    };
    if text.len() as u64 > limit.bytes() {
        return Err(CallFailure::ArgumentsTooLarge { limit });
    }
    Ok(text)
}

/// The scan of what leaves the host: every secret value in the result, the failure message
/// or the captured output is replaced by `[REDACTED:NAME]`.
fn redact(
    redactor: &Redactor,
    result: Result<CallToolResult, CallFailure>,
    usage: &mut Usage,
) -> Result<CallToolResult, CallFailure> {
    for (captured, _) in [&mut usage.stdout, &mut usage.stderr] {
        if !captured.is_empty()
            && let Cow::Owned(clean) = redactor.redact(&String::from_utf8_lossy(captured))
        {
            *captured = clean.into_bytes();
        }
    }
    match result {
        Ok(mut r) => {
            output::redact(&mut r, redactor);
            Ok(r)
        }
        Err(f) => Err(f.redacted(redactor)),
    }
}

/// One call's audit record (the fields after `kind`).
#[derive(serde::Serialize)]
struct CallRecord<'a> {
    principal: &'a str,
    tool: &'a str,
    component: Option<&'a str>,
    call_id: &'a str,
    parent_call_id: Option<&'a str>,
    correlation_id: &'a str,
    /// `completed`, `denied` or `failed`.
    decision: &'static str,
    /// The named outcome (`completed`, `blocked_by_policy`, `cpu_budget_exhausted`, …).
    outcome: &'static str,
    reason: Option<String>,
    /// The tool ran and returned an error result of its own.
    tool_error: bool,
    /// sha256 of the arguments as canonical JSON (sorted keys, no whitespace).
    arguments_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<serde_json::Value>,
    duration_us: u64,
    fuel_used: Option<u64>,
    peak_memory: usize,
    output_bytes: usize,
}

/// JSON with object keys sorted and no whitespace, so that equal arguments hash equally
/// whatever order the client sent them in.
fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(o) => write_canonical_object(o, out),
        serde_json::Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        scalar => {
            // Serialising a JSON value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_canonical_object(o: &JsonObject, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = o.keys().collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        write_canonical(&o[k], out);
    }
    out.push(b'}');
}

/// What a call consumed, for its log event.
#[derive(Default)]
struct Usage {
    audit_arguments: AuditArguments,
    component: Option<Arc<str>>,
    redactor: Option<Arc<Redactor>>,
    fuel_used: Option<u64>,
    peak_memory: usize,
    stdout: (Vec<u8>, u64),
    stderr: (Vec<u8>, u64),
}

/// The structured log event of a finished call, and the guest's captured output.
fn record(
    tool: &str,
    caller: &Caller,
    result: &Result<CallToolResult, CallFailure>,
    started: Instant,
    usage: &Usage,
    shapes: &Shapes,
) {
    let component = usage.component.as_deref().unwrap_or("-");
    let (principal, call_id) = (&*caller.principal.name, caller.call_id.as_str());
    let duration_us = started.elapsed().as_micros() as u64;
    let (fuel_used, peak_memory) = (usage.fuel_used, usage.peak_memory);
    match result {
        Ok(r) => tracing::info!(
            target: "airlock::call", tool, component, principal, call_id, outcome = "completed",
            is_error = r.is_error.unwrap_or(false), duration_us, fuel_used, peak_memory, "call completed"
        ),
        Err(CallFailure::Blocked { denial, .. }) => tracing::warn!(
            target: "airlock::call", tool, component, principal, call_id, outcome = "blocked_by_policy",
            grant_kind = denial.grant_kind(), target = denial.target(),
            duration_us, fuel_used, peak_memory, reason = %denial, "call blocked by policy"
        ),
        Err(f) => tracing::warn!(
            target: "airlock::call", tool, component, principal, call_id, outcome = f.kind(),
            duration_us, fuel_used, peak_memory, reason = %shapes.redact(&f.to_string()), "call failed"
        ),
    }
    for (stream, (kept, discarded)) in [("stdout", &usage.stdout), ("stderr", &usage.stderr)] {
        if !kept.is_empty() || *discarded > 0 {
            tracing::info!(
                target: "airlock::guest", tool, component, stream, kept = kept.len(), discarded,
                text = %shapes.redact(&String::from_utf8_lossy(kept)), "guest output"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b": [1, {"z": 1, "a": "x"}], "a": null}"#).unwrap();
        let mut out = Vec::new();
        write_canonical(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":null,"b":[1,{"a":"x","z":1}]}"#
        );
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        assert_eq!(
            trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("garbage"), None);
        let c = Caller::new(
            Principal {
                name: Arc::from("p"),
                access: crate::auth::Access::All,
            },
            None,
        );
        assert_eq!(c.call_id.len(), 32);
        assert_eq!(c.correlation_id, c.call_id);
    }
}
