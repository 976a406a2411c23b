//! Traces: one trace from `POST /events` through the handler, the job (its
//! `TRACEPARENT`) and the webhook delivery, as the real binary exports it
//! over OTLP/HTTP to a receiver that decodes the protobuf; and the trace a
//! function sees behind the proxy.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{json, Value};

use crate::apps::zip_of;
use crate::common::{eventually, Binary, FakePeer, TestApp};

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// An OTLP/HTTP trace receiver on 127.0.0.1:0 (`POST /v1/traces`, protobuf).
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Exported>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
        let store = spans.clone();
        let handler = move |headers: axum::http::HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export");
                let mut store = store.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            store.push(Exported {
                                service: service.clone(),
                                name: span.name,
                                trace_id: hex::encode(span.trace_id),
                                span_id: hex::encode(span.span_id),
                                parent_span_id: hex::encode(span.parent_span_id),
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        };
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { endpoint, spans }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// The `traceresponse` header of an answer.
fn traceresponse_of(response: &reqwest::Response) -> String {
    response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn field(traceparent: &str, index: usize) -> &str {
    traceparent.split('-').nth(index).unwrap_or_default()
}

#[tokio::test]
async fn one_trace_runs_from_the_event_through_its_job_to_the_webhook() {
    let receiver = Receiver::start().await;
    let webhook = FakePeer::start(vec![204]).await;
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    crate::common::write_job(
        dir.path(),
        "provision",
        r#"echo "traceparent=$TRACEPARENT" >> "$JOB_OUTPUT""#,
    );
    let config = dir.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
             [builder]\njobs_dir = \"{}\"\n\
             [callbacks]\nwebhook_url = \"{}\"\n\
             [tiers.basic]\njobIdentifier = \"provision\"\n",
            dir.path().join("data").display(),
            jobs.display(),
            webhook.url
        ),
    )
    .unwrap();
    let service = Binary::start(
        &["serve", "--config", config.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
            ("OTEL_SERVICE_NAME", "orchestrator-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .unwrap();

    let client = reqwest::Client::new();
    let posted = client
        .post(format!("{}/events/TENANT_PROVISIONING", service.url))
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({
            "tenant": {"id": "t-traced", "key": "traced"},
            "subscription": {"plan": {"tier": "basic"}},
            "secret": "s3cret",
            "context": "ctx",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let response_trace = traceresponse_of(&posted);
    assert_eq!(
        field(&response_trace, 1),
        TRACE,
        "the client's trace is continued"
    );
    let server_span = field(&response_trace, 2).to_owned();
    assert_ne!(server_span, CLIENT_SPAN, "the server's own span");

    // The webhook arrives, in the same trace.
    let delivery = eventually(|| async { webhook.requests().into_iter().next() }).await;
    let delivered_in = delivery.headers["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(field(&delivered_in, 1), TRACE, "{delivered_in}");

    // The job was given the trace as TRACEPARENT (and exported what it saw).
    let tenant: Value = client
        .get(format!("{}/tenants/t-traced", service.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_trace = tenant["jobOutput"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("{tenant:#}"))
        .to_owned();
    assert_eq!(field(&job_trace, 1), TRACE, "{tenant:#}");
    let job_span = field(&job_trace, 2).to_owned();

    // Every piece is exported, in one trace, each under its cause.
    let spans = eventually(|| async {
        let spans = receiver.spans();
        let webhook_span = spans.iter().any(|s| s.span_id == field(&delivered_in, 2));
        let job = spans.iter().any(|s| s.span_id == job_span);
        (webhook_span && job).then_some(spans)
    })
    .await;
    let by_id = |id: &str| {
        spans
            .iter()
            .find(|s| s.span_id == id)
            .unwrap_or_else(|| panic!("no span {id} in {spans:#?}"))
            .clone()
    };
    let server = by_id(&server_span);
    assert_eq!(
        (
            server.name.as_str(),
            server.trace_id.as_str(),
            server.parent_span_id.as_str()
        ),
        ("POST /events/{event}", TRACE, CLIENT_SPAN)
    );
    assert!(
        server.service.contains("orchestrator-under-test"),
        "{server:?}"
    );
    let job = by_id(&job_span);
    assert_eq!(
        (job.name.as_str(), job.trace_id.as_str()),
        ("job provisioning provision", TRACE)
    );
    // The job's parent is the handler of the provisioning event, under the ingestion.
    let handler = by_id(&job.parent_span_id);
    assert_eq!(handler.name, "handle TENANT_PROVISIONING");
    let ingest = by_id(&handler.parent_span_id);
    assert_eq!(
        (ingest.name.as_str(), ingest.parent_span_id.as_str()),
        ("ingest TENANT_PROVISIONING", server_span.as_str())
    );
    let webhook_span = by_id(field(&delivered_in, 2));
    assert_eq!(
        (webhook_span.name.as_str(), webhook_span.trace_id.as_str()),
        ("POST webhook", TRACE)
    );
    // The follow-ups continue it: the job's result is handled under the job.
    let result = spans
        .iter()
        .find(|s| s.name == "handle TENANT_PROVISIONING_SUCCESS")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(
        (result.trace_id.as_str(), result.parent_span_id.as_str()),
        (TRACE, job_span.as_str())
    );
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == TRACE && s.name == "commit"),
        "store calls are spans of the trace: {spans:#?}"
    );

    // The timeline and the event say which trace each step is in.
    let timeline: Value = client
        .get(format!("{}/tenants/t-traced/timeline", service.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = timeline["items"].as_array().unwrap();
    assert!(items.len() >= 6, "{timeline:#}");
    for item in items {
        assert_eq!(item["traceId"], TRACE, "{item:#}");
    }
}

/// A function behind the proxy sees the client's trace in its event's
/// `traceparent` header and in `_X_AMZN_TRACE_ID`, under the invocation's
/// span; the response names the trace in `traceresponse`.
#[tokio::test]
async fn a_function_sees_the_trace_of_the_request_it_answers() {
    const ECHO: &str = r#"exports.handler = async (event) => ({
  statusCode: 200,
  body: JSON.stringify({ header: event.headers.traceparent, xray: process.env._X_AMZN_TRACE_ID }),
});"#;
    let app = TestApp::start(|_, _| {}).await;
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": "traced", "archive": zip_of(&[("index.js", ECHO)])}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let response = app
        .client
        .get(format!("{}/", app.url))
        .header("host", "traced.localhost")
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let traceresponse = traceresponse_of(&response);
    assert_eq!(field(&traceresponse, 1), TRACE);
    let seen: Value = response.json().await.unwrap();
    let header = seen["header"].as_str().unwrap();
    assert_eq!(field(header, 1), TRACE, "{seen:#}");
    let invocation_span = field(header, 2);
    assert_ne!(invocation_span, CLIENT_SPAN);
    assert_eq!(
        seen["xray"],
        format!(
            "Root=1-{}-{};Parent={invocation_span};Sampled=1",
            &TRACE[..8],
            &TRACE[8..]
        ),
        "{seen:#}"
    );
    // Without a traceparent, a new trace.
    let fresh = app.app_get("traced", "/").await;
    let fresh_trace = traceresponse_of(&fresh);
    assert_eq!(fresh_trace.len(), 55);
    assert_ne!(field(&fresh_trace, 1), TRACE);
    let seen: Value = fresh.json().await.unwrap();
    assert_eq!(
        field(seen["header"].as_str().unwrap(), 1),
        field(&fresh_trace, 1)
    );
}
