//! Traces: W3C trace context carried from a request to everything it causes,
//! and spans exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! The context ([`TraceContext`]) is ours and always there: a request's
//! `traceparent` is honoured (a new trace otherwise), stored with the events
//! it records and the jobs they start, and handed on (`TRACEPARENT` for jobs,
//! `Lambda-Runtime-Trace-Id` and a `traceparent` header for functions,
//! `traceresponse` to clients). A [`Span`] is a few words on the stack; only
//! when export is on does its end build an OpenTelemetry span (with the ids
//! it already has), which the SDK's batch processor sends from its own thread.

use std::borrow::Cow;
use std::future::Future;
use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub use opentelemetry::trace::SpanKind as Kind;

/// The W3C header a request's trace arrives in.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header a response names its trace in.
pub const TRACERESPONSE: &str = "traceresponse";

/// A position in a trace: the trace, the span, whether it is sampled.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl std::fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.traceparent())
    }
}

fn hex_into<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    // Lowercase only, as the W3C format has it.
    if text.len() != 2 * N || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn random_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id.to_le_bytes();
        }
    }
}

fn random_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_le_bytes();
        }
    }
}

/// A trace id as 32 lowercase hex digits, written without allocating.
pub struct TraceIdHex([u8; 16]);

impl std::fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buffer = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buffer).map_err(|_| std::fmt::Error)?;
        f.write_str(std::str::from_utf8(&buffer).map_err(|_| std::fmt::Error)?)
    }
}

impl TraceContext {
    /// Reads a `traceparent` header: `00-<32 hex>-<16 hex>-<2 hex>`, or a
    /// later version's first four fields. `None` for anything else (all-zero
    /// ids, version `ff`, uppercase), which the W3C spec says to ignore.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let version = header.get(..2)?;
        let known = match version {
            "00" => header.len() == 55,
            "ff" => false,
            _ => header.len() == 55 || header.as_bytes().get(55) == Some(&b'-'),
        };
        if !known {
            return None;
        }
        let fields = header.get(..55)?;
        let mut parts = fields.split('-');
        let (_, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        hex_into::<1>(version)?;
        let trace_id = hex_into::<16>(trace)?;
        let span_id = hex_into::<8>(span)?;
        let [flags] = hex_into::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A context stored as text ([`Self::traceparent`]); `None` if unreadable.
    pub fn from_stored(text: Option<&str>) -> Option<Self> {
        text.and_then(Self::parse)
    }

    /// The first span of a new, sampled trace.
    pub fn root() -> Self {
        Self {
            trace_id: random_trace_id(),
            span_id: random_span_id(),
            sampled: true,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_span_id(),
            ..*self
        }
    }

    /// The span of this trace whose id is derived from `seed` (the same seed,
    /// the same span), for a span started in one place and ended in another.
    pub fn derived(&self, seed: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(seed.as_bytes());
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&digest[..8]);
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        Self { span_id, ..*self }
    }

    /// `00-<trace>-<span>-<flags>`, as sent in `traceparent`.
    pub fn traceparent(&self) -> String {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        // The lengths are fixed: these cannot fail.
        let _ = hex::encode_to_slice(self.trace_id, &mut out[3..35]);
        let _ = hex::encode_to_slice(self.span_id, &mut out[36..52]);
        out[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The trace id for a log line (written without allocating).
    pub fn trace_id_hex(&self) -> TraceIdHex {
        TraceIdHex(self.trace_id)
    }

    /// The X-Ray form Lambda passes functions (`Lambda-Runtime-Trace-Id`,
    /// `_X_AMZN_TRACE_ID`): `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`.
    pub fn xray(&self) -> String {
        let trace = self.trace_id();
        format!(
            "Root=1-{}-{};Parent={};Sampled={}",
            &trace[..8],
            &trace[8..],
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }

    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    fn otel(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            if self.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )
    }
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The span the running task works in, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// Runs `work` inside `context` (what [`current`] answers there).
pub async fn within<F: Future>(context: TraceContext, work: F) -> F::Output {
    CURRENT.scope(context, work).await
}

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Spans are exported (an OTLP endpoint is configured).
pub fn exporting() -> bool {
    TRACER.get().is_some()
}

/// A span's name, built only when spans are exported.
pub fn name(make: impl FnOnce() -> String) -> Cow<'static, str> {
    if exporting() {
        make().into()
    } else {
        Cow::Borrowed("")
    }
}

/// Keep alive until exit: dropping it sends the spans still buffered.
pub struct ExportGuard(SdkTracerProvider);

impl Drop for ExportGuard {
    fn drop(&mut self) {
        if let Err(err) = self.0.shutdown() {
            eprintln!("could not send the last spans: {err}");
        }
    }
}

/// Whether the standard variables ask for an OTLP trace exporter.
fn export_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let exporter_none = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !disabled
        && !exporter_none
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Starts the OTLP/HTTP exporter when the standard variables ask for one
/// (`OTEL_EXPORTER_OTLP_ENDPOINT` and friends, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`); spans stay in process otherwise. Call it
/// before the async runtime starts; a second call is a no-op.
pub fn init_export() -> anyhow::Result<Option<ExportGuard>> {
    if !export_configured() || TRACER.get().is_some() {
        return Ok(None);
    }
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    if !protocol.is_empty() && protocol != "http/protobuf" {
        anyhow::bail!("OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: traces are exported as http/protobuf");
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()?;
    // The SDK's default resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("orchestrator");
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let _ = TRACER.set(provider.tracer("orchestrator"));
    Ok(Some(ExportGuard(provider)))
}

/// A unit of work in a trace. Cheap when nothing is exported: its context
/// and start time; attributes are kept only when exporting.
pub struct Span {
    name: Cow<'static, str>,
    kind: SpanKind,
    context: TraceContext,
    parent: Option<[u8; 8]>,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    error: Option<String>,
}

impl Span {
    /// A span under `parent` (the first of a new trace without one).
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: Option<TraceContext>,
    ) -> Self {
        let context = parent.map_or_else(TraceContext::root, |p| p.child());
        Self::with_context(name, kind, context, parent)
    }

    /// A span under the running task's span.
    pub fn child_of_current(name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Self {
        Self::start(name, kind, current())
    }

    /// A span whose own context is already decided (a job's derived span).
    pub fn with_context(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        context: TraceContext,
        parent: Option<TraceContext>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            context,
            parent: parent.map(|p| p.span_id),
            start: SystemTime::now(),
            attributes: Vec::new(),
            error: None,
        }
    }

    /// Starting earlier than now (a job's span ends in a later event).
    pub fn started_at(mut self, at_ms: i64) -> Self {
        if let Ok(ms) = u64::try_from(at_ms) {
            self.start = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        }
        self
    }

    pub fn context(&self) -> TraceContext {
        self.context
    }

    /// Whether attributes are worth building (the span will be exported).
    pub fn recording(&self) -> bool {
        self.context.sampled && exporting()
    }

    /// An attribute (kept only when exported).
    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if self.recording() {
            self.attributes.push(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed.
    pub fn fail(&mut self, why: impl std::fmt::Display) {
        if self.recording() {
            self.error = Some(why.to_string());
        }
    }

    /// Ends the span with the outcome of its work: failed if it is an error.
    pub fn end_with<T, E: std::fmt::Display>(mut self, outcome: &Result<T, E>) {
        if let Err(err) = outcome {
            self.fail(err);
        }
        self.end();
    }

    /// Ends the span now (exporting it when export is on).
    pub fn end(self) {
        let Some(tracer) = TRACER.get() else {
            return;
        };
        if !self.context.sampled {
            return;
        }
        let parent = match self.parent {
            Some(span_id) => Context::new().with_remote_span_context(
                TraceContext {
                    span_id,
                    ..self.context
                }
                .otel(),
            ),
            None => Context::new(),
        };
        let mut span = tracer
            .span_builder(self.name)
            .with_kind(self.kind)
            .with_trace_id(TraceId::from_bytes(self.context.trace_id))
            .with_span_id(SpanId::from_bytes(self.context.span_id))
            .with_start_time(self.start)
            .with_attributes(self.attributes)
            .start_with_context(tracer, &parent);
        if let Some(error) = self.error {
            use opentelemetry::trace::Span as _;
            span.set_status(Status::error(error));
        }
        use opentelemetry::trace::Span as _;
        span.end_with_timestamp(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_as_w3c_says() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(text).expect("valid");
        assert_eq!(ctx.traceparent(), text);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(ctx.is_sampled());
        assert_eq!(
            ctx.xray(),
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        );
        // A later version may add fields after a dash.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-ever";
        let ctx = TraceContext::parse(later).expect("later version");
        assert!(!ctx.is_sampled());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn children_keep_the_trace_and_derived_spans_are_stable() {
        let root = TraceContext::root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.traceparent(), root.traceparent());
        assert_eq!(root.derived("job:1"), root.derived("job:1"));
        assert_ne!(root.derived("job:1"), root.derived("job:2"));
        assert_eq!(TraceContext::parse(&child.traceparent()), Some(child));
        assert_eq!(child.trace_id_hex().to_string(), child.trace_id());
        let unsampled =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(
            unsampled.map(|t| t.traceparent()).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        );
    }
}
