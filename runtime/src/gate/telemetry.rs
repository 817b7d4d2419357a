//! OpenTelemetry traces (`[telemetry]`): the SDK's tracer, its batch processor, and the OTLP
//! exporter (HTTP, protobuf), whose requests go out on the process's runtime through the
//! host's own HTTP client ([`crate::gate::host_http::exchange`]). The batch processor runs on
//! a thread of its own: a collector that is slow or down costs calls nothing (spans wait in a
//! bounded queue, and past it they are dropped; the SDK logs both, through `internal-logs`).
//! The exports carry no header but their content's type: `OTEL_EXPORTER_OTLP_*HEADERS` from the
//! environment (a token meant for another collector) are not sent.

use crate::config::telemetry::TelemetrySettings;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use std::sync::OnceLock;
use std::time::Duration;

/// Spans waiting for export at most (past it new ones are dropped).
const MAX_QUEUED_SPANS: usize = 8192;
/// How long a finished span waits for its batch at most.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// The largest answer a collector may give.
const MAX_ANSWER_BYTES: usize = 1 << 20;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Start exporting traces by `settings` (once per process; `[telemetry]` changes need a
/// restart). `runtime` carries the exports' requests.
pub fn start(settings: &TelemetrySettings, runtime: tokio::runtime::Handle) -> anyhow::Result<()> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(settings.traces_url.clone())
        .with_timeout(settings.timeout.0)
        .with_http_client(RuntimeClient {
            runtime,
            timeout: settings.timeout.0,
        })
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the OTLP exporter: {e}"))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUED_SPANS)
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("airlock");
    if PROVIDER.set(provider).is_err() || TRACER.set(tracer).is_err() {
        anyhow::bail!("traces are already being exported");
    }
    tracing::info!(endpoint = %crate::gate::host_http::shown_origin(&settings.traces_url), "exporting traces over OTLP");
    Ok(())
}

/// The tracer, while traces are exported.
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Export what is queued and stop (at the server's stop), within `timeout`.
pub fn shutdown(timeout: Duration) {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.shutdown_with_timeout(timeout)
    {
        tracing::warn!("the last traces may not have been exported: {e}");
    }
}

/// The span context a W3C `traceparent` header names (`00-<trace>-<parent>-<flags>`), if it is
/// valid.
pub fn parse_traceparent(header: &str) -> Option<SpanContext> {
    let mut parts = header.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(version, 2) && version != "ff" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)) {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(parent).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// The `traceparent` header that makes `span` the parent of what receives it.
pub fn traceparent(span: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span.trace_id(),
        span.span_id(),
        span.trace_flags().to_u8()
    )
}

/// A context whose parent is `span` (a remote one: the client's, or a calling tool's call).
pub fn parent_context(span: Option<&SpanContext>) -> opentelemetry::Context {
    match span {
        Some(s) => opentelemetry::Context::new().with_remote_span_context(s.clone()),
        None => opentelemetry::Context::new(),
    }
}

/// The exporter's HTTP client: each request runs on the process's runtime (the batch
/// processor's thread has none) and is answered through a channel.
#[derive(Debug)]
struct RuntimeClient {
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        // Only what describes the body: headers the SDK took from the environment stay here.
        let (mut parts, body) = request.into_parts();
        let keep = [http::header::CONTENT_TYPE, http::header::CONTENT_ENCODING];
        let headers = std::mem::take(&mut parts.headers);
        for (name, value) in headers.iter() {
            if keep.contains(name) {
                parts.headers.insert(name.clone(), value.clone());
            }
        }
        let request = http::Request::from_parts(parts, body);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let timeout = self.timeout;
        self.runtime.spawn(async move {
            let answer = crate::gate::host_http::exchange(request, timeout, MAX_ANSWER_BYTES).await;
            let _ = tx.send(answer);
        });
        let answer = rx
            .await
            .map_err(|_| "the runtime stopped before the export finished")?;
        Ok(answer?)
    }
}
