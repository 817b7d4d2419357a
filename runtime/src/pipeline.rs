//! The call path. Every `tools/call` goes through [`Airlock::call`], which runs the steps in
//! order, top to bottom; each step passes the call on or ends it with a [`CallFailure`].
//!
//! Steps present so far: look up → admit (in-flight limits) → validate input → execute in the
//! sandbox → check output → redact secrets → record. Authentication, authorization, the kill switch, rate
//! limits, approval and the audit log slot in at their places as they land.

use crate::catalog::{Catalog, CatalogTool};
use crate::failure::CallFailure;
use crate::output;
use crate::policy::{ConfigError, Policy};
use crate::sandbox::{self, Answer, GuestEvent, Invocation, RunReport};
use crate::secrets::Redactor;
use rmcp::model::{CallToolResult, JsonObject, Tool};
use std::borrow::Cow;
use std::sync::Arc;
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

/// The host: a loaded catalog and the server-wide limits.
pub struct Airlock {
    catalog: Catalog,
    in_flight: Arc<Semaphore>,
}

impl Airlock {
    /// Load every component of `policy`.
    pub async fn load(policy: Policy) -> Result<Airlock, ConfigError> {
        let in_flight = Arc::new(Semaphore::new(policy.server.max_in_flight as usize));
        Ok(Airlock {
            catalog: Catalog::load(policy).await?,
            in_flight,
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The tools every caller sees.
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        self.catalog.listed()
    }

    /// Run one call through the pipeline. Every outcome, including refusals before the
    /// sandbox, leaves a structured log event.
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<&JsonObject>,
        ctx: CallContext,
    ) -> Result<CallToolResult, CallFailure> {
        let started = Instant::now();
        let mut usage = Usage::default();
        let result = self.steps(name, arguments, ctx, &mut usage).await;
        let result = match usage.redactor.clone() {
            Some(r) if !r.is_empty() => redact(&r, result, &mut usage),
            _ => result,
        };
        record(name, &result, started, &usage);
        result
    }

    async fn steps(
        &self,
        name: &str,
        arguments: Option<&JsonObject>,
        ctx: CallContext,
        usage: &mut Usage,
    ) -> Result<CallToolResult, CallFailure> {
        let tool = self.catalog.tool(name)?;
        usage.component = Some(tool.component.prepared.name.clone());
        usage.redactor = Some(tool.component.prepared.redactor.clone());
        let _permits = self.admit(tool)?;
        let arguments = validate_input(tool, arguments)?;
        let report = self.execute(tool, &arguments, ctx).await;
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
    ) -> RunReport<Answer> {
        let invocation = Invocation::Call {
            tool: &tool.tool.name,
            arguments,
        };
        sandbox::run(
            &tool.component.prepared,
            invocation,
            ctx.events,
            &ctx.cancel,
        )
        .await
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

/// What a call consumed, for its log event.
#[derive(Default)]
struct Usage {
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
    result: &Result<CallToolResult, CallFailure>,
    started: Instant,
    usage: &Usage,
) {
    let component = usage.component.as_deref().unwrap_or("-");
    let duration_us = started.elapsed().as_micros() as u64;
    let (fuel_used, peak_memory) = (usage.fuel_used, usage.peak_memory);
    match result {
        Ok(r) => tracing::info!(
            target: "airlock::call", tool, component, outcome = "completed",
            is_error = r.is_error.unwrap_or(false), duration_us, fuel_used, peak_memory, "call completed"
        ),
        Err(CallFailure::Blocked { denial, .. }) => tracing::warn!(
            target: "airlock::call", tool, component, outcome = "blocked_by_policy",
            grant_kind = denial.grant_kind(), target = denial.target(),
            duration_us, fuel_used, peak_memory, reason = %denial, "call blocked by policy"
        ),
        Err(f) => tracing::warn!(
            target: "airlock::call", tool, component, outcome = f.kind(),
            duration_us, fuel_used, peak_memory, reason = %f, "call failed"
        ),
    }
    for (stream, (kept, discarded)) in [("stdout", &usage.stdout), ("stderr", &usage.stderr)] {
        if !kept.is_empty() || *discarded > 0 {
            tracing::info!(
                target: "airlock::guest", tool, component, stream, kept = kept.len(), discarded,
                text = %String::from_utf8_lossy(kept), "guest output"
            );
        }
    }
}
