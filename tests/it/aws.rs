//! The AWS backends through the real AWS SDK against moto: DynamoDB tier
//! details, CodeBuild jobs, Lambda functions, each through the real service
//! over HTTP. moto runs no code: Lambda invokes answer from a queue we fill,
//! and builds always succeed (failure mapping is unit-tested).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, KeySchemaElement, KeyType, ProvisionedThroughput,
    ScalarAttributeType,
};
use orchestrator::builder::codebuild::CodeBuildJobs;
use orchestrator::functions::aws::AwsLambda;
use orchestrator::tiers::dynamodb::DynamoDbTiers;
use orchestrator::tiers::{TierError, TierSource};
use serde_json::{json, Value};

use crate::common::{envelope, provisioning, TestApp};
use crate::moto::{moto, Moto};
use crate::uploads::{body_of, zip_bytes, HELLO};

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

async fn tier_table(moto: &Moto, items: Vec<HashMap<String, AttributeValue>>) -> String {
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk().await);
    let table = unique("tiers");
    client
        .create_table()
        .table_name(&table)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("tier")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("tier")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    for item in items {
        client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    table
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

#[tokio::test]
async fn tier_details_come_from_dynamodb() {
    let Some(moto) = moto().await else { return };
    let table = tier_table(
        moto,
        vec![HashMap::from([
            ("tier".to_owned(), s("gold")),
            ("jobName".to_owned(), s("provision-gold")),
            ("replicas".to_owned(), AttributeValue::N("3".into())),
            ("ha".to_owned(), AttributeValue::Bool(true)),
            (
                "db".to_owned(),
                AttributeValue::M(HashMap::from([("engine".to_owned(), s("postgres"))])),
            ),
        ])],
    )
    .await;
    let tiers = DynamoDbTiers::new(&moto.sdk().await, table.clone(), Duration::from_secs(60));
    let gold = tiers.get("gold").await.unwrap();
    assert_eq!(gold.job_identifier(), Some("provision-gold"));
    assert_eq!(
        Value::Object(gold.values.clone()),
        json!({"jobName": "provision-gold", "jobIdentifier": "provision-gold", "replicas": 3, "ha": true, "db": {"engine": "postgres"}})
    );
    match tiers.get("tin").await {
        Err(TierError::NotFound(message)) => {
            assert!(
                message.contains("'tin'") && message.contains(&table),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    let missing = DynamoDbTiers::new(
        &moto.sdk().await,
        "no-such-table".into(),
        Duration::from_secs(60),
    );
    match missing.get("gold").await {
        Err(TierError::NotFound(message)) => {
            assert!(message.contains("no-such-table"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

/// A CodeBuild project in moto.
pub async fn project(moto: &Moto) -> String {
    let role = moto.role(&unique("codebuild-role")).await;
    let name = unique("provision");
    aws_sdk_codebuild::Client::new(&moto.sdk().await)
        .create_project()
        .name(&name)
        .source(
            aws_sdk_codebuild::types::ProjectSource::builder()
                .r#type(aws_sdk_codebuild::types::SourceType::NoSource)
                .location("none")
                .build()
                .unwrap(),
        )
        .artifacts(
            aws_sdk_codebuild::types::ProjectArtifacts::builder()
                .r#type(aws_sdk_codebuild::types::ArtifactsType::NoArtifacts)
                .build()
                .unwrap(),
        )
        .environment(
            aws_sdk_codebuild::types::ProjectEnvironment::builder()
                .r#type(aws_sdk_codebuild::types::EnvironmentType::LinuxContainer)
                .image("aws/codebuild/standard:7.0")
                .compute_type(aws_sdk_codebuild::types::ComputeType::BuildGeneral1Small)
                .build()
                .unwrap(),
        )
        .service_role(role)
        .send()
        .await
        .unwrap();
    name
}

/// The `environmentVariablesOverride` of the recorded StartBuild of
/// `project`, by name: (value, type).
pub fn start_build_overrides(
    recorded: &[(String, Value)],
    project: &str,
) -> HashMap<String, (String, String)> {
    let start = recorded
        .iter()
        .find(|(target, body)| target.ends_with(".StartBuild") && body["projectName"] == project)
        .map(|(_, body)| body)
        .expect("a StartBuild for the project");
    start["environmentVariablesOverride"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (text("name"), (text("value"), text("type")))
        })
        .collect()
}

async fn codebuild_app(moto: &Moto, project: &str, poll: Duration) -> TestApp {
    let sdk = moto.sdk().await;
    let project = project.to_owned();
    TestApp::start_with(
        move |config, _| {
            config.tiers.insert(
                "basic".into(),
                json!({"jobIdentifier": project, "REGION": "eu-west-1"})
                    .as_object()
                    .unwrap()
                    .clone(),
            );
        },
        move |builder| builder.builder_service(Arc::new(CodeBuildJobs::new(&sdk, poll))),
    )
    .await
}

#[tokio::test]
async fn provisioning_starts_a_codebuild_build_that_polling_completes() {
    let Some(moto) = moto().await else { return };
    let project = project(moto).await;
    let app = codebuild_app(moto, &project, Duration::from_millis(200)).await;
    let tenant = unique("acme");
    let recorded = moto
        .record(async {
            let event = envelope(
                &unique("evt"),
                "TENANT_PROVISIONING",
                provisioning(&tenant, "basic"),
            );
            let (status, _) = app.post("/events/TENANT_PROVISIONING", &event).await;
            assert_eq!(status, 200);
            app.wait_tenant(&tenant, "ACTIVE").await;
        })
        .await;
    // StartBuild named the tier's project, with every parameter a PLAINTEXT override.
    let overrides = start_build_overrides(&recorded, &project);
    let plain = |v: &str| (v.to_owned(), "PLAINTEXT".to_owned());
    assert_eq!(overrides["TENANT_ID"], plain(&tenant));
    assert_eq!(overrides["REGION"], plain("eu-west-1"));
    let view = app.wait_tenant(&tenant, "ACTIVE").await;
    let job = &view["jobs"][0];
    assert_eq!(job["backend"], "codebuild");
    let build_arn = job["externalId"].as_str().unwrap().to_owned();
    assert!(
        build_arn.contains(&format!(":build/{project}:")),
        "{build_arn}"
    );
    // moto has that build, of that project (BatchGetBuilds takes the `project:uuid` id).
    let build_id = build_arn.rsplit_once(":build/").unwrap().1;
    let builds = aws_sdk_codebuild::Client::new(&moto.sdk().await)
        .batch_get_builds()
        .ids(build_id)
        .send()
        .await
        .unwrap();
    assert_eq!(builds.builds()[0].project_name(), Some(project.as_str()));
}

#[tokio::test]
async fn a_build_state_change_event_completes_the_job_and_unknown_projects_fail_clearly() {
    let Some(moto) = moto().await else { return };
    let project = project(moto).await;
    // Polling far away: only the EventBridge event can finish the job.
    let app = codebuild_app(moto, &project, Duration::from_secs(3600)).await;
    let tenant = unique("evented");
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            &unique("evt"),
            "TENANT_PROVISIONING",
            provisioning(&tenant, "basic"),
        ),
    )
    .await;
    let view = app
        .wait_for(&format!("/tenants/{tenant}"), |t| {
            t["jobs"][0]["status"] == "running"
        })
        .await;
    let arn = view["jobs"][0]["externalId"].as_str().unwrap().to_owned();
    let change = json!({
        "version": "0", "id": unique("cb"), "detail-type": "CodeBuild Build State Change",
        "source": "aws.codebuild", "account": "123456789012", "region": "us-east-1",
        "time": "2026-11-23T00:00:00Z", "resources": [arn],
        "detail": {
            "build-status": "SUCCEEDED", "project-name": project, "build-id": arn,
            "current-phase": "COMPLETED",
            "additional-information": {"build-complete": true,
                "exported-environment-variables": [{"name": "DB_HOST", "value": "db.internal"}]}
        }
    });
    let (status, body) = app.post("/events", &change).await;
    assert_eq!(status, 200, "{body}");
    let done = app.wait_tenant(&tenant, "ACTIVE").await;
    assert_eq!(done["jobs"][0]["status"], "succeeded");
    // The build's exported variables are the job's output.
    assert_eq!(done["jobOutput"]["DB_HOST"], "db.internal", "{done:#}");

    // A tier naming a project CodeBuild does not have: the event fails, naming it.
    let missing = unique("no-such-project");
    let app = codebuild_app(moto, &missing, Duration::from_secs(3600)).await;
    let event_id = unique("evt");
    app.post(
        "/events/TENANT_PROVISIONING",
        &envelope(
            &event_id,
            "TENANT_PROVISIONING",
            provisioning(&unique("lost"), "basic"),
        ),
    )
    .await;
    let event = app.wait_event(&event_id, "failed").await;
    assert!(
        event["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains(&missing),
        "{event:#}"
    );
}

/// The service with apps on AWS Lambda at `sdk` (moto or the fake), functions running as `role`.
pub async fn lambda_app(
    sdk: &aws_config::SdkConfig,
    role: &str,
    configure: impl FnOnce(&mut orchestrator::config::Config, &std::path::Path),
) -> TestApp {
    let (sdk, role) = (sdk.clone(), role.to_owned());
    TestApp::start_with(configure, move |builder| {
        builder.function_backend(Arc::new(AwsLambda::new(&sdk, role, Some("x86_64"))))
    })
    .await
}

#[tokio::test]
async fn apps_deploy_to_lambda_invoke_update_reconcile_and_remove() {
    let Some(moto) = moto().await else { return };
    let role = moto.role(&unique("lambda-role")).await;
    let sdk = moto.sdk().await;
    let app = lambda_app(&sdk, &role, |_, _| {}).await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let name = unique("fn");
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": crate::apps::seed_archive(), "environment": {"STAGE": "test"}}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let config = lambda
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(config.runtime().map(|r| r.as_str()), Some("nodejs20.x"));
    assert_eq!(config.handler(), Some("index.handler"));
    assert_eq!(config.role(), Some(role.as_str()));
    assert_eq!(
        config.architectures(),
        [aws_sdk_lambda::types::Architecture::X8664]
    );
    assert_eq!(
        config
            .environment()
            .and_then(|e| e.variables())
            .and_then(|v| v.get("STAGE"))
            .map(String::as_str),
        Some("test")
    );
    let first_sha = config.code_sha256().unwrap().to_owned();
    let (_, details) = app.get(&format!("/apps/{name}")).await;
    assert_eq!(details["function"]["state"], "Active", "{details:#}");
    assert!(details["function"]["arn"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":function:{name}")));

    // The proxy invokes the function and maps its result as API Gateway does.
    moto.queue_lambda_results(&[
        r#"{"statusCode":201,"headers":{"x-from":"lambda"},"body":"made"}"#,
    ])
    .await;
    let response = app
        .client
        .get(format!("{}/", app.url))
        .header("host", format!("{name}.localhost"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-from"], "lambda");
    assert_eq!(response.text().await.unwrap(), "made");

    // Redeploying new code updates the function: a new code hash and a published version.
    let v2 = "exports.handler = async () => ({ statusCode: 200, body: 'two' });";
    let (status, _) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": crate::apps::zip_one("index.js", v2)}),
        )
        .await;
    assert_eq!(status, 200);
    let updated = lambda
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .unwrap();
    assert_ne!(updated.code_sha256().unwrap(), first_sha);
    let versions = lambda
        .list_versions_by_function()
        .function_name(&name)
        .send()
        .await
        .unwrap();
    assert!(
        versions.versions().len() >= 3,
        "$LATEST and two published versions"
    );

    // Deleted behind our back: sync marks the app ERROR, and the proxy stops serving it.
    lambda
        .delete_function()
        .function_name(&name)
        .send()
        .await
        .unwrap();
    let (status, synced) = app.post(&format!("/apps/{name}/sync"), &json!({})).await;
    assert_eq!(status, 200, "{synced:#}");
    assert_eq!(synced["status"], "ERROR");
    assert!(
        synced["lastError"].as_str().unwrap().contains("deleted"),
        "{synced:#}"
    );

    // Deploy again (recreates it), then remove: the function is gone.
    let (status, _) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": crate::apps::seed_archive()}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.post(&format!("/apps/{name}/remove"), &json!({})).await;
    assert_eq!(status, 200);
    let gone = lambda.get_function().function_name(&name).send().await;
    assert!(gone.is_err());
}

#[tokio::test]
async fn a_function_created_out_of_band_is_adopted() {
    let Some(moto) = moto().await else { return };
    let role = moto.role(&unique("lambda-role")).await;
    let sdk = moto.sdk().await;
    let name = unique("adopt");
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    lambda
        .create_function()
        .function_name(&name)
        .runtime(aws_sdk_lambda::types::Runtime::Python312)
        .handler("app.main")
        .role(&role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(
                    b"PK\x05\x06".to_vec(),
                ))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let app = lambda_app(&sdk, &role, |_, _| {}).await;
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": crate::apps::seed_archive()}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let config = lambda
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(config.runtime().map(|r| r.as_str()), Some("nodejs20.x"));
    assert_eq!(config.handler(), Some("index.handler"));
}

/// What moto cannot do (a function still `Pending`, a function error,
/// throttling, an update conflict), from a fake of Lambda's HTTP API that
/// the real SDK talks to.
mod fake_lambda {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use serde_json::json;

    #[derive(Default)]
    pub struct Script {
        pub exists: bool,
        /// GetFunction answers `Pending` this many times before `Active`.
        pub pending_polls: usize,
        pub get_function_calls: usize,
        /// Error type every write (create/update) answers with, if set.
        pub write_error: Option<(u16, &'static str)>,
        /// Versions published so far, and each alias's version.
        pub published: u32,
        pub aliases: std::collections::HashMap<String, String>,
    }

    fn config(name: &str, state: &str) -> serde_json::Value {
        json!({
            "FunctionName": name,
            "FunctionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            "Runtime": "nodejs20.x", "Handler": "index.handler", "Version": "$LATEST",
            "State": state, "LastUpdateStatus": "Successful", "CodeSha256": "abc"
        })
    }

    fn error(status: u16, kind: &str) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert("x-amzn-errortype", kind.parse().unwrap());
        (
            StatusCode::from_u16(status).unwrap(),
            headers,
            axum::Json(json!({"message": format!("fake {kind}")})),
        )
            .into_response()
    }

    type Shared = Arc<Mutex<Script>>;

    async fn get_configuration(State(s): State<Shared>, Path(name): Path<String>) -> Response {
        match s.lock().unwrap().exists {
            true => axum::Json(config(&name, "Active")).into_response(),
            false => error(404, "ResourceNotFoundException"),
        }
    }

    async fn get_function(State(s): State<Shared>, Path(name): Path<String>) -> Response {
        let mut script = s.lock().unwrap();
        script.get_function_calls += 1;
        let state = if script.get_function_calls <= script.pending_polls {
            "Pending"
        } else {
            "Active"
        };
        axum::Json(json!({"Configuration": config(&name, state)})).into_response()
    }

    async fn create(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
        let mut script = s.lock().unwrap();
        if let Some((status, kind)) = script.write_error {
            return error(status, kind);
        }
        script.exists = true;
        script.published += 1;
        let name = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["FunctionName"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut created = config(&name, "Pending");
        created["Version"] = json!(script.published.to_string());
        (StatusCode::CREATED, axum::Json(created)).into_response()
    }

    async fn update(State(s): State<Shared>, Path(name): Path<String>) -> Response {
        let mut script = s.lock().unwrap();
        match script.write_error {
            Some((status, kind)) => error(status, kind),
            None => {
                script.published += 1;
                let mut updated = config(&name, "Active");
                updated["Version"] = json!(script.published.to_string());
                axum::Json(updated).into_response()
            }
        }
    }

    async fn publish(State(s): State<Shared>, Path(name): Path<String>) -> Response {
        let mut script = s.lock().unwrap();
        script.published += 1;
        let mut published = config(&name, "Active");
        published["Version"] = json!(script.published.to_string());
        (StatusCode::CREATED, axum::Json(published)).into_response()
    }

    fn alias(name: &str, alias: &str, version: &str) -> Response {
        axum::Json(json!({
            "AliasArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:{alias}"),
            "Name": alias, "FunctionVersion": version
        }))
        .into_response()
    }

    async fn create_alias(
        State(s): State<Shared>,
        Path(name): Path<String>,
        body: axum::body::Bytes,
    ) -> Response {
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let (new, version) = (
            body["Name"].as_str().unwrap(),
            body["FunctionVersion"].as_str().unwrap(),
        );
        s.lock()
            .unwrap()
            .aliases
            .insert(new.to_owned(), version.to_owned());
        alias(&name, new, version)
    }

    async fn put_alias(
        State(s): State<Shared>,
        Path((name, new)): Path<(String, String)>,
        body: axum::body::Bytes,
    ) -> Response {
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let version = body["FunctionVersion"].as_str().unwrap();
        let mut script = s.lock().unwrap();
        match script.aliases.get_mut(&new) {
            Some(known) => {
                *known = version.to_owned();
                alias(&name, &new, version)
            }
            None => error(404, "ResourceNotFoundException"),
        }
    }

    async fn get_alias(
        State(s): State<Shared>,
        Path((name, new)): Path<(String, String)>,
    ) -> Response {
        match s.lock().unwrap().aliases.get(&new) {
            Some(version) => alias(&name, &new, version),
            None => error(404, "ResourceNotFoundException"),
        }
    }

    async fn invoke() -> Response {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-function-error", "Unhandled".parse().unwrap());
        (
            headers,
            axum::Json(json!({"errorType": "Error", "errorMessage": "boom"})),
        )
            .into_response()
    }

    /// Serves the fake on 127.0.0.1; returns its URL.
    pub async fn start(script: Shared) -> String {
        let app = axum::Router::new()
            .route("/2015-03-31/functions", post(create))
            .route("/2015-03-31/functions/{name}", get(get_function))
            .route(
                "/2015-03-31/functions/{name}/configuration",
                get(get_configuration).put(update),
            )
            .route(
                "/2015-03-31/functions/{name}/code",
                axum::routing::put(update),
            )
            .route("/2015-03-31/functions/{name}/invocations", post(invoke))
            .route("/2015-03-31/functions/{name}/aliases", post(create_alias))
            .route("/2015-03-31/functions/{name}/versions", post(publish))
            .route(
                "/2015-03-31/functions/{name}/aliases/{alias}",
                get(get_alias).put(put_alias),
            )
            .with_state(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}

async fn fake_lambda_app(script: Arc<std::sync::Mutex<fake_lambda::Script>>) -> TestApp {
    let url = fake_lambda::start(script).await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_lambda::config::Credentials::new(
            "testing", "testing", None, None, "fake",
        ))
        .load()
        .await;
    lambda_app(&sdk, "arn:aws:iam::123456789012:role/r", |_, _| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_states_errors_throttling_and_conflicts_from_a_fake() {
    let script = Arc::new(std::sync::Mutex::new(fake_lambda::Script {
        pending_polls: 1,
        ..Default::default()
    }));
    let app = fake_lambda_app(script.clone()).await;
    let deploy = json!({"name": "pending", "archive": crate::apps::seed_archive()});

    // Created Pending: the deploy answers once the waiter has seen Active.
    let (status, body) = app.post("/apps/deploy", &deploy).await;
    assert_eq!(status, 200, "{body:#}");
    assert!(
        script.lock().unwrap().get_function_calls >= 2,
        "the waiter polled"
    );

    // A function error (Unhandled) is API Gateway's 502.
    let response = app
        .client
        .get(format!("{}/", app.url))
        .header("host", "pending.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "Internal server error"})
    );

    // An update in progress elsewhere: 409, and the app keeps being served. Throttled: 503 with Retry-After.
    script.lock().unwrap().write_error = Some((409, "ResourceConflictException"));
    let (status, body) = app.post("/apps/deploy", &deploy).await;
    assert_eq!(status, 409, "{body:#}");
    let (_, after) = app.get("/apps/pending/status").await;
    assert_eq!(after["status"], "ACTIVE", "{after:#}");
    script.lock().unwrap().write_error = Some((429, "TooManyRequestsException"));
    let response = app
        .client
        .post(format!("{}/apps/deploy", app.url))
        .json(&deploy)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
}

/// The configuration path: the real binary, told by environment variables
/// alone to use DynamoDB and Lambda, reaches moto through `AWS_ENDPOINT_URL`.
#[tokio::test]
async fn the_binary_picks_aws_backends_from_the_environment() {
    let Some(moto) = moto().await else { return };
    let dir = tempfile::tempdir().unwrap();
    crate::common::write_job(
        dir.path(),
        "provision-silver",
        "echo \"REPLICAS=$replicas\" >> \"$JOB_OUTPUT\"",
    );
    let table = tier_table(
        moto,
        vec![HashMap::from([
            ("tier".to_owned(), s("silver")),
            ("jobName".to_owned(), s("provision-silver")),
            ("replicas".to_owned(), AttributeValue::N("2".into())),
        ])],
    )
    .await;
    let role = moto.role(&unique("lambda-role")).await;
    let data = dir.path().join("data").display().to_string();
    let jobs = dir.path().join("jobs").display().to_string();
    let aws_env = [
        ("AWS_ENDPOINT_URL", moto.url.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("ORCHESTRATOR_TIER_SOURCE", "dynamodb"),
        ("TIER_DETAILS_TABLE", table.as_str()),
        ("ORCHESTRATOR_FUNCTIONS_BACKEND", "aws"),
        ("ORCHESTRATOR_JOBS_DIR", jobs.as_str()),
    ];
    // Lambda without a role is refused at start, in one line.
    let refused = crate::common::Binary::start(&["--data-dir", &data], &aws_env)
        .err()
        .expect("no role: no start");
    assert!(refused.contains("functions.role_arn"), "{refused}");

    let mut env = aws_env.to_vec();
    env.push(("AWS_LAMBDA_ROLE_ARN", role.as_str()));
    let service = crate::common::Binary::start(&["--data-dir", &data], &env).unwrap();
    let log = service.output.lock().unwrap().clone();
    assert!(
        log.contains("functions=aws") && log.contains("tiers=dynamodb"),
        "{log}"
    );
    let client = reqwest::Client::new();
    let tenant = unique("silver-co");
    let posted = client
        .post(format!("{}/events/TENANT_PROVISIONING", service.url))
        .json(&envelope(
            &unique("evt"),
            "TENANT_PROVISIONING",
            provisioning(&tenant, "silver"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let view = crate::common::eventually(|| async {
        let view: Value = client
            .get(format!("{}/tenants/{tenant}", service.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (view["status"] == "ACTIVE").then_some(view)
    })
    .await;
    assert_eq!(view["jobOutput"]["REPLICAS"], "2", "{view:#}");

    let name = unique("env");
    let deployed = client
        .post(format!("{}/apps/deploy", service.url))
        .json(&json!({"name": name, "archive": crate::apps::seed_archive()}))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 200);
    let function = aws_sdk_lambda::Client::new(&moto.sdk().await)
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(function.role(), Some(role.as_str()));
}

#[tokio::test]
async fn a_function_deleted_behind_our_back_is_noticed_by_the_periodic_check() {
    let Some(moto) = moto().await else { return };
    let role = moto.role(&unique("lambda-role")).await;
    let sdk = moto.sdk().await;
    let app = lambda_app(&sdk, &role, |config, _| config.functions.reconcile_secs = 1).await;
    let name = unique("watched");
    let (status, _) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": crate::apps::seed_archive()}),
        )
        .await;
    assert_eq!(status, 200);
    aws_sdk_lambda::Client::new(&sdk)
        .delete_function()
        .function_name(&name)
        .send()
        .await
        .unwrap();
    let app_view = app
        .wait_for(&format!("/apps/{name}/status"), |v| v["status"] == "ERROR")
        .await;
    assert_eq!(app_view["status"], "ERROR");
    let (_, details) = app.get(&format!("/apps/{name}")).await;
    assert!(
        details["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("deleted outside"),
        "{details:#}"
    );
}

/// An S3 location on the local backend: downloaded with aws-sdk-s3 (from
/// moto's S3) under the archive's limits; an image is refused there.
#[tokio::test]
async fn the_local_backend_downloads_an_s3_location_and_refuses_images() {
    let Some(moto) = moto().await else { return };
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&moto.sdk().await)
            .force_path_style(true)
            .build(),
    );
    let bucket = format!("code-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let put = |key: &'static str, body: Vec<u8>| {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(body.into())
            .send()
    };
    put("apps/hello.zip", zip_bytes(&[("index.js", HELLO)]))
        .await
        .unwrap();
    put("apps/text.zip", b"plain text".to_vec()).await.unwrap();
    put("apps/huge.zip", vec![0u8; 50 * 1024 * 1024 + 1])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let service = crate::common::Binary::start(
        &["--data-dir", &data, "--listen", "127.0.0.1:0"],
        &[
            ("AWS_ENDPOINT_URL", moto.url.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    )
    .unwrap();
    let client = reqwest::Client::new();
    let deploy = |body: Value| {
        let request = client
            .post(format!("{}/apps/deploy", service.url))
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, view) = deploy(
        json!({"name": "from-s3", "s3": {"bucket": bucket, "key": "apps/hello.zip"},
                                       "environment": {"WHO": "s3"}}),
    )
    .await;
    assert_eq!(status, 200, "{view:#}");
    assert_eq!(
        body_of(&service.url, "from-s3.localhost").await,
        (200, "hello s3 128".into())
    );
    assert!(
        view.get("s3").is_none(),
        "the local backend keeps the zip itself: {view:#}"
    );

    let cases = [
        (json!({"bucket": bucket, "key": "apps/missing.zip"}), 400),
        (
            json!({"bucket": "no-such-bucket-here", "key": "a.zip"}),
            400,
        ),
        (json!({"bucket": bucket, "key": "apps/text.zip"}), 400),
        (json!({"bucket": bucket, "key": "apps/huge.zip"}), 413),
        (json!({"bucket": bucket}), 400),
        (json!({"bucket": bucket, "key": ""}), 400),
    ];
    for (s3, expected) in cases {
        let (status, body) = deploy(json!({"name": "from-s3", "s3": s3})).await;
        assert_eq!(status, expected, "{s3}: {body:#}");
        assert!(body["error"]["message"].is_string(), "{body:#}");
    }
    let (status, body) = deploy(
        json!({"name": "from-s3", "archive": crate::apps::zip_of(&[("index.js", HELLO)]),
                                       "s3": {"bucket": bucket, "key": "apps/hello.zip"}}),
    )
    .await;
    assert_eq!(status, 400, "one source only: {body:#}");
    let (status, body) = deploy(json!({"name": "pictured", "imageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1"})).await;
    assert_eq!(status, 400, "{body:#}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("aws"),
        "{body:#}"
    );
    let (_, view) = {
        let response = client
            .get(format!("{}/apps/from-s3", service.url))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(
        view["versions"].as_array().unwrap().len(),
        1,
        "nothing stored by the refusals"
    );
}

/// Versions and aliases map one to one onto Lambda's: each version is
/// published with an alias `v<N>`, `live` is a Lambda alias (with its
/// routing weights), a rollback moves it; an S3 location and an image are
/// handed to Lambda as they are.
#[tokio::test]
async fn aliases_weights_s3_locations_and_images_on_lambda() {
    let Some(moto) = moto().await else { return };
    let role = moto.role(&unique("lambda-role")).await;
    let sdk = moto.sdk().await;
    let app = lambda_app(&sdk, &role, |_, _| {}).await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let name = unique("aliased");
    let code = |body: &str| {
        crate::apps::zip_of(&[(
            "index.js",
            &format!("exports.handler = async () => ({{ statusCode: 200, body: '{body}' }});"),
        )])
    };
    let (status, first) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": code("one")}),
        )
        .await;
    assert_eq!(status, 200, "{first:#}");
    let (status, second) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": code("two"), "promote": false}),
        )
        .await;
    assert_eq!(status, 200, "{second:#}");
    let alias = |alias: &str| {
        let request = lambda.get_alias().function_name(&name).name(alias);
        async move { request.send().await.unwrap() }
    };
    let (v1, v2) = (alias("v1").await, alias("v2").await);
    let (v1, v2) = (
        v1.function_version().unwrap().to_owned(),
        v2.function_version().unwrap().to_owned(),
    );
    assert_ne!(v1, v2, "each version published");
    assert_eq!(alias("live").await.function_version(), Some(v1.as_str()));

    // A canary is Lambda's routing configuration of the alias.
    let response = app
        .client
        .put(format!("{}/apps/{name}/aliases/live", app.url))
        .json(&json!({"version": 1, "routing": {"version": 2, "weight": 0.2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let live = alias("live").await;
    let weights = live
        .routing_config()
        .and_then(|r| r.additional_version_weights())
        .cloned()
        .unwrap_or_default();
    assert_eq!(weights, HashMap::from([(v2.clone(), 0.2)]));

    // The proxy names the alias as the qualifier; the answer is the function's.
    moto.queue_lambda_results(&[r#"{"statusCode":200,"body":"via live"}"#])
        .await;
    let response = app
        .client
        .get(format!("{}/", app.url))
        .header("host", format!("{name}.localhost"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-app-version"));
    assert_eq!(response.text().await.unwrap(), "via live");

    // A rollback is an alias update: no upload.
    let before = lambda
        .list_versions_by_function()
        .function_name(&name)
        .send()
        .await
        .unwrap()
        .versions()
        .len();
    let (status, rolled) = app
        .post(&format!("/apps/{name}/rollback"), &json!({"version": 2}))
        .await;
    assert_eq!(status, 200, "{rolled:#}");
    let live = alias("live").await;
    assert_eq!(live.function_version(), Some(v2.as_str()));
    assert!(live
        .routing_config()
        .and_then(|r| r.additional_version_weights())
        .is_none_or(|w| w.is_empty()));
    let after = lambda
        .list_versions_by_function()
        .function_name(&name)
        .send()
        .await
        .unwrap()
        .versions()
        .len();
    assert_eq!(after, before, "nothing published by a rollback");
    // Another alias, then gone.
    let response = app
        .client
        .put(format!("{}/apps/{name}/aliases/beta", app.url))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(alias("beta").await.function_version(), Some(v1.as_str()));
    let response = app
        .client
        .delete(format!("{}/apps/{name}/aliases/beta", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(lambda
        .get_alias()
        .function_name(&name)
        .name("beta")
        .send()
        .await
        .is_err());

    // An S3 location goes to Lambda as S3Bucket/S3Key: the service does not download it.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let bucket = unique("lambda-code");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let zip = zip_bytes(&[("index.js", HELLO)]);
    s3.put_object()
        .bucket(&bucket)
        .key("hello.zip")
        .body(zip.clone().into())
        .send()
        .await
        .unwrap();
    let located = unique("located");
    let (status, view) = app
        .post(
            "/apps/deploy",
            &json!({"name": located, "s3": {"bucket": bucket, "key": "hello.zip"}}),
        )
        .await;
    assert_eq!(status, 200, "{view:#}");
    assert_eq!(view["s3"], json!({"bucket": bucket, "key": "hello.zip"}));
    let config = lambda
        .get_function_configuration()
        .function_name(&located)
        .send()
        .await
        .unwrap();
    assert_eq!(
        config.code_size(),
        zip.len() as i64,
        "Lambda read the object"
    );

    // An image: PackageType Image, no runtime or handler, its ImageConfig.
    let pictured = unique("pictured");
    let image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1";
    let (status, view) = app
        .post(
            "/apps/deploy",
            &json!({"name": pictured, "imageUri": image,
                    "imageConfig": {"command": ["app.handler"], "workingDirectory": "/srv"}}),
        )
        .await;
    assert_eq!(status, 200, "{view:#}");
    assert_eq!(view["imageUri"], image);
    let function = lambda
        .get_function()
        .function_name(&pictured)
        .send()
        .await
        .unwrap();
    let config = function.configuration().unwrap();
    assert_eq!(
        config.package_type(),
        Some(&aws_sdk_lambda::types::PackageType::Image)
    );
    assert_eq!(config.runtime(), None);
    assert_eq!(function.code().and_then(|c| c.image_uri()), Some(image));
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": pictured, "imageUri": image, "runtime": "nodejs20.x"}),
        )
        .await;
    assert_eq!(status, 400, "{body:#}");
}

/// A function deployed before aliases existed has no `live` alias (its
/// invocations run `$LATEST`): a deploy that does not promote first points
/// `live` at the code it serves, so the new code takes no traffic.
#[tokio::test]
async fn a_function_without_aliases_keeps_serving_its_code_through_an_unpromoted_deploy() {
    let Some(moto) = moto().await else { return };
    let role = moto.role(&unique("lambda-role")).await;
    let sdk = moto.sdk().await;
    let app = lambda_app(&sdk, &role, |_, _| {}).await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let name = unique("older");
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": crate::apps::seed_archive()}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let served_sha = lambda
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .unwrap()
        .code_sha256()
        .unwrap()
        .to_owned();
    // As an older release left it: no aliases at all.
    for alias in ["live", "v1"] {
        lambda
            .delete_alias()
            .function_name(&name)
            .name(alias)
            .send()
            .await
            .unwrap();
    }
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": zip_bytes_b64(), "promote": false}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let live = lambda
        .get_alias()
        .function_name(&name)
        .name("live")
        .send()
        .await
        .unwrap();
    let at_live = lambda
        .get_function_configuration()
        .function_name(&name)
        .qualifier(live.function_version().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        at_live.code_sha256(),
        Some(served_sha.as_str()),
        "live serves the code it served"
    );
    let latest = lambda
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .unwrap();
    assert_ne!(
        latest.code_sha256(),
        Some(served_sha.as_str()),
        "the new code is published"
    );
}

fn zip_bytes_b64() -> String {
    crate::apps::zip_of(&[("index.js", HELLO)])
}
