//! The process's metrics: counters, gauges and histograms every layer records into, and the
//! OpenMetrics text the `[metrics]` listener serves (`serve::metrics`). One set per process
//! (a reload keeps counting); recording is a few atomic operations, and a labelled series is
//! found under a read lock. Every label's values are bounded: tool names come from the
//! catalog (a name the catalog does not know is `unknown`), outcomes are the named outcomes,
//! steps and classes are fixed lists, grants are configured ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// One finished call (or read, prompt, completion).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The MCP method (`tools/call`, `resources/read`, `prompts/get`, `completion/complete`).
    pub request: &'static str,
    /// The tool; for reads, prompts and completions the `[[tool]]` entry; `unknown` for a
    /// name the catalog does not have.
    pub tool: Arc<str>,
    /// The named outcome (`completed`, `blocked_by_policy`, …).
    pub outcome: &'static str,
    /// `local`, `anonymous`, `api_key`, `client_cert`, `jwt` or `unauthenticated`.
    pub principal_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: Arc<str>,
}

/// One outgoing HTTP request or TCP connect of a tool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EgressLabels {
    /// The `[[tool]]` entry.
    pub component: Arc<str>,
    /// The grant id that covered it (`net:https://api.example.com`, `tcp:10.0.0.5:5432`), or
    /// `none`.
    pub grant: Arc<str>,
    /// `completed`, `failed` (sent, but no response: a connect, TLS or timeout error),
    /// `refused` (no grant, a limit, an address), `revoked`, or for TCP `allowed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Which HTTP listener: `mcp` or `metrics`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Builds a histogram with fixed buckets for each series of a family.
#[derive(Clone)]
pub struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// 5 µs to about 84 s, ×4.
const SECONDS: &[f64] = &[
    0.000_005, 0.000_02, 0.000_08, 0.000_32, 0.001_28, 0.005_12, 0.020_48, 0.081_92, 0.327_68,
    1.310_72, 5.242_88, 20.971_52, 83.886_08,
];
/// 10 thousand to 1 trillion units of fuel, ×10.
const FUEL: &[f64] = &[1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12];
/// 64 KiB to 4 GiB, ×4.
const MEMORY: &[f64] = &[
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];
/// 64 B to 64 MiB, ×4.
const OUTPUT: &[f64] = &[
    64.0,
    256.0,
    1024.0,
    4096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Every metric the process records.
pub struct Metrics {
    pub calls: Family<CallLabels, Counter>,
    pub call_steps: Family<StepLabels, Histogram, Buckets>,
    pub fuel_used: Family<ToolLabels, Histogram, Buckets>,
    pub memory_peak: Family<ToolLabels, Histogram, Buckets>,
    pub output_size: Family<ToolLabels, Histogram, Buckets>,
    pub calls_in_flight: Gauge,
    pub approvals_waiting: Gauge,
    pub overrides: Family<KindLabels, Gauge>,
    pub audit_healthy: Gauge,
    pub audit_batch: Histogram,
    pub audit_write: Histogram,
    pub audit_flush: Histogram,
    pub egress: Family<EgressLabels, Counter>,
    pub sessions_open: Gauge,
    pub sessions_opened: Counter,
    pub sessions_refused: Family<ReasonLabels, Counter>,
    pub auth_refused: Family<ReasonLabels, Counter>,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections: Family<ListenerLabels, Counter>,
    pub connections_refused: Family<RefusedLabels, Counter>,
    pub ready: Gauge,
}

/// The metrics and the registry that encodes them, made at first use.
struct Exposed {
    metrics: Metrics,
    registry: Registry,
}

static EXPOSED: OnceLock<Exposed> = OnceLock::new();

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &exposed().metrics
}

/// The metrics as OpenMetrics text (`application/openmetrics-text; version=1.0.0`).
pub fn encode() -> String {
    let mut out = String::with_capacity(16 << 10);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &exposed().registry);
    out
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn exposed() -> &'static Exposed {
    EXPOSED.get_or_init(|| {
        let metrics = Metrics {
            calls: Family::default(),
            call_steps: Family::new_with_constructor(Buckets(SECONDS)),
            fuel_used: Family::new_with_constructor(Buckets(FUEL)),
            memory_peak: Family::new_with_constructor(Buckets(MEMORY)),
            output_size: Family::new_with_constructor(Buckets(OUTPUT)),
            calls_in_flight: Gauge::default(),
            approvals_waiting: Gauge::default(),
            overrides: Family::default(),
            audit_healthy: Gauge::default(),
            audit_batch: Histogram::new(exponential_buckets(1.0, 4.0, 7)),
            audit_write: Histogram::new(SECONDS.iter().copied()),
            audit_flush: Histogram::new(SECONDS.iter().copied()),
            egress: Family::default(),
            sessions_open: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_refused: Family::default(),
            auth_refused: Family::default(),
            connections_open: Family::default(),
            connections: Family::default(),
            connections_refused: Family::default(),
            ready: Gauge::default(),
        };
        let mut r = Registry::with_prefix("airlock");
        let m = &metrics;
        r.register(
            "calls",
            "Finished calls, reads, prompts and completions, by tool, named outcome and class of principal",
            m.calls.clone(),
        );
        r.register_with_unit(
            "call_step",
            "Time in each step of the call pipeline (authorize, validate, approval, admission, sandbox, output, audit) and in all (total); authenticate is per HTTP request",
            Unit::Seconds,
            m.call_steps.clone(),
        );
        r.register(
            "call_fuel_used",
            "Fuel a call used (about one unit per wasm instruction, plus the host work charged to it)",
            m.fuel_used.clone(),
        );
        r.register_with_unit(
            "call_memory_peak",
            "The most linear memory a call's instance held",
            Unit::Bytes,
            m.memory_peak.clone(),
        );
        r.register_with_unit(
            "call_output",
            "Bytes of a completed call's result, as sent",
            Unit::Bytes,
            m.output_size.clone(),
        );
        r.register(
            "calls_in_flight",
            "Calls admitted and not finished (nested calls included)",
            m.calls_in_flight.clone(),
        );
        r.register(
            "approvals_waiting",
            "Calls waiting for an operator's answer",
            m.approvals_waiting.clone(),
        );
        r.register(
            "overrides",
            "Operator overrides in force, by kind (kill_all, killed_tools, killed_principals, killed_resources, killed_prompts, revoked_grants)",
            m.overrides.clone(),
        );
        r.register(
            "audit_healthy",
            "1 while the audit log can be written (or is off), 0 while calls are refused",
            m.audit_healthy.clone(),
        );
        r.register(
            "audit_batch_records",
            "Records made durable together (one per record with durability = \"process\")",
            m.audit_batch.clone(),
        );
        r.register_with_unit(
            "audit_write",
            "Time to write a batch of records (with durability = \"machine\", until it is on stable storage)",
            Unit::Seconds,
            m.audit_write.clone(),
        );
        r.register_with_unit(
            "audit_flush",
            "Time of each fdatasync of the audit log by the flusher (durability = \"process\")",
            Unit::Seconds,
            m.audit_flush.clone(),
        );
        r.register(
            "egress_requests",
            "Outgoing HTTP requests and TCP connects of tools, by component, grant and outcome",
            m.egress.clone(),
        );
        r.register(
            "sessions_open",
            "MCP sessions open now (Streamable HTTP; a stdio server has one)",
            m.sessions_open.clone(),
        );
        r.register(
            "sessions_opened",
            "MCP sessions opened",
            m.sessions_opened.clone(),
        );
        r.register(
            "sessions_refused",
            "Sessions refused, by reason (max_sessions, max_sessions_per_principal, not_owner)",
            m.sessions_refused.clone(),
        );
        r.register(
            "auth_refused",
            "HTTP requests refused by authentication, by reason (missing, invalid_token, unknown_key, insufficient_scope, invalid_dpop_proof, unknown_certificate, proofs_full)",
            m.auth_refused.clone(),
        );
        r.register(
            "http_connections_open",
            "HTTP connections open now, by listener (mcp, metrics)",
            m.connections_open.clone(),
        );
        r.register(
            "http_connections",
            "HTTP connections accepted, by listener",
            m.connections.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections refused with 503, by listener and reason (max_connections, max_connections_per_peer)",
            m.connections_refused.clone(),
        );
        r.register(
            "ready",
            "1 while /readyz answers ready",
            m.ready.clone(),
        );
        Exposed {
            metrics,
            registry: r,
        }
    })
}

impl Metrics {
    /// Time spent in a step of the pipeline.
    pub fn step(&self, step: &'static str, took: Duration) {
        self.call_steps
            .get_or_create(&StepLabels { step })
            .observe(took.as_secs_f64());
    }
}
