//! The call path. Every `tools/call` goes through [`Airlock::call`], which runs the steps in
//! order, top to bottom; each step passes the call on or ends it with a [`CallFailure`].
//!
//! Steps: (authentication, in the transport) → look up → authorize → operator kill switch →
//! nesting caps (nested calls) → rate limit → validate input → redeem a retry's ticket →
//! approval (tier or rule) → admit (in-flight limits) → operator kill switch again, once the
//! call is registered as running → execute in the sandbox (with the grants
//! the operator's revocations and the tier leave) → check output → redact secrets → audit
//! record (durable before the response) → log event.
//!
//! A tool's `call-tool` import comes back in here: nested calls take every step, as the same
//! caller, with the calling call as their parent.

use crate::config::policy::{AuditArguments, ConfigError, Policy};
use crate::core::failure::CallFailure;
use crate::core::ids::random_id;
use crate::core::interaction::Reply;
use crate::core::principal::{Access, Principal};
use crate::core::redact::{Redactor, Shapes, rewrite_json_strings};
use crate::gate::approval::{AskingCall, Interaction, Question};
use crate::gate::audit::AuditLog;
use crate::gate::auth::Authenticator;
use crate::gate::ratelimit::RateLimits;
use crate::pipeline::catalog::{Catalog, CatalogTool, LoadedComponent};
use crate::pipeline::operator_state::OperatorState;
use crate::pipeline::running::Running;
use crate::sandbox::clock::Clock;
use crate::sandbox::live_grants::LiveGrants;
use crate::sandbox::output;
use crate::sandbox::store::{
    self, Answer, CallServices, GuestEvent, Invocation, RunReport, RunSignals, Served,
};
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
    /// The people the call can ask, shared with its nested calls.
    pub interaction: Arc<Interaction>,
    /// A nested call's caller's deadline, which it may not outlast.
    pub parent_clock: Option<Clock>,
}

impl CallContext {
    /// A call with no one to ask and no one listening (library use, benches).
    pub fn unattended(principal: &Principal) -> CallContext {
        CallContext {
            cancel: CancellationToken::new(),
            events: None,
            interaction: Arc::new(Interaction::unattended(principal.name.clone())),
            parent_clock: None,
        }
    }
}

/// Where a call sits in a tree of nested calls.
#[derive(Debug, Clone, Default)]
pub struct Nesting {
    /// The calls above this one, outermost first.
    frames: Vec<Frame>,
    /// Nested calls allowed beneath the top-level call (its tool's `max_nested_calls`).
    budget: u32,
    /// A call above runs in the shadow tier: so does this one, whatever its own tier.
    shadow: bool,
}

#[derive(Debug, Clone)]
struct Frame {
    tool: Arc<str>,
    arguments_sha256: String,
    /// The deepest level this frame's `max_depth` lets calls beneath it reach.
    reach: u32,
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
    pub nesting: Nesting,
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
            nesting: Nesting::default(),
        }
    }

    /// The caller of a call that this call's tool makes (`call-tool`).
    fn nested(
        &self,
        tool: &Arc<str>,
        arguments_sha256: &str,
        limits: &crate::config::policy::Limits,
        shadow: bool,
    ) -> Caller {
        let depth = self.nesting.frames.len() as u32;
        let mut frames = self.nesting.frames.clone();
        frames.push(Frame {
            tool: tool.clone(),
            arguments_sha256: arguments_sha256.to_owned(),
            reach: depth + limits.max_depth,
        });
        Caller {
            principal: self.principal.clone(),
            call_id: random_id(),
            correlation_id: self.correlation_id.clone(),
            parent_call_id: Some(self.call_id.clone()),
            nesting: Nesting {
                frames,
                budget: if depth == 0 {
                    limits.max_nested_calls
                } else {
                    self.nesting.budget
                },
                shadow,
            },
        }
    }

    /// A top-level call (not made by a tool).
    pub fn is_top_level(&self) -> bool {
        self.nesting.frames.is_empty()
    }
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
    operator: Arc<OperatorState>,
    in_flight: Arc<Semaphore>,
    rate_limits: RateLimits,
    audit: AuditLog,
    shapes: Arc<Shapes>,
    /// Checks HTTP callers' credentials by this configuration's `[auth]`.
    authenticator: Authenticator,
}

impl Airlock {
    /// Load every component of `policy`; decisions go to `audit`; `operator` holds the
    /// overrides and running calls, which outlive a policy (reloads).
    pub async fn load(
        policy: Policy,
        audit: AuditLog,
        operator: Arc<OperatorState>,
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
        operator: Arc<OperatorState>,
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
        let authenticator = Authenticator::new(&policy.auth);
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
            authenticator,
        })
    }

    /// The audit log decisions go to.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The operator state this host obeys.
    pub fn operator(&self) -> &Arc<OperatorState> {
        &self.operator
    }

    /// Checks HTTP callers' credentials.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
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
        if principal.access == Access::All && overrides.is_empty() {
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
        self: &Arc<Self>,
        name: &str,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        ctx: CallContext,
    ) -> Result<CallToolResult, CallFailure> {
        let started = Instant::now();
        let mut usage = Usage {
            arguments_sha256: arguments_digest(arguments),
            ..Usage::default()
        };
        // A call starts only while its record can be written: a broken audit writer refuses
        // calls before they act (and recovers by itself).
        let result = match self.audit.healthy() {
            Ok(()) => self.steps(name, arguments, caller, ctx, &mut usage).await,
            Err(e) => Err(CallFailure::AuditUnavailable(e.0)),
        };
        let result = match usage.redactor.clone() {
            Some(r) if !r.is_empty() => redact(&r, result, &mut usage),
            _ => result,
        };
        // The tool's name and the principal as records and the log show them: once per call,
        // for both. A tool the catalog found has a declared name (checked at load); any other
        // name is the client's text and is scrubbed.
        let secrets = &*self.catalog.redactor;
        let shown = Shown {
            tool: if usage.component.is_some() {
                Cow::Borrowed(name)
            } else {
                self.scrub(name, Some(secrets))
            },
            principal: secrets.redact(&caller.principal.name),
        };
        let audited = self
            .audit_call(&shown, arguments, caller, &result, started, &usage)
            .await;
        let result = match audited {
            Ok(_) if usage.tier == Some(crate::config::risk::Tier::Shadow) => {
                result.map(mark_shadow)
            }
            Ok(_) => result,
            Err(e) => Err(CallFailure::AuditUnavailable(e.0)),
        };
        record(
            &shown,
            caller,
            &result,
            started,
            &usage,
            secrets,
            &self.shapes,
        );
        result
    }

    /// Write the call's audit record and wait until it is durable.
    async fn audit_call(
        &self,
        shown: &Shown<'_>,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        result: &Result<CallToolResult, CallFailure>,
        started: Instant,
        usage: &Usage,
    ) -> Result<u64, crate::gate::audit::AuditError> {
        if !self.audit.is_on() {
            return Ok(0);
        }
        let empty = JsonObject::new();
        let arguments = arguments.unwrap_or(&empty);
        // Every string in the record is redacted against all of the server's secrets, whatever
        // `audit_arguments` says; "redacted" takes secret shapes out as well.
        let secrets = &*self.catalog.redactor;
        let kept = match usage.audit_arguments {
            AuditArguments::None => None,
            AuditArguments::Full => {
                let mut v = serde_json::Value::Object(arguments.clone());
                secrets.redact_json(&mut v);
                Some(v)
            }
            AuditArguments::Redacted => {
                let mut v = serde_json::Value::Object(arguments.clone());
                self.scrub_json(&mut v, Some(secrets));
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
                Some(self.scrub(&f.to_string(), Some(secrets)).into_owned()),
                false,
                0,
            ),
        };
        let record = CallRecord {
            principal: &shown.principal,
            tool: &shown.tool,
            component: usage.component.as_deref(),
            call_id: &caller.call_id,
            parent_call_id: caller.parent_call_id.as_deref(),
            correlation_id: &caller.correlation_id,
            decision,
            outcome,
            reason,
            tool_error,
            arguments_sha256: &usage.arguments_sha256,
            arguments: kept,
            tier: usage.tier,
            ticket: usage.ticket.as_deref(),
            approved_by: usage.approved_by.as_deref(),
            duration_us: started.elapsed().as_micros() as u64,
            fuel_used: usage.fuel_used,
            peak_memory: usage.peak_memory,
            output_bytes,
        };
        self.audit.append("call", &record).await
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
        rewrite_json_strings(v, &|s| self.scrub(s, redactor));
    }

    async fn steps(
        self: &Arc<Self>,
        name: &str,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        ctx: CallContext,
        usage: &mut Usage,
    ) -> Result<CallToolResult, CallFailure> {
        let tool = self.catalog.tool(name)?;
        usage.component = Some(tool.component.prepared.name.clone());
        let shadow = caller.nesting.shadow
            || tool.component.approval.policy.tier == crate::config::risk::Tier::Shadow;
        // The tier the call runs under: shadow when a shadow call made it.
        usage.tier = Some(if shadow {
            crate::config::risk::Tier::Shadow
        } else {
            tool.component.approval.policy.tier
        });
        authorize(&caller.principal, tool)?;
        self.check_kill(caller, tool)?;
        check_nesting(caller, name, &usage.arguments_sha256, &ctx.interaction)?;
        self.rate_limits.check(&caller.principal.name, name)?;
        usage.audit_arguments = tool.component.entry.audit_arguments;
        usage.redactor = Some(tool.component.prepared.redactor.clone());
        let text = validate_input(tool, arguments)?;
        if caller.is_top_level() {
            usage.ticket =
                ctx.interaction
                    .redeem(&self.operator.approvals, name, &usage.arguments_sha256)?;
        }
        // Before admission: a call waiting for a person holds no in-flight slot, so pending
        // approvals cannot starve the server.
        self.approve(tool, arguments, caller, &ctx, usage).await?;
        let permits = self.admit(tool).inspect_err(|_| {
            // Refused before it ran: the ticket the call redeemed may be presented again.
            if let Some(id) = &usage.ticket {
                self.operator.approvals.tickets.release(id);
            }
        })?;
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
        // A tool that can act outside its sandbox acts only once an intent record is durable:
        // should its own record fail later, the log still says it may have acted. Shadow
        // calls too: their GETs still reach the granted hosts.
        if tool.component.acts_outside {
            self.record_intent(tool, caller, usage).await?;
        }
        let report = self
            .execute(tool, &text, ctx, &running.call, caller, usage, permits)
            .await;
        usage.fuel_used = report.fuel_used;
        usage.peak_memory = report.peak_memory;
        usage.stdout = report.stdout;
        usage.stderr = report.stderr;
        match report.result? {
            Answer::Called(out) => output::to_mcp(
                out,
                tool.component.entry.limits.max_output_bytes,
                tool.component.entry.limits.max_output_items,
            ),
            Answer::Described(_) => unreachable!("a call answers with output"),
        }
    }

    /// The durable record that a call is about to run a tool that can act outside its sandbox.
    async fn record_intent(
        &self,
        tool: &CatalogTool,
        caller: &Caller,
        usage: &Usage,
    ) -> Result<(), CallFailure> {
        let secrets = &*self.catalog.redactor;
        let record = IntentRecord {
            principal: &secrets.redact(&caller.principal.name),
            tool: &tool.tool.name,
            component: &tool.component.entry.name,
            call_id: &caller.call_id,
            parent_call_id: caller.parent_call_id.as_deref(),
            correlation_id: &caller.correlation_id,
            arguments_sha256: &usage.arguments_sha256,
        };
        self.audit
            .append("intent", &record)
            .await
            .map(|_| ())
            .map_err(|e| CallFailure::AuditUnavailable(e.0))
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

    /// Ask for approval when the tool's tier or rule wants it; only a yes lets the call go on.
    async fn approve(
        &self,
        tool: &CatalogTool,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        ctx: &CallContext,
        usage: &mut Usage,
    ) -> Result<(), CallFailure> {
        let rule = &tool.component.approval;
        if !rule.needs_approval(&tool.tool.name, arguments) {
            return Ok(());
        }
        let shown = self.shown_arguments(arguments, &tool.component.prepared.redactor);
        // Bound to its occurrence: the n-th call of this tool with these arguments in the
        // top-level call needs its own yes.
        let question = ctx.interaction.occurrence(
            Question::approval(
                &tool.tool.name,
                &caller.principal.name,
                &shown,
                &usage.arguments_sha256,
            ),
            &usage.arguments_sha256,
        );
        let call = AskingCall {
            call_id: &caller.call_id,
            digest: &usage.arguments_sha256,
            events: ctx.events.as_ref(),
        };
        let reloads = || {
            self.operator
                .reloads
                .load(std::sync::atomic::Ordering::Acquire)
        };
        let before = reloads();
        let asked = ctx.interaction.ask(
            &self.operator.approvals,
            &self.audit,
            &call,
            question,
            &rule.policy,
        );
        let answered = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(CallFailure::Cancelled),
            a = asked => a?,
        };
        let tool = tool.tool.name.to_string();
        if reloads() != before {
            return Err(CallFailure::ReloadedWhileWaiting { tool });
        }
        let by = answered.by.clone();
        usage.approved_by = Some(answered.by);
        match answered.reply {
            r if r.is_yes() => Ok(()),
            Reply::Cancel => Err(CallFailure::ApprovalCancelled { tool, by }),
            _ => Err(CallFailure::ApprovalDenied {
                tool,
                by,
                reason: answered.reason,
            }),
        }
    }

    /// The arguments as a person approving the call reads them: secrets out, at most 8 KiB,
    /// and when cut, a warning saying how much is not shown (the approval still binds all of
    /// them, by digest).
    fn shown_arguments(&self, arguments: Option<&JsonObject>, redactor: &Redactor) -> String {
        const SHOWN: usize = 8 * 1024;
        let mut v = serde_json::Value::Object(arguments.cloned().unwrap_or_default());
        self.scrub_json(&mut v, Some(redactor));
        let mut text = v.to_string();
        let total = text.len();
        if total > SHOWN {
            let end = text.floor_char_boundary(SHOWN);
            text.truncate(end);
            text.push_str(&format!(
                "… [WARNING: only the first {end} of {total} bytes are shown; deny unless you know the rest]"
            ));
        }
        text
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

    /// Run the call's guest. `permits` (its in-flight slots) go with the run and are given back
    /// when its store is gone, even when the answer leaves before (see below).
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        self: &Arc<Self>,
        tool: &CatalogTool,
        arguments: &str,
        ctx: CallContext,
        running: &Running,
        caller: &Caller,
        usage: &Usage,
        permits: [OwnedSemaphorePermit; 2],
    ) -> RunReport<Answer> {
        let (arguments_sha256, shadow) = (
            usage.arguments_sha256.as_str(),
            usage.tier == Some(crate::config::risk::Tier::Shadow),
        );
        let prepared = &tool.component.prepared;
        let clock = Clock::start(
            prepared.limits.timeout.0,
            ctx.parent_clock,
            ctx.interaction.pause.clone(),
        );
        let services = Arc::new(Services {
            airlock: self.clone(),
            caller: caller.clone(),
            tool: Arc::from(&*tool.tool.name),
            arguments_sha256: arguments_sha256.to_owned(),
            component: tool.component.clone(),
            interaction: ctx.interaction.clone(),
            cancel: ctx.cancel.clone(),
            events: ctx.events.clone(),
            clock: clock.clone(),
            shadow,
        });
        let grants = LiveGrants::new(
            prepared.grants.clone(),
            prepared.name.clone(),
            self.operator.overrides.clone(),
        );
        let demote = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (deadline, cancelled, stopped) =
            (clock.clone(), ctx.cancel.clone(), running.stop.clone());
        let timeout = prepared.limits.timeout;
        let signals = RunSignals {
            cancel: ctx.cancel,
            stop: running.stop.clone(),
            fuel_left: Some(running.fuel_left.clone()),
            clock: Some(clock),
            demote: Some(demote.clone()),
        };
        let (component, name, arguments, events) = (
            tool.component.clone(),
            services.tool.clone(),
            arguments.to_owned(),
            ctx.events,
        );
        // On the guest pool: a runaway guest never holds a thread that serves others.
        let run = async move {
            let invocation = Invocation::Call {
                tool: &name,
                arguments: &arguments,
                grants,
                services: Some(services),
                shadow,
            };
            let report = store::run(&component.prepared, invocation, events, &signals).await;
            drop(permits);
            report
        };
        // The run ends itself at its deadline, a stop or a cancellation, when it is next
        // polled; on the runaway pool, which gets only CPU nobody else wants, that may be late:
        // the answer does not wait for it (the run is dropped when it is next polled).
        // (Each is given the grace the run itself allows a cooperative tool, and a second.)
        let late = || tokio::time::sleep(store::STOP_GRACE + std::time::Duration::from_secs(1));
        let answered = async {
            tokio::select! {
                biased;
                r = store::on_guest_pool(run, demote) => r,
                _ = async { stopped.cancelled().await; late().await } => {
                    Err(CallFailure::StoppedByOperator)
                }
                _ = async { cancelled.cancelled().await; late().await } => {
                    Err(CallFailure::Cancelled)
                }
                _ = async { deadline.expired().await; late().await } => {
                    Err(CallFailure::TimedOut { after: timeout })
                }
            }
        };
        match answered.await {
            Ok(report) => report,
            Err(f) => RunReport {
                result: Err(f),
                fuel_used: None,
                peak_memory: 0,
                stdout: (Vec::new(), 0),
                stderr: (Vec::new(), 0),
            },
        }
    }
}

/// The host imports of one running call that reach people and other tools.
struct Services {
    airlock: Arc<Airlock>,
    caller: Caller,
    tool: Arc<str>,
    arguments_sha256: String,
    component: Arc<LoadedComponent>,
    interaction: Arc<Interaction>,
    cancel: CancellationToken,
    events: Option<mpsc::Sender<GuestEvent>>,
    clock: Clock,
    shadow: bool,
}

impl Services {
    /// `question`, bound to this call's arguments and to how often it was asked before in
    /// the top-level call (a tool confirming two steps with one prompt asks twice).
    fn occurrence(&self, question: Question) -> Question {
        self.interaction
            .occurrence(question, &self.arguments_sha256)
    }

    async fn ask(
        &self,
        question: Question,
    ) -> Result<crate::gate::approval::Answered, CallFailure> {
        let call = AskingCall {
            call_id: &self.caller.call_id,
            digest: &self.arguments_sha256,
            events: self.events.as_ref(),
        };
        self.interaction
            .ask(
                &self.airlock.operator.approvals,
                &self.airlock.audit,
                &call,
                question,
                &self.component.approval.policy,
            )
            .await
    }
}

impl CallServices for Services {
    fn confirm(self: Arc<Self>, prompt: String, details: String) -> Served<bool> {
        Box::pin(async move {
            let question = self.occurrence(Question::confirm(&self.tool, &prompt, &details));
            match self.ask(question).await {
                Ok(a) => Ok(a.reply.is_yes()),
                // No answer in time is a no; the tool decides what a no means.
                Err(CallFailure::ApprovalTimedOut { .. }) => Ok(false),
                Err(f) => Err(f),
            }
        })
    }

    fn elicit(self: Arc<Self>, message: String, schema: String) -> Served<Result<Reply, String>> {
        Box::pin(async move {
            let mut schema = match serde_json::from_str::<serde_json::Value>(&schema) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                _ => return Ok(Err("the schema is not a JSON object".to_owned())),
            };
            // Titles and descriptions reach the client: no secret values in them.
            let redactor = &self.component.prepared.redactor;
            rewrite_json_strings(&mut schema, &|s| redactor.redact(s));
            let serde_json::Value::Object(schema) = schema else {
                unreachable!("checked above")
            };
            let question = self.occurrence(Question::elicit(&self.tool, &message, schema));
            if let Err(e) = question.elicitation() {
                return Ok(Err(e));
            }
            match self.ask(question).await {
                Ok(a) => Ok(Ok(a.reply)),
                Err(CallFailure::ApprovalTimedOut { .. }) => Ok(Ok(Reply::Cancel)),
                Err(f) => Err(f),
            }
        })
    }

    fn call_tool(
        self: Arc<Self>,
        name: String,
        arguments: String,
    ) -> Served<Result<CallToolResult, CallFailure>> {
        Box::pin(async move {
            let arguments = match serde_json::from_str::<serde_json::Value>(&arguments) {
                Ok(serde_json::Value::Object(o)) => o,
                _ => {
                    return Ok(Err(CallFailure::InvalidArguments(
                        "call-tool arguments must be a JSON object".into(),
                    )));
                }
            };
            let caller = self.caller.nested(
                &self.tool,
                &self.arguments_sha256,
                &self.component.entry.limits,
                self.shadow,
            );
            // The nested call runs as its own task and ends (cancelled, and recorded as such)
            // when this run ends first: stopped, timed out or cancelled, the calling run drops
            // this future and the guard cancels the nested call's token.
            let cancel = self.cancel.child_token();
            let _ends_with_caller = cancel.clone().drop_guard();
            let ctx = CallContext {
                cancel,
                events: self.events.clone(),
                interaction: self.interaction.clone(),
                parent_clock: Some(self.clock.clone()),
            };
            let airlock = self.airlock.clone();
            let nested =
                tokio::spawn(
                    async move { airlock.call(&name, Some(&arguments), &caller, ctx).await },
                );
            match nested.await {
                // Only the client can answer; this run ends and the call is retried.
                Ok(Err(CallFailure::InputRequired)) => Err(CallFailure::InputRequired),
                Ok(r) => Ok(r),
                Err(e) => Err(CallFailure::HostError(format!(
                    "the nested call failed: {e}"
                ))),
            }
        })
    }
}

/// The caps on nested calls: depth (the smallest `max_depth` reach of the calls above),
/// cycles (a tool already on the stack with the same arguments) and the top-level call's
/// budget.
fn check_nesting(
    caller: &Caller,
    tool: &str,
    arguments_sha256: &str,
    interaction: &Interaction,
) -> Result<(), CallFailure> {
    let frames = &caller.nesting.frames;
    if frames.is_empty() {
        return Ok(());
    }
    let depth = frames.len() as u32;
    let limit = frames.iter().map(|f| f.reach).min().unwrap_or(0);
    if depth > limit {
        return Err(CallFailure::NestingTooDeep {
            tool: tool.to_owned(),
            depth,
            limit,
        });
    }
    if frames
        .iter()
        .any(|f| &*f.tool == tool && f.arguments_sha256 == arguments_sha256)
    {
        return Err(CallFailure::CallCycle {
            tool: tool.to_owned(),
        });
    }
    let used = interaction
        .nested_calls
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
        + 1;
    if used > caller.nesting.budget {
        return Err(CallFailure::NestedBudgetExhausted {
            tool: tool.to_owned(),
            budget: caller.nesting.budget,
        });
    }
    Ok(())
}

/// sha256 of the arguments as canonical JSON, hex: what approvals and the audit record bind.
fn arguments_digest(arguments: Option<&JsonObject>) -> String {
    let mut canonical = Vec::with_capacity(256);
    match arguments {
        Some(a) => write_canonical_object(a, &mut canonical),
        None => canonical.extend_from_slice(b"{}"),
    }
    hex::encode(sha2::Sha256::digest(&canonical))
}

/// The `_meta` key marking a result of a shadow-tier call.
pub const SHADOW_META_KEY: &str = "airlock/shadow";

fn mark_shadow(mut r: CallToolResult) -> CallToolResult {
    r.meta
        .get_or_insert_with(|| rmcp::model::MetaObject(serde_json::Map::new()))
        .0
        .insert(SHADOW_META_KEY.into(), true.into());
    r
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
    arguments_sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<serde_json::Value>,
    /// The tool's tier; `shadow` calls ran with write capabilities withheld.
    tier: Option<crate::config::risk::Tier>,
    /// The ticket a retry redeemed.
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<&'a str>,
    /// Who approved the call, when it needed approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    approved_by: Option<&'a str>,
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

/// The audit record written before a tool that can act outside its sandbox runs.
#[derive(serde::Serialize)]
struct IntentRecord<'a> {
    principal: &'a str,
    tool: &'a str,
    component: &'a str,
    call_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_call_id: Option<&'a str>,
    correlation_id: &'a str,
    arguments_sha256: &'a str,
}

/// What a call consumed, for its log event.
#[derive(Default)]
struct Usage {
    arguments_sha256: String,
    tier: Option<crate::config::risk::Tier>,
    ticket: Option<String>,
    approved_by: Option<String>,
    audit_arguments: AuditArguments,
    component: Option<Arc<str>>,
    redactor: Option<Arc<Redactor>>,
    fuel_used: Option<u64>,
    peak_memory: usize,
    stdout: (Vec<u8>, u64),
    stderr: (Vec<u8>, u64),
}

/// A call's tool name and principal as its audit record and log event show them.
struct Shown<'a> {
    tool: Cow<'a, str>,
    principal: Cow<'a, str>,
}

/// The structured log event of a finished call, and the guest's captured output.
fn record(
    shown: &Shown<'_>,
    caller: &Caller,
    result: &Result<CallToolResult, CallFailure>,
    started: Instant,
    usage: &Usage,
    secrets: &Redactor,
    shapes: &Shapes,
) {
    // Every string a tool or client supplied is redacted against all of the server's secrets
    // (control characters are escaped by the log itself).
    let scrub = |text: &str| -> String {
        let text = secrets.redact(text);
        shapes.redact(&text).into_owned()
    };
    let (tool, principal) = (&*shown.tool, &*shown.principal);
    let component = usage.component.as_deref().unwrap_or("-");
    let call_id = caller.call_id.as_str();
    let duration_us = started.elapsed().as_micros() as u64;
    let (fuel_used, peak_memory) = (usage.fuel_used, usage.peak_memory);
    match result {
        Ok(r) => tracing::info!(
            target: "airlock::call", tool, component, principal, call_id, outcome = "completed",
            is_error = r.is_error.unwrap_or(false), duration_us, fuel_used, peak_memory, "call completed"
        ),
        Err(CallFailure::Blocked { denial, .. }) => tracing::warn!(
            target: "airlock::call", tool, component, principal, call_id, outcome = "blocked_by_policy",
            grant_kind = denial.grant_kind(), target = &*scrub(denial.target()),
            duration_us, fuel_used, peak_memory, reason = %scrub(&denial.to_string()), "call blocked by policy"
        ),
        Err(f) => tracing::warn!(
            target: "airlock::call", tool, component, principal, call_id, outcome = f.kind(),
            duration_us, fuel_used, peak_memory, reason = %scrub(&f.to_string()), "call failed"
        ),
    }
    for (stream, (kept, discarded)) in [("stdout", &usage.stdout), ("stderr", &usage.stderr)] {
        if !kept.is_empty() || *discarded > 0 {
            tracing::info!(
                target: "airlock::guest", tool, component, stream, kept = kept.len(), discarded,
                text = %scrub(&String::from_utf8_lossy(kept)), "guest output"
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
                access: Access::All,
            },
            None,
        );
        assert_eq!(c.call_id.len(), 32);
        assert_eq!(c.correlation_id, c.call_id);
    }
}
