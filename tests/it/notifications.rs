//! Tenant transitions and job outcomes published to `[notifications]`: a
//! Standard Webhooks receiver (its signature checked here by our own reading
//! of the specification) that refuses each message once, and an EventBridge
//! bus on moto read back through an SQS queue; every message delivered, none
//! twice, each on the tenant's timeline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use base64::Engine;
use hmac::{Hmac, Mac};
use orchestrator::config::{NotificationsConfig, Secret, WebhookSink};
use orchestrator::tenants::notify::Notifier;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{envelope, provisioning, write_job, TestApp};

/// One delivery: webhook-id, webhook-timestamp, webhook-signature, body,
/// and the status answered.
type Delivery = (String, String, String, String, u16);

/// A webhook receiver answering 503 to a message's first delivery, 200 after.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let seen = self.seen.clone();
        let handler = move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let id = header("webhook-id");
                let mut seen = seen.lock().unwrap();
                let first = !seen.iter().any(|s| s.0 == id);
                let status = if first { 503 } else { 200 };
                seen.push((
                    id,
                    header("webhook-timestamp"),
                    header("webhook-signature"),
                    body,
                    status,
                ));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        };
        let app = axum::Router::new().route("/hooks", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}

/// The Standard Webhooks check, written from the specification: the key is
/// the base64 after `whsec_`; the signed content `{id}.{timestamp}.{body}`;
/// the header a space-separated list of `v1,<base64 HMAC-SHA256>`.
fn verify(secret: &str, id: &str, timestamp: &str, body: &str, header: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .any(|sig| sig.strip_prefix("v1,") == Some(expected.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_and_job_outcomes_reach_every_sink_once() {
    let Some(moto) = crate::moto::moto().await else {
        return;
    };
    let url = moto.url.clone();
    let (bus, queue) =
        tokio::task::block_in_place(|| crate::sbt::bus_with_queue(&url, "orchestrator"));
    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"a signing key of our own, 32 b!")
    );
    let config = NotificationsConfig {
        event_bus: Some(bus),
        webhooks: vec![WebhookSink {
            url: hook.clone(),
            secret: Secret(secret.clone()),
        }],
    };
    let notifier = Arc::new(Notifier::new(&config, Some(&moto.sdk().await)).unwrap());
    let app = TestApp::start_with(
        move |c, dir| {
            c.notifications = config;
            let tier = json!({"jobIdentifier": "np", "deprovisioningJobIdentifier": "nd"});
            c.tiers
                .insert("basic".into(), tier.as_object().cloned().unwrap());
            write_job(
                dir,
                "np",
                "echo \"CORR=$CORRELATION_ID\" >> \"$JOB_OUTPUT\"",
            );
            write_job(dir, "nd", "true");
        },
        move |builder| builder.notifier(notifier),
    )
    .await;
    let (status, _) = app
        .post(
            "/events/TENANT_PROVISIONING",
            &envelope("n-1", "TENANT_PROVISIONING", provisioning("nt-1", "basic")),
        )
        .await;
    assert_eq!(status, 200);
    let active = app.wait_tenant("nt-1", "ACTIVE").await;
    let provisioning_id = active["jobOutput"]["CORR"].as_str().unwrap().to_owned();
    assert_eq!(provisioning_id.len(), 32, "a trace id: {provisioning_id}");
    let (status, _) = app
        .post(
            "/events/TENANT_DEPROVISIONING",
            &envelope(
                "n-2",
                "TENANT_DEPROVISIONING",
                json!({"tenant": {"id": "nt-1"}}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    app.wait_tenant("nt-1", "INACTIVE").await;

    let expected: BTreeSet<&str> = [
        "tenant.provisioning",
        "tenant.deploying",
        "tenant.active",
        "tenant.deprovisioning",
        "tenant.inactive",
    ]
    .into();
    // Each message refused once, then taken: 7 messages (5 transitions, 2 job outcomes).
    let delivered = crate::common::eventually(|| async {
        let seen = receiver.seen.lock().unwrap().clone();
        let ok: Vec<_> = seen.iter().filter(|s| s.4 == 200).cloned().collect();
        (ok.len() >= 7).then_some(seen)
    })
    .await;
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kinds = Vec::new();
    let mut correlation: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, timestamp, signature, body, status) in &delivered {
        assert!(
            verify(&secret, id, timestamp, body, signature),
            "bad signature on {id}"
        );
        let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
        assert!((0..300).contains(&age), "timestamp {timestamp}");
        *per_id.entry(id).or_default() += 1;
        if *status == 200 {
            let body: Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["data"]["tenantId"], "nt-1", "{body}");
            kinds.push(body["type"].as_str().unwrap().to_owned());
            let phase = match body["type"].as_str().unwrap() {
                "tenant.provisioning" | "tenant.deploying" | "tenant.active" => "provision",
                "tenant.deprovisioning" | "tenant.inactive" => "deprovision",
                _ => "job",
            };
            correlation
                .entry(phase.to_owned())
                .or_default()
                .insert(body["data"]["correlationId"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(per_id.len(), 7, "{per_id:?}");
    // One correlation id per operation, the one its job got as CORRELATION_ID.
    assert_eq!(
        correlation["provision"],
        BTreeSet::from([provisioning_id.clone()])
    );
    assert_eq!(correlation["deprovision"].len(), 1);
    assert_ne!(correlation["deprovision"], correlation["provision"]);
    assert!(
        per_id.values().all(|n| *n == 2),
        "each refused once, then taken once: {per_id:?}"
    );
    let transitions: BTreeSet<&str> = kinds
        .iter()
        .map(String::as_str)
        .filter(|k| !k.contains("job_"))
        .collect();
    assert_eq!(transitions, expected);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "tenant.job_succeeded")
            .count(),
        2,
        "{kinds:?}"
    );
    // A changed byte breaks the signature.
    let (id, timestamp, signature, body, _) = &delivered[0];
    assert!(!verify(
        &secret,
        id,
        timestamp,
        &body.replacen("nt-1", "nt-2", 1),
        signature
    ));

    // The bus got the same seven, as orchestrator.tenant.<transition>.
    let mut put = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while put.len() < 7 && std::time::Instant::now() < deadline {
        put.extend(tokio::task::block_in_place(|| {
            crate::sbt::received(&url, &queue)
        }));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(put.len(), 7, "{put:#?}");
    let types: BTreeSet<&str> = put
        .iter()
        .filter_map(|e| e["detail-type"].as_str())
        .collect();
    for kind in &expected {
        assert!(
            types.contains(format!("orchestrator.{kind}").as_str()),
            "{types:?}"
        );
    }
    assert!(put
        .iter()
        .all(|e| e["source"] == "orchestrator" && e["detail"]["tenantId"] == "nt-1"));

    // On the timeline: each delivery attempt of each message.
    let (_, timeline) = app.get("/tenants/nt-1/timeline").await;
    let notes: Vec<&Value> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "event" && i["type"] == "TENANT_NOTIFY")
        .collect();
    assert_eq!(
        notes.iter().filter(|i| i["status"] == "succeeded").count(),
        14,
        "{timeline:#}"
    );
    assert_eq!(
        notes.iter().filter(|i| i["status"] == "retried").count(),
        7,
        "{timeline:#}"
    );
}
