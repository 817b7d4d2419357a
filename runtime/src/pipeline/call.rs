//! The call path. Every `tools/call`, `resources/read`, `prompts/get` and
//! `completion/complete` goes through [`Airlock::serve`], which runs the steps in order, top to
//! bottom; each step passes the request on or ends it with a [`CallFailure`].
//!
//! Steps: (authentication, in the transport) → the principal's rate limit → look up →
//! authorize (roles, the clearance of the tool's data class, the class calls above have seen)
//! → operator kill switch → nesting caps (nested calls) → the tool's (or the entry's
//! resources' or prompts') rate limit → validate input (size, the tool's input schema) →
//! content checks on the arguments → redeem a retry's ticket → approval (tier or rule) → admit
//! (in-flight limits) → operator kill switch again, once the call is registered as running →
//! execute in the sandbox (with the grants the operator's revocations and the tier leave) →
//! check output (sizes, the tool's output schema) → content checks on the result (top-level
//! calls) → redact secrets → audit record (durable before the response) → log event.
//!
//! A tool's `call-tool` import comes back in here: nested calls take every step, as the same
//! caller, with the calling call as their parent.

use crate::config::policy::{AuditArguments, ConfigError, Policy};
use crate::config::safety::{Clearance, DataClass, MetadataPolicy};
use crate::core::canonical::write_canonical_object;
use crate::core::failure::CallFailure;
use crate::core::ids::random_id;
use crate::core::interaction::{Asking, Reply};
use crate::core::metrics::{CallLabels, ToolLabels, metrics};
use crate::core::principal::{Access, Principal};
use crate::core::redact::{Redactor, Shapes, rewrite_json_strings};
use crate::gate::approval::{AskingCall, Interaction, Question};
use crate::gate::audit::AuditLog;
use crate::gate::auth::Authenticator;
use crate::gate::overrides::Family;
use crate::gate::ratelimit::RateLimits;
use crate::gate::safety::{self, OutboundReport, OutboundScan, RuleSet};
use crate::pipeline::catalog::{Catalog, CatalogTool, LoadedComponent};
use crate::pipeline::operator_state::OperatorState;
use crate::pipeline::running::Running;
use crate::sandbox::clock::Clock;
use crate::sandbox::live_grants::LiveGrants;
use crate::sandbox::output::{self, Response};
use crate::sandbox::store::{
    self, Answer, CallServices, GuestEvent, Invocation, RunReport, RunSignals, Served, Work,
};
use airlock_host_api::{CompletionRequest, CompletionTarget};
use rmcp::model::{CallToolResult, JsonObject, Tool};
use sha2::Digest;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};
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
    /// The highest data class any call of this tree has reached so far (a [`DataClass`] as a
    /// number), shared by the whole tree: what a nested call may carry data into.
    class_seen: Arc<AtomicU8>,
    /// The data class of the calling tool (nested calls): the highest its result may carry.
    caller_class: Option<DataClass>,
}

impl Nesting {
    /// The highest data class the tree of calls has reached.
    fn class_seen(&self) -> DataClass {
        DataClass::ALL[usize::from(self.class_seen.load(Ordering::Relaxed)).min(3)]
    }
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
    /// The span this call's span continues: the client's `traceparent`, or the calling
    /// tool's call.
    pub trace_parent: Option<opentelemetry::trace::SpanContext>,
    /// When the request that made this call was authenticated, and how long that took (HTTP).
    pub authenticated: Option<Authenticated>,
}

/// When a request was authenticated and how long it took, carried from the HTTP layer to the
/// call's trace.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated {
    pub at: std::time::SystemTime,
    pub took: std::time::Duration,
}

impl Caller {
    /// A top-level call by `principal`, correlated with `traceparent` when it is a valid W3C
    /// trace context header.
    pub fn new(principal: Principal, traceparent: Option<&str>) -> Caller {
        let call_id = random_id();
        let trace_parent = traceparent.and_then(crate::gate::telemetry::parse_traceparent);
        let correlation_id = trace_parent
            .as_ref()
            .map_or_else(|| call_id.clone(), |t| t.trace_id().to_string());
        Caller {
            principal,
            call_id,
            correlation_id,
            parent_call_id: None,
            nesting: Nesting::default(),
            trace_parent,
            authenticated: None,
        }
    }

    /// The caller of a call that this call's tool makes (`call-tool`).
    fn nested(
        &self,
        tool: &Arc<str>,
        arguments_sha256: &str,
        entry: &crate::config::policy::ComponentEntry,
        shadow: bool,
    ) -> Caller {
        let limits = &entry.limits;
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
            trace_parent: self.trace_parent.clone(),
            authenticated: None,
            nesting: Nesting {
                frames,
                budget: if depth == 0 {
                    limits.max_nested_calls
                } else {
                    self.nesting.budget
                },
                shadow,
                class_seen: self.nesting.class_seen.clone(),
                caller_class: Some(entry.data_class),
            },
        }
    }

    /// A top-level call (not made by a tool).
    pub fn is_top_level(&self) -> bool {
        self.nesting.frames.is_empty()
    }
}

/// A call's in-flight slots, given back together when its run is over.
struct Permits {
    _server: OwnedSemaphorePermit,
    _principal: crate::gate::in_flight::PrincipalSlot,
    _component: OwnedSemaphorePermit,
}

/// The host: a loaded catalog, the server-wide limits and the audit log.
pub struct Airlock {
    catalog: Catalog,
    operator: Arc<OperatorState>,
    in_flight: Arc<Semaphore>,
    /// Shared across reloads, as `in_flight` is.
    principal_slots: Arc<crate::gate::in_flight::PrincipalSlots>,
    rate_limits: RateLimits,
    audit: AuditLog,
    shapes: Arc<Shapes>,
    /// Checks HTTP callers' credentials by this configuration's `[auth]`.
    authenticator: Authenticator,
    /// The content-safety rules: built in, `[[safety.rules]]` and the DLP detectors.
    rules: Arc<RuleSet>,
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
    /// operator state, and this one's in-flight slots and rate buckets, so that calls still
    /// running and recent calls keep counting. The new limits on the shared slots apply only
    /// once it is put in force ([`Airlock::take_over_from`]): a reload refused after this
    /// must leave the running host's limits as they were.
    pub async fn successor(&self, policy: Policy) -> Result<Airlock, ConfigError> {
        Airlock::build(
            policy,
            self.audit.clone(),
            self.operator.clone(),
            Some(self),
        )
        .await
    }

    /// Put this host's limits on the in-flight slots it shares with `old` (the one it
    /// replaces): resized where they differ. Called as it is put in force, never before.
    pub fn take_over_from(&self, old: &Airlock) {
        resize(
            &self.in_flight,
            old.catalog.policy.server.max_in_flight,
            self.catalog.policy.server.max_in_flight,
        );
        for c in &self.catalog.components {
            if let Some(was) = old
                .catalog
                .components
                .iter()
                .find(|o| o.entry.name == c.entry.name)
            {
                resize(
                    &c.in_flight,
                    was.entry.limits.max_in_flight,
                    c.entry.limits.max_in_flight,
                );
            }
        }
        self.principal_slots
            .set_limit(self.catalog.policy.server.max_in_flight_per_principal);
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
        // Shared with the host this one replaces; its limit changes in `take_over_from`.
        let principal_slots = previous.map_or_else(
            || {
                crate::gate::in_flight::PrincipalSlots::new(
                    policy.server.max_in_flight_per_principal,
                )
            },
            |p| p.principal_slots.clone(),
        );
        let shapes = Shapes::new(&policy.audit.redact_patterns).map_err(|e| ConfigError {
            file: policy.origin.clone(),
            key: "audit › redact_patterns".into(),
            problem: e.to_string(),
        })?;
        let shapes = Arc::new(shapes);
        let authenticator = Authenticator::new(
            &policy.auth,
            previous.map(|p| p.authenticator.seen_proofs()),
        );
        let rules = RuleSet::new(&policy.safety.rules).map_err(|problem| ConfigError {
            file: policy.origin.clone(),
            key: "safety › rules".into(),
            problem,
        })?;
        let catalog = Catalog::load(policy, shapes.clone(), previous.map(|p| &p.catalog)).await?;
        check_metadata(&catalog, &rules)?;
        // A bucket per tool, and one for each component's resources and prompts.
        let families: Vec<(String, Option<crate::core::units::Rate>)> = catalog
            .components
            .iter()
            .flat_map(|c| {
                let resources = !c.resources.is_empty() || !c.templates.is_empty();
                let prompts = !c.prompts.is_empty();
                [(Family::Resources, resources), (Family::Prompts, prompts)]
                    .into_iter()
                    .filter(|(_, offered)| *offered)
                    .map(|(f, _)| (f.rate_key(&c.entry.name), c.entry.rate_limit))
            })
            .collect();
        let rate_limits = RateLimits::inheriting(
            &catalog.policy.rate_limits,
            catalog
                .components
                .iter()
                .flat_map(|c| c.tools.iter().map(|t| (t.as_str(), c.entry.rate_limit)))
                .chain(families.iter().map(|(k, r)| (k.as_str(), *r))),
            previous.map(|p| &p.rate_limits),
        );
        Ok(Airlock {
            catalog,
            operator,
            in_flight,
            principal_slots,
            rate_limits,
            audit,
            shapes,
            authenticator,
            rules: Arc::new(rules),
        })
    }

    /// The version of the content-safety rules in force.
    pub fn rules_version(&self) -> &str {
        self.rules.version()
    }

    /// What `principal` may see: the highest clearance of its roles (everything for the local
    /// principal and for everyone when `[auth] mode = "none"`).
    pub fn clearance(&self, principal: &Principal) -> Clearance {
        match &principal.access {
            Access::All => Clearance {
                class: DataClass::Restricted,
                unredacted: false,
            },
            Access::Roles(roles) => {
                let known = &self.catalog.policy.auth.clearances;
                let mut c = Clearance {
                    class: DataClass::Public,
                    unredacted: false,
                };
                for r in roles.iter() {
                    let of = known.get(r).copied().unwrap_or(Clearance {
                        class: crate::config::safety::DEFAULT_CLASS,
                        unredacted: false,
                    });
                    c.class = c.class.max(of.class);
                    c.unredacted |= of.unredacted;
                }
                c
            }
        }
    }

    /// Whether DLP redactions are lifted for `principal` on data of `class`: one of its roles
    /// has `unredacted = true` and is itself cleared for that class.
    fn unredacted_for(&self, principal: &Principal, class: DataClass) -> bool {
        let Access::Roles(roles) = &principal.access else {
            return false;
        };
        let known = &self.catalog.policy.auth.clearances;
        roles
            .iter()
            .filter_map(|r| known.get(r))
            .any(|c| c.unredacted && c.class >= class)
    }

    /// May `principal` reach `component`: its roles do, and they clear it for its data class.
    fn reaches(&self, principal: &Principal, component: &LoadedComponent) -> bool {
        principal.may_use(&component.entry.roles)
            && self.clearance(principal).class >= component.entry.data_class
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
                    self.reaches(principal, &c.component)
                        && overrides.tool_listed(&t.name, &c.component.entry.name)
                })
            })
            .cloned()
            .collect()
    }

    /// The resources `principal` may see (and so read): those of the components its roles
    /// reach, unless an operator killed them.
    pub fn resources_for(&self, principal: &Principal) -> Vec<rmcp::model::Resource> {
        self.offered_to(principal, self.catalog.resources(), Family::Resources)
    }

    /// The resource templates `principal` may see.
    pub fn templates_for(&self, principal: &Principal) -> Vec<rmcp::model::ResourceTemplate> {
        let mut seen = Vec::new();
        for t in self.catalog.templates() {
            if self.offers_to(principal, &t.component, Family::Resources) {
                seen.push(t.item.1.clone());
            }
        }
        seen
    }

    /// The prompts `principal` may see (and so get).
    pub fn prompts_for(&self, principal: &Principal) -> Vec<rmcp::model::Prompt> {
        self.offered_to(principal, self.catalog.prompts(), Family::Prompts)
    }

    fn offered_to<T: Clone>(
        &self,
        principal: &Principal,
        items: &[crate::pipeline::catalog::Served<T>],
        family: Family,
    ) -> Vec<T> {
        items
            .iter()
            .filter(|i| self.offers_to(principal, &i.component, family))
            .map(|i| i.item.clone())
            .collect()
    }

    /// Whether `component`'s resources or prompts are for `principal`: its roles reach them
    /// and no kill covers them.
    fn offers_to(
        &self,
        principal: &Principal,
        component: &LoadedComponent,
        family: Family,
    ) -> bool {
        let overrides = self.operator.overrides.current();
        self.reaches(principal, component)
            && !overrides.principals.contains(&*principal.name)
            && overrides.offer_listed(&component.entry.name, family)
    }

    /// Whether `principal` may read `uri` now: a component its roles reach serves it, and no
    /// kill covers it. What subscriptions are checked against, when made and at every update.
    pub fn may_read(&self, principal: &Principal, uri: &str) -> bool {
        let Ok(component) = self.catalog.resource(uri, |c| self.reaches(principal, c)) else {
            return false;
        };
        self.reaches(principal, component)
            && self
                .operator
                .overrides
                .current()
                .offer_kill_for(&principal.name, &component.entry.name, Family::Resources)
                .is_none()
    }

    /// Run one tool call through the pipeline (see [`Airlock::serve`]).
    pub async fn call(
        self: &Arc<Self>,
        name: &str,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        ctx: CallContext,
    ) -> Result<CallToolResult, CallFailure> {
        match self
            .serve(Request::Tool { name, arguments }, caller, ctx)
            .await?
        {
            Response::Tool(r) => Ok(r),
            _ => unreachable!("a tool call answers with a tool result"),
        }
    }

    /// Run one request through the pipeline. Every outcome, including refusals before the
    /// sandbox, leaves an audit record (on disk before this returns) and a structured log
    /// event. When the record cannot be written the request fails: no result leaves
    /// unrecorded.
    pub async fn serve(
        self: &Arc<Self>,
        request: Request<'_>,
        caller: &Caller,
        ctx: CallContext,
    ) -> Result<Response, CallFailure> {
        let started = Instant::now();
        let arguments = request.arguments();
        let mut usage = Usage {
            arguments_sha256: arguments_digest(request.bound().as_ref()),
            ..Usage::default()
        };
        // While traces are exported the call is a span from the start (its id is the parent of
        // what the call does); it is named and closed once the call is done.
        let span = crate::gate::telemetry::tracer().map(|tracer| {
            use opentelemetry::trace::{Span as _, SpanKind, Tracer as _};
            let start = caller.authenticated.map_or_else(SystemTime::now, |a| a.at);
            let span = tracer
                .span_builder(request.offering().method())
                .with_kind(if caller.is_top_level() {
                    SpanKind::Server
                } else {
                    SpanKind::Internal
                })
                .with_start_time(start)
                .start_with_context(
                    tracer,
                    &crate::gate::telemetry::parent_context(caller.trace_parent.as_ref()),
                );
            usage.trace = Some(span.span_context().clone());
            span
        });
        // A call starts only while its record can be written: a broken audit writer refuses
        // calls before they act (and recovers by itself).
        let result = match self.audit.healthy() {
            Ok(()) => self.steps(&request, caller, ctx, &mut usage).await,
            Err(e) => Err(CallFailure::AuditUnavailable(e.0)),
        };
        if let Some(from) = usage.output_from {
            usage.mark("output", from);
        }
        let result = match usage.redactor.clone() {
            Some(r) if !r.is_empty() => redact(&r, result, &mut usage),
            _ => result,
        };
        // The target's name and the principal as records and the log show them: once per
        // request, for both. A target the catalog found has a declared name (checked at load);
        // any other name is the client's text and is scrubbed.
        let secrets = &*self.catalog.redactor;
        // A name the client chose is kept to a bounded length in records and the log.
        let name = shown_name(request.name());
        let shown = Shown {
            tool: if usage.component.is_some() && request.offering() != Offering::Resource {
                Cow::Borrowed(name)
            } else {
                self.scrub(name, Some(secrets))
            },
            principal: secrets.redact(&caller.principal.name),
            request: request.offering().method(),
        };
        usage.output_bytes = match &result {
            Ok(r) => r.size(),
            Err(_) => 0,
        };
        let audit_started = Instant::now();
        let audited = self
            .audit_call(&shown, arguments, caller, &result, started, &usage)
            .await;
        usage.mark("audit", audit_started);
        let result = match audited {
            Ok(_)
                if usage.tier == Some(crate::config::risk::Tier::Shadow)
                    && request.offering() == Offering::Tool =>
            {
                result.map(|r| match r {
                    Response::Tool(t) => Response::Tool(mark_shadow(t)),
                    other => other,
                })
            }
            Ok(_) => result,
            Err(e) => Err(CallFailure::AuditUnavailable(e.0)),
        };
        let result = match result {
            Ok(Response::Tool(mut t)) if caller.is_top_level() => {
                self.annotate(&mut t, caller, &usage);
                Ok(Response::Tool(t))
            }
            other => other,
        };
        for d in &usage.safety.detections {
            self.operator
                .detections
                .add(&shown.tool, &d.rule, safety::action_name(d.action));
        }
        if let Err(CallFailure::RejectedInput { rule, .. }) = &result {
            self.operator.detections.add(&shown.tool, rule, "rejected");
        }
        record(
            &shown,
            caller,
            &result,
            started,
            &usage,
            secrets,
            &self.shapes,
        );
        let label = catalog_label(&request, &shown, &usage);
        self.count(&label, &shown, caller, &result, started, &usage);
        if let Some(span) = span {
            self.end_span(span, &label, &shown, arguments, caller, &result, &usage);
        }
        result
    }

    /// Close the call's span: its name and attributes (what the audit record says, argument
    /// values only as `audit_arguments` keeps them), one child span per step, and an error
    /// status for any outcome but `completed`.
    #[allow(clippy::too_many_arguments)]
    fn end_span(
        &self,
        mut span: opentelemetry_sdk::trace::Span,
        label: &str,
        shown: &Shown<'_>,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        result: &Result<Response, CallFailure>,
        usage: &Usage,
    ) {
        use opentelemetry::KeyValue;
        use opentelemetry::trace::{Span as _, Status, Tracer as _};
        let Some(tracer) = crate::gate::telemetry::tracer() else {
            return;
        };
        let parent = crate::gate::telemetry::parent_context(usage.trace.as_ref());
        let authenticated = caller
            .authenticated
            .map(|a| ("authenticate", a.at, a.at + a.took));
        for (step, from, to) in authenticated.iter().chain(&usage.steps) {
            tracer
                .span_builder(*step)
                .with_start_time(*from)
                .start_with_context(tracer, &parent)
                .end_with_timestamp(*to);
        }
        // Named by what the catalog has (the client's text could name anything).
        span.update_name(format!("{} {label}", shown.request));
        let outcome = match result {
            Ok(_) => "completed",
            Err(f) => f.kind(),
        };
        let mut attributes = vec![
            KeyValue::new("airlock.tool", shown.tool.to_string()),
            KeyValue::new("airlock.principal", shown.principal.to_string()),
            KeyValue::new("airlock.call_id", caller.call_id.clone()),
            KeyValue::new("airlock.outcome", outcome),
            KeyValue::new("airlock.arguments_sha256", usage.arguments_sha256.clone()),
        ];
        if let Some(c) = &usage.component {
            attributes.push(KeyValue::new("airlock.component", c.to_string()));
        }
        if let Some(p) = &caller.parent_call_id {
            attributes.push(KeyValue::new("airlock.parent_call_id", p.clone()));
        }
        if let Some(fuel) = usage.fuel_used {
            attributes.push(KeyValue::new("airlock.fuel_used", fuel as i64));
        }
        if let Some(kept) = self.kept_arguments(arguments, usage.audit_arguments) {
            // Bounded: a span is held in memory until it is exported.
            let mut text = kept.to_string();
            if text.len() > MAX_SPAN_ARGUMENTS {
                let cut = (0..=MAX_SPAN_ARGUMENTS)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push_str("…(cut)");
            }
            attributes.push(KeyValue::new("airlock.arguments", text));
        }
        span.set_attributes(attributes);
        if outcome != "completed" {
            span.set_status(Status::error(outcome));
        }
        span.end();
    }

    /// The call in the metrics. The tool label is a name the catalog has (a tool's; the entry's
    /// for reads, prompts and completions), never the client's text.
    fn count(
        &self,
        tool: &Arc<str>,
        shown: &Shown<'_>,
        caller: &Caller,
        result: &Result<Response, CallFailure>,
        started: Instant,
        usage: &Usage,
    ) {
        let m = metrics();
        m.calls
            .get_or_create(&CallLabels {
                request: shown.request,
                tool: tool.clone(),
                outcome: match result {
                    Ok(_) => "completed",
                    Err(f) => f.kind(),
                },
                principal_class: self.principal_class(&caller.principal),
            })
            .inc();
        m.step("total", started.elapsed());
        let labels = ToolLabels { tool: tool.clone() };
        if let Some(fuel) = usage.fuel_used {
            m.fuel_used.get_or_create(&labels).observe(fuel as f64);
            m.memory_peak
                .get_or_create(&labels)
                .observe(usage.peak_memory as f64);
        }
        if result.is_ok() {
            m.output_size
                .get_or_create(&labels)
                .observe(usage.output_bytes as f64);
        }
    }

    /// What kind of principal `p` is, for the metrics: `local`, `anonymous`, `api_key`,
    /// `client_cert`, `unauthenticated` or `jwt` (names are unique across these sources).
    fn principal_class(&self, p: &Principal) -> &'static str {
        use crate::core::principal::{ANONYMOUS_PRINCIPAL, UNAUTHENTICATED_PRINCIPAL};
        let auth = &self.catalog.policy.auth;
        match &*p.name {
            n if n == &*auth.local_principal.name => "local",
            ANONYMOUS_PRINCIPAL => "anonymous",
            UNAUTHENTICATED_PRINCIPAL => "unauthenticated",
            n if auth.api_keys.iter().any(|k| &*k.principal == n) => "api_key",
            n if auth.client_certs.iter().any(|c| &*c.principal == n) => "client_cert",
            _ => "jwt",
        }
    }

    /// The data class and what the content checks did, in a tool result's `_meta` (set by the
    /// host alone: a tool's own keys of these names are replaced or removed).
    fn annotate(&self, r: &mut CallToolResult, caller: &Caller, usage: &Usage) {
        let meta = &mut r
            .meta
            .get_or_insert_with(|| rmcp::model::MetaObject(JsonObject::new()))
            .0;
        if let Some(class) = usage.class {
            let class = class.max(caller.nesting.class_seen());
            meta.insert(DATA_CLASS_META_KEY.into(), class.name().into());
        }
        meta.remove(SAFETY_META_KEY);
        meta.remove(SPOTLIGHT_META_KEY);
        let report = &usage.safety;
        if !report.detections.is_empty() {
            meta.insert(
                SAFETY_META_KEY.into(),
                serde_json::json!({
                    "rules": self.rules.version(),
                    "detections": report.detections,
                    "more": report.more,
                }),
            );
        }
        if let Some(marker) = &usage.spotlight {
            meta.insert(SPOTLIGHT_META_KEY.into(), marker.clone().into());
        }
    }

    /// Write the call's audit record and wait until it is durable.
    async fn audit_call(
        &self,
        shown: &Shown<'_>,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        result: &Result<Response, CallFailure>,
        started: Instant,
        usage: &Usage,
    ) -> Result<u64, crate::gate::audit::AuditError> {
        if !self.audit.is_on() {
            return Ok(0);
        }
        let secrets = &*self.catalog.redactor;
        let kept = self.kept_arguments(arguments, usage.audit_arguments);
        let (decision, outcome, reason, tool_error, output_bytes) = match result {
            Ok(r) => (
                "completed",
                "completed",
                None,
                r.is_error(),
                usage.output_bytes,
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
            request: shown.request,
            principal: &shown.principal,
            tool: &shown.tool,
            component: usage.component.as_deref(),
            component_sha256: usage.component_sha256.as_deref(),
            signer: usage.signer.as_deref(),
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
            data_class: usage.class.map(|c| c.max(caller.nesting.class_seen())),
            rules: self.rules.version(),
            detections: &usage.safety.detections,
            more_detections: usage.safety.more,
            spotlight: usage.spotlight.is_some(),
        };
        self.audit.append("call", &record).await
    }

    /// What a call's record (and its span) keeps of its arguments. Every string is redacted
    /// against all of the server's secrets, whatever `audit_arguments` says; "redacted" takes
    /// secret shapes out as well.
    fn kept_arguments(
        &self,
        arguments: Option<&JsonObject>,
        keep: AuditArguments,
    ) -> Option<serde_json::Value> {
        let secrets = &*self.catalog.redactor;
        let value = || serde_json::Value::Object(arguments.cloned().unwrap_or_default());
        match keep {
            AuditArguments::None => None,
            AuditArguments::Full => {
                let mut v = value();
                secrets.redact_json(&mut v);
                Some(v)
            }
            AuditArguments::Redacted => {
                let mut v = value();
                self.scrub_json(&mut v, Some(secrets));
                Some(v)
            }
        }
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
        request: &Request<'_>,
        caller: &Caller,
        ctx: CallContext,
        usage: &mut Usage,
    ) -> Result<Response, CallFailure> {
        let step = Instant::now();
        // The principal's bucket first: a flood of unknown names is limited as well.
        let fleet = self.operator.fleet.get().map(|f| &**f);
        self.rate_limits
            .check_principal(fleet, &caller.principal.name)
            .await?;
        let target = self.target(request, &caller.principal)?;
        let component = target.component;
        usage.component = Some(component.prepared.name.clone());
        usage.component_sha256 = Some(component.sha256.clone());
        usage.signer.clone_from(&component.signer);
        let shadow = match target.tool {
            Some(_) => {
                caller.nesting.shadow
                    || component.approval.policy.tier == crate::config::risk::Tier::Shadow
            }
            // Resources, prompts and completions read: they run with write capabilities
            // withheld, so they need no approval and act nowhere.
            None => true,
        };
        // The tier the call runs under: shadow when a shadow call made it.
        usage.tier = Some(if shadow {
            crate::config::risk::Tier::Shadow
        } else {
            component.approval.policy.tier
        });
        authorize(&caller.principal, &target)?;
        let class = component.entry.data_class;
        usage.class = Some(class);
        let clearance = self.clearance(&caller.principal);
        if clearance.class < class {
            return Err(CallFailure::NotCleared {
                principal: caller.principal.name.to_string(),
                tool: target.name.to_owned(),
                class: class.name(),
            });
        }
        // Data flows down a tree of calls into each nested call's arguments, and back up into
        // the calling tool with its result: a call that has seen data of a class may not hand
        // it to a tool of a lower one, and a tool may not call one whose data is above its own.
        let seen = caller.nesting.class_seen();
        let refuse = |from: DataClass, into: DataClass| CallFailure::ClassFlowRefused {
            tool: target.name.to_owned(),
            from: from.name(),
            into: into.name(),
        };
        if !caller.is_top_level() && seen > class {
            return Err(refuse(seen, class));
        }
        if let Some(calling) = caller.nesting.caller_class
            && class > calling
        {
            return Err(refuse(class, calling));
        }
        self.check_kill(caller, &target)?;
        let name = target.name;
        check_nesting(caller, name, &usage.arguments_sha256, &ctx.interaction)?;
        self.rate_limits
            .check_bucket(fleet, &target.rate_key())
            .await?;
        usage.mark("authorize", step);
        let step = Instant::now();
        usage.audit_arguments = component.entry.audit_arguments;
        usage.redactor = Some(component.prepared.redactor.clone());
        let input = validate_input(&target, request)?;
        if let Some(arguments) = request.arguments() {
            safety::check_input(arguments, &component.entry.safety.input).map_err(|r| {
                CallFailure::RejectedInput {
                    rule: r.rule,
                    at: r.at,
                }
            })?;
        }
        if caller.is_top_level() {
            usage.ticket = ctx
                .interaction
                .redeem(
                    &self.operator.approvals,
                    &target.ticket_label(),
                    &usage.arguments_sha256,
                )
                .await?;
        }
        // Before admission: a call waiting for a person holds no in-flight slot, so pending
        // approvals cannot starve the server. A tool's rule decides for its calls; an entry
        // whose rule approves every call has its reads, prompts and completions approved too.
        let rule = &component.approval;
        let needed = match target.tool {
            Some(_) => rule.needs_approval(target.name, request.arguments()),
            None => rule.approves_every_request(),
        };
        usage.mark("validate", step);
        if needed {
            let step = Instant::now();
            let approved = self
                .approve(&target, request.arguments(), caller, &ctx, usage)
                .await;
            usage.mark("approval", step);
            approved?;
        }
        let step = Instant::now();
        let permits = match self.admit(&target, caller) {
            Ok(p) => p,
            Err(e) => {
                // Refused before it ran: the ticket the call redeemed may be presented again.
                if let Some(id) = &usage.ticket {
                    self.operator.approvals.release(id).await;
                }
                return Err(e);
            }
        };
        let running = self.operator.running.register(Running {
            call_id: caller.call_id.clone(),
            tool: Arc::from(name),
            family: target.offering.family(),
            component: component.prepared.name.clone(),
            principal: caller.principal.name.clone(),
            arguments_sha256: Arc::from(usage.arguments_sha256.as_str()),
            started: Instant::now(),
            fuel_left: Arc::new(AtomicU64::new(component.entry.limits.fuel)),
            fuel_budget: component.entry.limits.fuel,
            stop: CancellationToken::new(),
        });
        // Checked again now that the call is registered: a kill given between the first check
        // and here either sees this call (and interrupts it) or is seen by this check.
        self.check_kill(caller, &target)?;
        // From here the call runs: the tree has now reached its class.
        caller
            .nesting
            .class_seen
            .fetch_max(class as u8, Ordering::Relaxed);
        // A tool that can act outside its sandbox acts only once an intent record is durable:
        // should its own record fail later, the log still says it may have acted. Shadow
        // calls too: their GETs still reach the granted hosts.
        if component.acts_outside {
            self.record_intent(&target, caller, usage).await?;
        }
        usage.mark("admission", step);
        let step = Instant::now();
        let report = self
            .execute(&target, input, ctx, &running.call, caller, usage, permits)
            .await;
        usage.mark("sandbox", step);
        // The output step ends when this returns (`serve` marks it).
        usage.output_from = Some(Instant::now());
        usage.fuel_used = report.fuel_used;
        usage.peak_memory = report.peak_memory;
        usage.stdout = report.stdout;
        usage.stderr = report.stderr;
        let limits = &component.entry.limits;
        let (bytes, items) = (limits.max_output_bytes, limits.max_output_items);
        let converted = report.result.and_then(|answer| {
            Ok(match answer {
                Answer::Called(out) => {
                    let result = output::to_mcp(out, bytes, items)?;
                    if let Some(tool) = target.tool {
                        check_output(tool, &result)?;
                    }
                    Response::Tool(result)
                }
                Answer::Read(contents) => {
                    Response::Resource(output::read_result(contents, bytes, items)?)
                }
                Answer::Prompted(prompt) => {
                    Response::Prompt(output::prompt_result(prompt, bytes, items)?)
                }
                Answer::Completed(c) => Response::Completion(output::completion_result(c, bytes)?),
                Answer::Described(_) => unreachable!("a request answers with output"),
            })
        });
        // A failure's text the tool wrote (its error, a panic, what the output checks quote of
        // its output) reaches the model too.
        let mut response = converted.map_err(|f| {
            if caller.is_top_level() {
                self.scan_failure(f, component, caller, usage)
            } else {
                f
            }
        })?;
        // What reaches the model: only a top-level call's result does; a nested call's goes
        // to the calling tool, and on to the model only through the top-level result.
        if caller.is_top_level() {
            let policy = &component.entry.safety.output;
            let marker = match policy.injection {
                Some(crate::config::safety::Injection::Spotlight) => spotlight_marker()?,
                _ => String::new(),
            };
            let class = class.max(caller.nesting.class_seen());
            let unredacted = self.unredacted_for(&caller.principal, class);
            // The scan is linear in the text (about 3.6 ms per MiB here); a large result is
            // scanned on a blocking thread, so that it never holds a thread that serves others.
            let mut report = if scan_size(&response) <= INLINE_SCAN_BYTES {
                OutboundScan {
                    rules: &self.rules,
                    policy,
                    class,
                    unredacted,
                    settings: &self.catalog.policy.safety,
                    marker: &marker,
                }
                .response(&mut response)
            } else {
                let (rules, policy, settings, marker) = (
                    self.rules.clone(),
                    *policy,
                    self.catalog.policy.safety.clone(),
                    marker.clone(),
                );
                let (scanned, report) = tokio::task::spawn_blocking(move || {
                    let report = OutboundScan {
                        rules: &rules,
                        policy: &policy,
                        class,
                        unredacted,
                        settings: &settings,
                        marker: &marker,
                    }
                    .response(&mut response);
                    (response, report)
                })
                .await
                .map_err(|e| CallFailure::HostError(format!("the content scan failed: {e}")))?;
                response = scanned;
                report
            };
            if let Some(scanner) = &self.catalog.policy.safety.scanner
                && report.blocked.is_none()
                && let Some(why) = self
                    .ask_scanner(scanner, target.name, class, &response, usage, &mut report)
                    .await
            {
                tracing::warn!(
                    target: "airlock::safety", tool = target.name, call_id = caller.call_id.as_str(),
                    rule = "scanner-unavailable", reason = %why, "the content scanner did not answer"
                );
            }
            let blocked = report.blocked.clone();
            if report.spotlighted {
                usage.spotlight = Some(marker);
            }
            usage.safety = report;
            if let Some(rule) = blocked {
                return Err(CallFailure::OutputBlocked {
                    rule: rule.to_string(),
                });
            }
        }
        Ok(response)
    }

    /// The external scanner's verdict on `response`, as the client would get it: with the
    /// component's secret values already replaced (the scanner is another party). Why it did
    /// not answer, if it did not.
    async fn ask_scanner(
        &self,
        scanner: &crate::config::safety::ScannerSettings,
        tool: &str,
        class: DataClass,
        response: &Response,
        usage: &Usage,
        report: &mut OutboundReport,
    ) -> Option<String> {
        let mut result = match response.to_json_value() {
            Ok(v) => v,
            // Not sent is not scanned: as the scanner failing.
            Err(e) => {
                let action = match scanner.on_error {
                    crate::config::safety::OnError::Block => safety::Action::Blocked,
                    crate::config::safety::OnError::Allow => safety::Action::Flagged,
                };
                report.note(Arc::from("scanner-unavailable"), "/", action);
                return Some(format!("the result could not be serialised: {e}"));
            }
        };
        if let Some(redactor) = &usage.redactor {
            redactor.redact_json(&mut result);
        }
        safety::ask_scanner(scanner, tool, class, &result, report).await
    }

    /// A tool's own failure text goes to the model as well: it is scanned as output is (a
    /// block withholds it too).
    fn scan_failure(
        &self,
        failure: CallFailure,
        component: &LoadedComponent,
        caller: &Caller,
        usage: &mut Usage,
    ) -> CallFailure {
        let (principal, caller_class_seen) = (&caller.principal, caller.nesting.class_seen());
        let (CallFailure::ToolFailed(mut text)
        | CallFailure::Trapped(mut text)
        | CallFailure::InvalidArguments(mut text)
        | CallFailure::InvalidOutput(mut text)
        | CallFailure::NotFound(mut text)) = failure.clone()
        else {
            return failure;
        };
        let class = component.entry.data_class.max(caller_class_seen);
        let scan = OutboundScan {
            rules: &self.rules,
            policy: &component.entry.safety.output,
            class,
            unredacted: self.unredacted_for(principal, class),
            settings: &self.catalog.policy.safety,
            marker: "",
        };
        let report = scan.failure_text(&mut text);
        let blocked = report.blocked.clone();
        usage.safety = report;
        match (blocked, failure) {
            (Some(rule), _) => CallFailure::OutputBlocked {
                rule: rule.to_string(),
            },
            (None, CallFailure::ToolFailed(_)) => CallFailure::ToolFailed(text),
            (None, CallFailure::InvalidArguments(_)) => CallFailure::InvalidArguments(text),
            (None, CallFailure::InvalidOutput(_)) => CallFailure::InvalidOutput(text),
            (None, CallFailure::NotFound(_)) => CallFailure::NotFound(text),
            (None, _) => CallFailure::Trapped(text),
        }
    }

    /// What `request` reaches: a declared tool, resource (or template) or prompt.
    fn target<'r>(
        &'r self,
        request: &'r Request<'_>,
        principal: &Principal,
    ) -> Result<Target<'r>, CallFailure> {
        let catalog = &self.catalog;
        let prompt_target = |name: &str, offering| {
            catalog.prompt(name).map(|prompt| Target {
                component: &prompt.component,
                tool: None,
                prompt: Some(&prompt.item),
                name: &prompt.item.name,
                offering,
            })
        };
        Ok(match request {
            Request::Tool { name, .. } => {
                let tool = catalog.tool_for(name, principal)?;
                Target {
                    component: &tool.component,
                    tool: Some(tool),
                    prompt: None,
                    name: &tool.tool.name,
                    offering: Offering::Tool,
                }
            }
            Request::ReadResource { uri } => Target {
                component: catalog.resource(uri, |c| principal.may_use(&c.entry.roles))?,
                tool: None,
                prompt: None,
                name: uri,
                offering: Offering::Resource,
            },
            Request::GetPrompt { name, .. } => prompt_target(name, Offering::Prompt)?,
            Request::Complete { of, .. } => match of {
                Completing::Prompt(name) => prompt_target(name, Offering::PromptCompletion)?,
                Completing::Template(template) => Target {
                    component: catalog.template(template)?,
                    tool: None,
                    prompt: None,
                    name: template,
                    offering: Offering::ResourceCompletion,
                },
            },
        })
    }

    /// The durable record that a call is about to run a tool that can act outside its sandbox.
    async fn record_intent(
        &self,
        target: &Target<'_>,
        caller: &Caller,
        usage: &Usage,
    ) -> Result<(), CallFailure> {
        let secrets = &*self.catalog.redactor;
        let record = IntentRecord {
            request: target.offering.method(),
            principal: &secrets.redact(&caller.principal.name),
            tool: &secrets.redact(target.name),
            component: &target.component.entry.name,
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

    /// The operator's kill switch: everything, the principal, the tool or its component, the
    /// component's resources or prompts.
    fn check_kill(&self, caller: &Caller, target: &Target<'_>) -> Result<(), CallFailure> {
        // In a fleet, the overrides are only as good as this replica's last confirmation.
        if let Some(fleet) = self.operator.fleet.get() {
            fleet
                .admits()
                .map_err(|e| CallFailure::FleetUnavailable(e.0))?;
        }
        let overrides = self.operator.overrides.current();
        let component = &target.component.entry.name;
        let principal = &caller.principal.name;
        let killed = match target.offering.family() {
            Some(family) => overrides.offer_kill_for(principal, component, family),
            None => overrides.kill_for(principal, target.name, component),
        };
        match killed {
            None => Ok(()),
            Some(scope) => Err(CallFailure::Disabled { scope }),
        }
    }

    /// Ask for the approval the entry's tier or rule wants; only a yes lets the call go on.
    async fn approve(
        &self,
        target: &Target<'_>,
        arguments: Option<&JsonObject>,
        caller: &Caller,
        ctx: &CallContext,
        usage: &mut Usage,
    ) -> Result<(), CallFailure> {
        let rule = &target.component.approval;
        let shown = self.shown_arguments(arguments, &target.component.prepared.redactor);
        // Bound to its occurrence: the n-th call of this tool with these arguments in the
        // top-level call needs its own yes.
        let question = ctx.interaction.occurrence(
            Question::approval(
                &target.ticket_label(),
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
        let tool = target.name.to_owned();
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

    /// Take a server-wide, a per-principal (top-level calls) and a per-component in-flight
    /// slot, or refuse at once.
    fn admit(&self, target: &Target<'_>, caller: &Caller) -> Result<Permits, CallFailure> {
        let server =
            self.in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| CallFailure::ServerBusy {
                    limit: self.catalog.policy.server.max_in_flight,
                })?;
        // Nested calls count too: each holds a server slot, so a principal whose calls nest
        // would otherwise hold (1 + max_depth) times its share. Like `server_busy`, the
        // refusal of a nested call is its caller's to handle.
        let principal = self
            .principal_slots
            .take(&caller.principal.name)
            .ok_or_else(|| CallFailure::PrincipalBusy {
                principal: caller.principal.name.to_string(),
                limit: self.principal_slots.limit(),
            })?;
        let component = target
            .component
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| CallFailure::ToolBusy {
                tool: target.name.to_owned(),
                component: target.component.entry.name.clone(),
                limit: target.component.entry.limits.max_in_flight,
            })?;
        Ok(Permits {
            _server: server,
            _principal: principal,
            _component: component,
        })
    }

    /// Run the call's guest. `permits` (its in-flight slots) go with the run and are given back
    /// when its store is gone, even when the answer leaves before (see below).
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        self: &Arc<Self>,
        target: &Target<'_>,
        input: Input,
        ctx: CallContext,
        running: &Running,
        caller: &Caller,
        usage: &Usage,
        permits: Permits,
    ) -> RunReport<Answer> {
        let (arguments_sha256, shadow) = (
            usage.arguments_sha256.as_str(),
            usage.tier == Some(crate::config::risk::Tier::Shadow),
        );
        let prepared = &target.component.prepared;
        let clock = Clock::start(
            prepared.limits.timeout.0,
            ctx.parent_clock,
            ctx.interaction.pause.clone(),
        );
        // Calls this call's tool makes continue its span.
        let mut calling = caller.clone();
        if usage.trace.is_some() {
            calling.trace_parent = usage.trace.clone();
        }
        let services = Arc::new(Services {
            airlock: self.clone(),
            caller: calling,
            tool: Arc::from(target.name),
            arguments_sha256: arguments_sha256.to_owned(),
            component: target.component.clone(),
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
            traceparent: usage
                .trace
                .as_ref()
                .map(crate::gate::telemetry::traceparent),
        };
        let (component, name, events, principal) = (
            target.component.clone(),
            services.tool.clone(),
            ctx.events,
            caller.principal.clone(),
        );
        // A completion answers a keystroke: it asks nobody and calls nothing.
        let services: Option<Arc<dyn CallServices>> = match target.offering {
            Offering::PromptCompletion | Offering::ResourceCompletion => None,
            _ => Some(services),
        };
        // On the guest pool: a runaway guest never holds a thread that serves others.
        let run = async move {
            let invocation = Invocation::Call {
                work: input.work(&name),
                grants,
                services,
                shadow,
                caller: principal,
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
    /// The tool, prompt or resource the request names.
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
    /// One request of the tool's `ask` as a question: its key usable, its form or sampling
    /// request well formed.
    fn question_of(&self, r: &airlock_host_api::InputRequest) -> Result<Question, String> {
        use airlock_host_api::InputKind;
        let key = &r.key;
        if !crate::pipeline::catalog::valid_name(key) || key.starts_with("airlock.") {
            return Err(format!(
                "the key \"{}\" must be 1 to 64 characters from A-Z a-z 0-9 _ - . and not \
                 start with \"airlock.\" (the host's own keys)",
                key.chars().take(64).collect::<String>()
            ));
        }
        let tool = &self.tool;
        Ok(match &r.kind {
            InputKind::Form(form) => {
                let schema = self.form_schema(&form.schema)?;
                let q = Question::asked(Asking::Elicit, tool, key, &form.message, schema, None);
                q.elicitation()?;
                q
            }
            InputKind::Sample(request) => Question::asked(
                Asking::Sample,
                tool,
                key,
                "asks the client's model for a message",
                JsonObject::new(),
                Some(sampling_params(request)?),
            ),
            InputKind::Roots => Question::asked(
                Asking::Roots,
                tool,
                key,
                "asks for the client's roots",
                JsonObject::new(),
                None,
            ),
        })
    }

    /// A tool's form schema, with no secret value in what the client will show.
    fn form_schema(&self, schema: &str) -> Result<JsonObject, String> {
        let mut schema = match serde_json::from_str::<serde_json::Value>(schema) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => return Err("the schema is not a JSON object".to_owned()),
        };
        let redactor = &self.component.prepared.redactor;
        rewrite_json_strings(&mut schema, &|s| redactor.redact(s));
        match schema {
            serde_json::Value::Object(o) => Ok(o),
            _ => unreachable!("checked above"),
        }
    }

    /// `question`, bound to this call's arguments and to how often it was asked before in
    /// the top-level call (a tool confirming two steps with one prompt asks twice).
    fn occurrence(&self, question: Question) -> Question {
        self.interaction
            .occurrence(question, &self.arguments_sha256)
    }

    /// Put one question and wait for its answer.
    async fn put(
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
            match self.put(question).await {
                Ok(a) => Ok(a.reply.is_yes()),
                // No answer in time is a no; the tool decides what a no means.
                Err(CallFailure::ApprovalTimedOut { .. }) => Ok(false),
                Err(f) => Err(f),
            }
        })
    }

    fn elicit(self: Arc<Self>, message: String, schema: String) -> Served<Result<Reply, String>> {
        Box::pin(async move {
            // Titles and descriptions reach the client: no secret values in them.
            let schema = match self.form_schema(&schema) {
                Ok(s) => s,
                Err(why) => return Ok(Err(why)),
            };
            let question = self.occurrence(Question::elicit(&self.tool, &message, schema));
            if let Err(e) = question.elicitation() {
                return Ok(Err(e));
            }
            match self.put(question).await {
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
                &self.component.entry,
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

    fn ask(
        self: Arc<Self>,
        requests: Vec<airlock_host_api::InputRequest>,
    ) -> Served<Result<Vec<airlock_host_api::Answer>, String>> {
        Box::pin(async move {
            // More requests than a call may ask questions in all is refused before any work.
            if requests.len() > crate::gate::approval::MAX_QUESTIONS as usize {
                return Err(CallFailure::TooManyQuestions {
                    tool: self.tool.to_string(),
                    limit: crate::gate::approval::MAX_QUESTIONS,
                });
            }
            let mut keys = std::collections::HashSet::with_capacity(requests.len());
            if let Some(r) = requests.iter().find(|r| !keys.insert(r.key.as_str())) {
                return Ok(Err(format!("the key \"{}\" is used twice", r.key)));
            }
            let mut questions = Vec::with_capacity(requests.len());
            for r in &requests {
                let question = match self.question_of(r) {
                    Ok(q) => q,
                    Err(why) => return Ok(Err(why)),
                };
                questions.push(self.occurrence(question));
            }
            // Every question is put before any answer is awaited from a retry: on 2026-07-28
            // they all go to the client in one round.
            let mut answers = Vec::with_capacity(questions.len());
            let mut waiting = false;
            for (r, q) in requests.iter().zip(questions) {
                let asking = q.asking;
                let reply = match self.put(q).await {
                    Ok(a) => a.reply,
                    Err(CallFailure::InputRequired) => {
                        waiting = true;
                        continue;
                    }
                    Err(CallFailure::ApprovalTimedOut { .. }) => Reply::Cancel,
                    Err(f) => return Err(f),
                };
                answers.push(airlock_host_api::Answer {
                    key: r.key.clone(),
                    reply: input_reply(asking, reply),
                });
            }
            if waiting {
                return Err(CallFailure::InputRequired);
            }
            Ok(Ok(answers))
        })
    }

    fn client_supports(&self) -> airlock_host_api::ClientFeatures {
        let caps = self.interaction.caps;
        airlock_host_api::ClientFeatures {
            elicitation: caps.elicitation,
            sampling: caps.sampling,
            roots: caps.roots,
        }
    }

    fn signal(&self, signal: store::Signal) -> Result<(), String> {
        if let store::Signal::ResourceUpdated(uri) = &signal {
            let c = &self.component;
            if !c.resources.iter().any(|r| **r == **uri)
                && !c.templates.iter().any(|t| t.matches(uri))
            {
                return Err(format!(
                    "{} does not serve the resource {uri}",
                    c.entry.name
                ));
            }
        }
        // Nobody listening is not an error.
        let _ = self.airlock.operator.signals.send(signal);
        Ok(())
    }
}

/// An MCP `sampling/createMessage` request's parameters from the tool's request.
fn sampling_params(r: &airlock_host_api::SampleRequest) -> Result<JsonObject, String> {
    use airlock_host_api::{Content, Role};
    use base64::Engine as _;
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    if r.messages.is_empty() {
        return Err("a sampling request needs at least one message".into());
    }
    let mut messages = Vec::with_capacity(r.messages.len());
    for m in &r.messages {
        let content = match &m.content {
            Content::Text(t) => serde_json::json!({ "type": "text", "text": t }),
            Content::Image(i) => {
                serde_json::json!({ "type": "image", "data": b64(&i.data), "mimeType": i.mime_type })
            }
            Content::Audio(a) => {
                serde_json::json!({ "type": "audio", "data": b64(&a.data), "mimeType": a.mime_type })
            }
            _ => return Err("sampling messages hold text, images or audio".into()),
        };
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        messages.push(serde_json::json!({ "role": role, "content": content }));
    }
    let mut params = serde_json::json!({ "messages": messages, "maxTokens": r.max_tokens });
    if let Some(p) = &r.system_prompt {
        params["systemPrompt"] = p.clone().into();
    }
    if let Some(t) = r.temperature.filter(|t| t.is_finite()) {
        params["temperature"] = t.into();
    }
    if !r.stop_sequences.is_empty() {
        params["stopSequences"] = r.stop_sequences.clone().into();
    }
    if !r.model_hints.is_empty() {
        let hints: Vec<_> = r
            .model_hints
            .iter()
            .map(|h| serde_json::json!({ "name": h }))
            .collect();
        params["modelPreferences"] = serde_json::json!({ "hints": hints });
    }
    match params {
        serde_json::Value::Object(o) => Ok(o),
        _ => unreachable!("a JSON object literal"),
    }
}

/// The client's answer to one request of the tool's `ask`, in the contract's terms.
fn input_reply(asking: Asking, reply: Reply) -> airlock_host_api::InputReply {
    use airlock_host_api::{ElicitAnswer, InputReply, SampleError};
    match asking {
        Asking::Sample => InputReply::Sample(match reply {
            Reply::Returned { result } => sample_reply(&result),
            Reply::Decline => Err(SampleError::Declined("the user declined".into())),
            _ => Err(SampleError::Declined("the client did not answer".into())),
        }),
        Asking::Roots => InputReply::Roots(match reply {
            Reply::Returned { result } => result
                .get("roots")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    Some(airlock_host_api::Root {
                        uri: r.get("uri")?.as_str()?.to_owned(),
                        name: r.get("name").and_then(|n| n.as_str()).map(str::to_owned),
                    })
                })
                .collect(),
            _ => Vec::new(),
        }),
        _ => InputReply::Form(match reply {
            Reply::Accept { content } => {
                ElicitAnswer::Accept(serde_json::Value::Object(content).to_string())
            }
            Reply::Decline => ElicitAnswer::Decline,
            Reply::Cancel | Reply::Returned { .. } => ElicitAnswer::Cancel,
        }),
    }
}

/// A `CreateMessageResult` as the contract's reply.
fn sample_reply(
    result: &JsonObject,
) -> Result<airlock_host_api::SampleReply, airlock_host_api::SampleError> {
    use airlock_host_api::{Content, Media, Role, SampleError};
    use base64::Engine as _;
    let invalid =
        |why: &str| SampleError::Invalid(format!("the client's message is unusable: {why}"));
    let role = match result.get("role").and_then(|r| r.as_str()) {
        Some("assistant") => Role::Assistant,
        Some("user") => Role::User,
        _ => return Err(invalid("no role")),
    };
    // One content block, or the first of several.
    let content = match result.get("content") {
        Some(serde_json::Value::Array(a)) => a.first(),
        other => other,
    }
    .ok_or_else(|| invalid("no content"))?;
    let text = |k: &str| content.get(k).and_then(|v| v.as_str());
    let media = || -> Result<Media, SampleError> {
        let data = base64::engine::general_purpose::STANDARD
            .decode(text("data").unwrap_or_default())
            .map_err(|_| invalid("data is not base64"))?;
        Ok(Media {
            data,
            mime_type: text("mimeType").unwrap_or_default().to_owned(),
        })
    };
    let content = match text("type") {
        Some("text") => Content::Text(text("text").unwrap_or_default().to_owned()),
        Some("image") => Content::Image(media()?),
        Some("audio") => Content::Audio(media()?),
        _ => return Err(invalid("content of an unknown type")),
    };
    Ok(airlock_host_api::SampleReply {
        role,
        content,
        model: result
            .get("model")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned(),
        stop_reason: result
            .get("stopReason")
            .and_then(|m| m.as_str())
            .map(str::to_owned),
    })
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
fn arguments_digest(arguments: Option<&Cow<'_, JsonObject>>) -> String {
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

/// The longest name (tool, prompt, URI) a record or log line shows.
const MAX_SHOWN_NAME: usize = 512;

/// `name`, cut to [`MAX_SHOWN_NAME`] bytes on a character boundary.
fn shown_name(name: &str) -> &str {
    &name[..name.floor_char_boundary(MAX_SHOWN_NAME)]
}

/// What a client asks of the hosted components.
pub enum Request<'a> {
    /// `tools/call`.
    Tool {
        name: &'a str,
        arguments: Option<&'a JsonObject>,
    },
    /// `resources/read`.
    ReadResource { uri: &'a str },
    /// `prompts/get`.
    GetPrompt {
        name: &'a str,
        arguments: Option<&'a JsonObject>,
    },
    /// `completion/complete`: values for `argument` of a prompt or template variable.
    Complete {
        of: Completing<'a>,
        argument: &'a str,
        value: &'a str,
        /// Arguments already chosen.
        context: Vec<(String, String)>,
    },
}

/// What a completion is for.
#[derive(Debug, Clone, Copy)]
pub enum Completing<'a> {
    /// An argument of the prompt of that name.
    Prompt(&'a str),
    /// A variable of the resource template written so.
    Template(&'a str),
}

impl Request<'_> {
    /// What the request names, as the client sent it.
    pub fn name(&self) -> &str {
        match self {
            Request::Tool { name, .. } | Request::GetPrompt { name, .. } => name,
            Request::ReadResource { uri } => uri,
            Request::Complete { of, .. } => match of {
                Completing::Prompt(name) => name,
                Completing::Template(template) => template,
            },
        }
    }

    /// What the request's digest binds (approvals, tickets, the audit record): a tool's or a
    /// prompt's arguments, the URI read, or what is completed.
    fn bound(&self) -> Option<Cow<'_, JsonObject>> {
        let object = |v: serde_json::Value| match v {
            serde_json::Value::Object(o) => Some(Cow::Owned(o)),
            _ => None,
        };
        match self {
            Request::Tool { arguments, .. } | Request::GetPrompt { arguments, .. } => {
                arguments.map(Cow::Borrowed)
            }
            Request::ReadResource { uri } => object(serde_json::json!({ "uri": uri })),
            Request::Complete {
                argument,
                value,
                context,
                ..
            } => object(serde_json::json!({
                "ref": self.name(),
                "argument": argument,
                "value": value,
                "context": context,
            })),
        }
    }

    /// The arguments the audit record keeps (as `audit_arguments` says) and rules match.
    fn arguments(&self) -> Option<&JsonObject> {
        match self {
            Request::Tool { arguments, .. } | Request::GetPrompt { arguments, .. } => *arguments,
            Request::ReadResource { .. } | Request::Complete { .. } => None,
        }
    }

    fn offering(&self) -> Offering {
        match self {
            Request::Tool { .. } => Offering::Tool,
            Request::ReadResource { .. } => Offering::Resource,
            Request::GetPrompt { .. } => Offering::Prompt,
            Request::Complete { of, .. } => match of {
                Completing::Prompt(_) => Offering::PromptCompletion,
                Completing::Template(_) => Offering::ResourceCompletion,
            },
        }
    }
}

/// What kind of thing a request reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offering {
    Tool,
    Resource,
    Prompt,
    PromptCompletion,
    ResourceCompletion,
}

impl Offering {
    /// The MCP method, as the audit record names the request.
    fn method(self) -> &'static str {
        match self {
            Offering::Tool => "tools/call",
            Offering::Resource => "resources/read",
            Offering::Prompt => "prompts/get",
            Offering::PromptCompletion | Offering::ResourceCompletion => "completion/complete",
        }
    }

    /// The family an operator kills as a whole (a component's resources or prompts); tools
    /// are killed by name.
    fn family(self) -> Option<Family> {
        match self {
            Offering::Tool => None,
            Offering::Resource | Offering::ResourceCompletion => Some(Family::Resources),
            Offering::Prompt | Offering::PromptCompletion => Some(Family::Prompts),
        }
    }
}

/// A resolved request: the component that serves it and what it is called.
struct Target<'a> {
    component: &'a Arc<LoadedComponent>,
    /// The tool, for a tool call.
    tool: Option<&'a CatalogTool>,
    /// The prompt, for a prompt.
    prompt: Option<&'a rmcp::model::Prompt>,
    name: &'a str,
    offering: Offering,
}

impl Target<'_> {
    /// The rate bucket beside the principal's: the tool's, or the component's resources' or
    /// prompts'.
    fn rate_key(&self) -> Cow<'_, str> {
        match self.offering.family() {
            None => Cow::Borrowed(self.name),
            Some(family) => Cow::Owned(family.rate_key(&self.component.entry.name)),
        }
    }

    /// What a ticket issued for this request binds besides the caller and the arguments.
    fn ticket_label(&self) -> String {
        match self.offering {
            Offering::Tool => self.name.to_owned(),
            other => format!("{} {}", other.method(), self.name),
        }
    }
}

/// The same rule as `tools/list`, applied again: what a principal cannot see is not what it
/// can call.
fn authorize(principal: &Principal, target: &Target<'_>) -> Result<(), CallFailure> {
    if principal.may_use(&target.component.entry.roles) {
        Ok(())
    } else {
        Err(CallFailure::NotAuthorized {
            principal: principal.name.to_string(),
            tool: target.name.to_owned(),
        })
    }
}

/// What the guest is given, prepared before it runs.
enum Input {
    Call { arguments: String },
    Read { uri: String },
    Prompt { arguments: Vec<(String, String)> },
    Complete(CompletionRequest),
}

impl Input {
    fn work<'a>(&'a self, name: &'a str) -> Work<'a> {
        match self {
            Input::Call { arguments } => Work::Call {
                tool: name,
                arguments,
            },
            Input::Read { uri } => Work::ReadResource { uri },
            Input::Prompt { arguments } => Work::GetPrompt { name, arguments },
            Input::Complete(request) => Work::Complete(request),
        }
    }
}

/// The longest validation message a client reads (it names the JSON pointer and the rule).
const MAX_VALIDATION_MESSAGE: usize = 512;

/// A tool's arguments against its input schema: the first mismatch, with its JSON pointer, is
/// `invalid_arguments`. The message never quotes the value (it may be large or secret).
fn check_arguments(tool: &CatalogTool, arguments: Option<&JsonObject>) -> Result<(), CallFailure> {
    let empty = serde_json::Value::Object(JsonObject::new());
    let given;
    let instance = match arguments {
        None => &empty,
        Some(a) => {
            given = serde_json::Value::Object(a.clone());
            &given
        }
    };
    tool.input
        .validate(instance)
        .map_err(|e| CallFailure::InvalidArguments(mismatch("the arguments do not match", &e)))
}

/// A schema mismatch as a client reads it: where (a JSON pointer) and which rule, the value
/// itself masked, at most [`MAX_VALIDATION_MESSAGE`] bytes.
fn mismatch(what_does_not_match: &str, e: &jsonschema::ValidationError<'_>) -> String {
    let at = e.instance_path().as_str();
    let at = if at.is_empty() { "/" } else { at };
    let mut text = format!("{what_does_not_match} the schema at {at}: {}", e.masked());
    if text.len() > MAX_VALIDATION_MESSAGE {
        text.truncate(text.floor_char_boundary(MAX_VALIDATION_MESSAGE));
        text.push('…');
    }
    text
}

/// A tool's structured output against its output schema: a tool that declares one and
/// returns a result (not an error) must return structured content that matches it.
fn check_output(tool: &CatalogTool, result: &CallToolResult) -> Result<(), CallFailure> {
    let Some(schema) = &tool.output else {
        return Ok(());
    };
    if result.is_error == Some(true) {
        return Ok(());
    }
    let Some(structured) = &result.structured_content else {
        return Err(CallFailure::InvalidOutput(
            "the tool declares an output schema but returned no structured content".into(),
        ));
    };
    schema.validate(structured).map_err(|e| {
        CallFailure::InvalidOutput(mismatch("the structured content does not match", &e))
    })
}

/// Serialise the input once, for the guest, and enforce its size limit; a prompt's required
/// arguments must all be there.
fn validate_input(target: &Target<'_>, request: &Request<'_>) -> Result<Input, CallFailure> {
    let limit = target.component.entry.limits.max_argument_bytes;
    let too_large = |n: usize| n as u64 > limit.bytes();
    let input = match request {
        Request::Tool { arguments, .. } => {
            let text = match arguments {
                None => "{}".to_owned(),
                Some(a) => serde_json::to_string(a)
                    .map_err(|e| CallFailure::InvalidArguments(e.to_string()))?,
            };
            if too_large(text.len()) {
                return Err(CallFailure::ArgumentsTooLarge { limit });
            }
            // The size limit first: the schema runs only over arguments within it.
            if let Some(tool) = target.tool {
                check_arguments(tool, *arguments)?;
            }
            Input::Call { arguments: text }
        }
        Request::ReadResource { uri } => {
            if too_large(uri.len()) {
                return Err(CallFailure::ArgumentsTooLarge { limit });
            }
            Input::Read {
                uri: (*uri).to_owned(),
            }
        }
        Request::GetPrompt { name, arguments } => {
            let given: Vec<(String, String)> = arguments
                .iter()
                .flat_map(|a| a.iter())
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect();
            if too_large(given.iter().map(|(k, v)| k.len() + v.len()).sum()) {
                return Err(CallFailure::ArgumentsTooLarge { limit });
            }
            let required = target
                .prompt
                .and_then(|p| p.arguments.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.required == Some(true));
            for a in required {
                if !given.iter().any(|(k, _)| *k == a.name) {
                    return Err(CallFailure::InvalidArguments(format!(
                        "prompt {name} needs the argument {}",
                        a.name
                    )));
                }
            }
            Input::Prompt { arguments: given }
        }
        Request::Complete {
            of,
            argument,
            value,
            context,
        } => {
            let bytes = argument.len()
                + value.len()
                + context
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            if too_large(bytes) {
                return Err(CallFailure::ArgumentsTooLarge { limit });
            }
            Input::Complete(CompletionRequest {
                target: match of {
                    Completing::Prompt(p) => CompletionTarget::Prompt((*p).to_owned()),
                    Completing::Template(t) => CompletionTarget::ResourceTemplate((*t).to_owned()),
                },
                argument: (*argument).to_owned(),
                value: (*value).to_owned(),
                context: context.clone(),
            })
        }
    };
    Ok(input)
}

/// The scan of what leaves the host: every secret value in the result, the failure message
/// or the captured output is replaced by `[REDACTED:NAME]`.
fn redact(
    redactor: &Redactor,
    result: Result<Response, CallFailure>,
    usage: &mut Usage,
) -> Result<Response, CallFailure> {
    // A detection's pointer names keys the tool chose.
    for d in &mut usage.safety.detections {
        redactor.redact_in_place(&mut d.at);
    }
    for (captured, _) in [&mut usage.stdout, &mut usage.stderr] {
        if !captured.is_empty()
            && let Cow::Owned(clean) = redactor.redact(&String::from_utf8_lossy(captured))
        {
            *captured = clean.into_bytes();
        }
    }
    match result {
        Ok(mut r) => r.redact(redactor).map(|()| r),
        Err(f) => Err(f.redacted(redactor)),
    }
}

/// One call's audit record (the fields after `kind`).
#[derive(serde::Serialize)]
struct CallRecord<'a> {
    /// The MCP method: `tools/call`, `resources/read`, `prompts/get`, `completion/complete`.
    request: &'static str,
    principal: &'a str,
    tool: &'a str,
    component: Option<&'a str>,
    /// The sha256 of the component that served the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    component_sha256: Option<&'a str>,
    /// The trusted key that signed it (`[trust.keys]`), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<&'a str>,
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
    /// The highest data class the call (and any call beneath it) reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_class: Option<DataClass>,
    /// The version of the content-safety rules the call was checked against.
    rules: &'a str,
    /// What the content checks found in the output, and did.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    detections: &'a [safety::Detection],
    /// Detections past the listed ones, counted.
    #[serde(skip_serializing_if = "is_zero")]
    more_detections: usize,
    /// The result's text was spotlighted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    spotlight: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The `_meta` key carrying the data class of a call's result.
pub const DATA_CLASS_META_KEY: &str = "airlock/data_class";
/// The `_meta` key carrying what the content checks found in a result.
pub const SAFETY_META_KEY: &str = "airlock/safety";
/// The `_meta` key carrying the marker a spotlighted result's text is wrapped with.
pub const SPOTLIGHT_META_KEY: &str = "airlock/spotlight";

/// Results up to this many bytes of text are scanned on the thread that serves the call.
const INLINE_SCAN_BYTES: usize = 256 << 10;

/// About how many bytes of text the outbound scan reads in `response`.
fn scan_size(response: &Response) -> usize {
    match response {
        Response::Tool(r) => output::size_of_result(r),
        Response::Resource(r) => r
            .contents
            .iter()
            .map(|c| match c {
                rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.len(),
                _ => 0,
            })
            .sum(),
        // Prompts and completions are small; the output limit bounds them as well.
        Response::Prompt(_) | Response::Completion(_) => 0,
    }
}

/// A random marker for spotlighting (128 bits, hex). Without an entropy source there is none
/// a tool could not guess, and the result is withheld rather than wrapped in a guessable one.
fn spotlight_marker() -> Result<String, CallFailure> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|_| CallFailure::OutputBlocked {
        rule: "spotlight-without-randomness".into(),
    })?;
    Ok(hex::encode(b))
}

/// What a catalog offers (tools with their schemas and annotations, resources, templates and
/// prompts with their arguments), against the rule set: every string of each, on its own (as
/// a client shows it, not its JSON form with escapes). A hidden character or an injection
/// rule's match refuses the load (or is logged, as `[safety] metadata_invisible` and
/// `metadata` say); a description over `max_description_bytes` is logged as suspicious.
fn check_metadata(catalog: &Catalog, rules: &RuleSet) -> Result<(), ConfigError> {
    let settings = &catalog.policy.safety;
    let refuse = |key: String, problem: String| ConfigError {
        file: catalog.policy.origin.clone(),
        key,
        problem,
    };
    // (entry, what: "tool x", the item as JSON)
    let mut offered: Vec<(&str, String, serde_json::Value)> = Vec::new();
    for c in &catalog.components {
        for name in c.tools.iter() {
            if let Ok(tool) = catalog.tool(name) {
                let v = serde_json::to_value(&tool.tool).unwrap_or_default();
                offered.push((&c.entry.name, format!("tool {name}"), v));
            }
        }
    }
    for r in catalog.resources() {
        let v = serde_json::to_value(&r.item).unwrap_or_default();
        offered.push((
            &r.component.entry.name,
            format!("resource {}", r.item.uri),
            v,
        ));
    }
    for t in catalog.templates() {
        let v = serde_json::to_value(&t.item.1).unwrap_or_default();
        let what = format!("resource template {}", t.item.1.uri_template);
        offered.push((&t.component.entry.name, what, v));
    }
    for p in catalog.prompts() {
        let v = serde_json::to_value(&p.item).unwrap_or_default();
        offered.push((
            &p.component.entry.name,
            format!("prompt {}", p.item.name),
            v,
        ));
    }
    let mut strings = Vec::new();
    for (entry, what, item) in &offered {
        strings.clear();
        item_strings(item, &mut String::new(), &mut strings);
        for (at, text) in &strings {
            let key = || format!("tool \"{entry}\" › {what} › {at}");
            if let Some(rule) = safety::hidden_rule_in(text) {
                let problem = format!("rule {rule}: {at} hides characters a person does not see");
                match settings.metadata_invisible {
                    MetadataPolicy::Refuse => return Err(refuse(key(), problem)),
                    MetadataPolicy::Warn => tracing::warn!(
                        target: "airlock::safety", component = *entry, item = %what, rule,
                        at = %at, action = "flagged", "metadata: {problem}"
                    ),
                }
            }
            for rule in rules.injection_rules_in(text) {
                let problem = format!("rule {rule}: {at} reads like instructions to the model");
                match settings.metadata {
                    MetadataPolicy::Refuse => return Err(refuse(key(), problem)),
                    MetadataPolicy::Warn => tracing::warn!(
                        target: "airlock::safety", component = *entry, item = %what,
                        rule = &*rule, at = %at, action = "flagged", "metadata: {problem}"
                    ),
                }
            }
        }
        if let Some(d) = item["description"].as_str()
            && d.len() as u64 > settings.max_description_bytes.bytes()
        {
            tracing::warn!(
                target: "airlock::safety", component = *entry, item = %what,
                rule = "description-length", bytes = d.len(), action = "flagged",
                "metadata: a description this long is where hidden instructions hide"
            );
        }
    }
    Ok(())
}

/// Every string in `v` (keys too), with the JSON pointer of where it is.
fn item_strings(v: &serde_json::Value, at: &mut String, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) => out.push((at.clone(), s.clone())),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                item_strings(x, at, out);
                at.truncate(len);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                let len = at.len();
                at.push('/');
                at.push_str(k);
                out.push((at.clone(), k.clone()));
                item_strings(x, at, out);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

/// The audit record written before a tool that can act outside its sandbox runs.
#[derive(serde::Serialize)]
struct IntentRecord<'a> {
    request: &'static str,
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
    /// The component's sha256 (provenance in the record).
    component_sha256: Option<Arc<str>>,
    signer: Option<Arc<str>>,
    redactor: Option<Arc<Redactor>>,
    fuel_used: Option<u64>,
    peak_memory: usize,
    /// Bytes of the response as sent (0 for a failure).
    output_bytes: usize,
    /// The call's span, while traces are exported: the parent of its steps' spans, of its
    /// nested calls' and of its tool's outgoing requests.
    trace: Option<opentelemetry::trace::SpanContext>,
    /// The steps done, with their times, for the call's trace (kept only while traced).
    steps: Vec<(&'static str, SystemTime, SystemTime)>,
    /// When the output step began (once the sandbox returned).
    output_from: Option<Instant>,
    stdout: (Vec<u8>, u64),
    stderr: (Vec<u8>, u64),
    /// The data class of the called tool.
    class: Option<DataClass>,
    /// What the outbound checks found and did.
    safety: OutboundReport,
    /// The marker spotlighting wrapped the result's text with.
    spotlight: Option<String>,
}

/// The most of a call's kept arguments (as JSON text) its span carries.
const MAX_SPAN_ARGUMENTS: usize = 4096;

/// The name the metrics and the trace give what a request targets: a tool's name, the
/// `[[tool]]` entry of a read, prompt or completion, or `unknown` when the catalog has none of
/// that name (never the client's text: it could name anything).
fn catalog_label(request: &Request<'_>, shown: &Shown<'_>, usage: &Usage) -> Arc<str> {
    match (&usage.component, request.offering()) {
        (Some(_), Offering::Tool) => Arc::from(&*shown.tool),
        (Some(entry), _) => entry.clone(),
        (None, _) => Arc::from("unknown"),
    }
}

impl Usage {
    /// A step of the pipeline ended: its time in the metrics and, while traced, in the trace.
    fn mark(&mut self, step: &'static str, since: Instant) {
        let took = since.elapsed();
        metrics().step(step, took);
        if self.trace.is_some() {
            let end = SystemTime::now();
            self.steps.push((step, end - took, end));
        }
    }
}

/// A call's tool name and principal as its audit record and log event show them.
struct Shown<'a> {
    tool: Cow<'a, str>,
    principal: Cow<'a, str>,
    /// The MCP method.
    request: &'static str,
}

/// The structured log event of a finished call, and the guest's captured output.
fn record(
    shown: &Shown<'_>,
    caller: &Caller,
    result: &Result<Response, CallFailure>,
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
    let (tool, principal, request) = (&*shown.tool, &*shown.principal, shown.request);
    let component = usage.component.as_deref().unwrap_or("-");
    let call_id = caller.call_id.as_str();
    let duration_us = started.elapsed().as_micros() as u64;
    let (fuel_used, peak_memory) = (usage.fuel_used, usage.peak_memory);
    match result {
        Ok(r) => tracing::info!(
            target: "airlock::call", request, tool, component, principal, call_id, outcome = "completed",
            is_error = r.is_error(), duration_us, fuel_used, peak_memory, "call completed"
        ),
        Err(CallFailure::Blocked { denial, .. }) => tracing::warn!(
            target: "airlock::call", request, tool, component, principal, call_id, outcome = "blocked_by_policy",
            grant_kind = denial.grant_kind(), target = &*scrub(denial.target()),
            duration_us, fuel_used, peak_memory, reason = %scrub(&denial.to_string()), "call blocked by policy"
        ),
        Err(f) => tracing::warn!(
            target: "airlock::call", request, tool, component, principal, call_id, outcome = f.kind(),
            duration_us, fuel_used, peak_memory, reason = %scrub(&f.to_string()), "call failed"
        ),
    }
    let rules = usage
        .safety
        .detections
        .iter()
        .map(|d| (&*d.rule, d.at.as_str(), d.action));
    let rejected = match result {
        Err(CallFailure::RejectedInput { rule, at }) => Some((*rule, at.as_str(), "rejected")),
        _ => None,
    };
    for (rule, at, action) in rules
        .map(|(r, at, a)| (r, at, safety::action_name(a)))
        .chain(rejected)
    {
        tracing::warn!(
            target: "airlock::safety", request, tool, component, principal, call_id, rule,
            at = %scrub(at), action, "content safety"
        );
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
    use crate::core::canonical::write_canonical;

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
        let trace_id = |h: &str| {
            crate::gate::telemetry::parse_traceparent(h).map(|c| c.trace_id().to_string())
        };
        assert_eq!(
            trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
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
