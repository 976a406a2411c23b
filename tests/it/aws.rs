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

fn unique(prefix: &str) -> String {
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
async fn project(moto: &Moto) -> String {
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
    let (status, _) = app
        .post(
            "/events/TENANT_PROVISIONING",
            &envelope(
                &unique("evt"),
                "TENANT_PROVISIONING",
                provisioning(&tenant, "basic"),
            ),
        )
        .await;
    assert_eq!(status, 200);
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

#[tokio::test]
async fn apps_deploy_to_lambda_invoke_update_reconcile_and_remove() {
    let Some(moto) = moto().await else { return };
    let role = moto.role(&unique("lambda-role")).await;
    let sdk = moto.sdk().await;
    let (backend_sdk, backend_role) = (sdk.clone(), role.clone());
    let app = TestApp::start_with(
        |_, _| {},
        move |builder| {
            builder.function_backend(Arc::new(AwsLambda::new(&backend_sdk, backend_role, None)))
        },
    )
    .await;
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
    let backend_sdk = sdk.clone();
    let backend_role = role.clone();
    let app = TestApp::start_with(
        |_, _| {},
        move |builder| {
            builder.function_backend(Arc::new(AwsLambda::new(&backend_sdk, backend_role, None)))
        },
    )
    .await;
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
