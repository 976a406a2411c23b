//! Lambda's Invoke API, called by boto3 (the Python SDK users already have)
//! with `endpoint_url` pointed at the service: results, qualifiers, DryRun,
//! function errors and Lambda's error shapes.

use serde_json::{json, Value};

use crate::apps::zip_of;
use crate::common::TestApp;

/// Whether boto3 is missing (said as [`crate::require`] says it): the test then stops.
fn without_boto3() -> bool {
    let missing = crate::moto::python_with_boto3().is_none();
    if missing {
        crate::require::missing(
            "no Python with boto3 (the moto environment: set ORCHESTRATOR_TEST_MOTO)",
        );
    }
    missing
}

/// Runs `script` with boto3's Lambda client on the service as `lam`; its
/// stdout, parsed as JSON (`null` where boto3 is missing).
fn boto3(url: &str, script: &str) -> Value {
    let program = format!(
        "import base64, json, boto3, botocore\n\
         lam = boto3.client('lambda', endpoint_url='{url}', region_name='us-east-1',\n\
             aws_access_key_id='testing', aws_secret_access_key='testing',\n\
             config=botocore.config.Config(retries={{'max_attempts': 1}}))\n\
         {script}\n"
    );
    crate::moto::python_json(&program).unwrap_or(Value::Null)
}

/// [`boto3`] off the runtime's threads; `None` where it was skipped.
async fn boto3_answers(url: &str, script: &str) -> Option<Value> {
    let (url, script) = (url.to_owned(), script.to_owned());
    let answers = tokio::task::spawn_blocking(move || boto3(&url, &script))
        .await
        .unwrap();
    (!answers.is_null()).then_some(answers)
}

const ECHO: &str = r#"exports.handler = async (event, context) => {
  if (event.say) { console.log('echo says ' + event.say); }
  if (event.fail) { throw new TypeError('asked to fail'); }
  return { got: event, version: process.env.AWS_LAMBDA_FUNCTION_VERSION, tag: process.env.TAG };
};"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_invokes_functions_through_the_invoke_api() {
    if without_boto3() {
        return;
    }
    let app = TestApp::start(|_, _| {}).await;
    for (tag, promote) in [("one", true), ("two", false)] {
        let (status, body) = app
            .post(
                "/apps/deploy",
                &json!({"name": "echo", "archive": zip_of(&[("index.js", ECHO)]),
                        "environment": {"TAG": tag}, "promote": promote}),
            )
            .await;
        assert_eq!(status, 200, "{body:#}");
    }
    let Some(answers) = boto3_answers(
        &app.url,
        r#"
def call(**kw):
    try:
        r = lam.invoke(FunctionName='echo', **kw)
        log = r.get('LogResult')
        return {'status': r['StatusCode'], 'version': r.get('ExecutedVersion'),
                'error': r.get('FunctionError'), 'payload': json.loads(r['Payload'].read() or b'null'),
                'log': base64.b64decode(log).decode() if log is not None else None}
    except botocore.exceptions.ClientError as e:
        return {'code': e.response['Error']['Code'], 'status': e.response['ResponseMetadata']['HTTPStatusCode']}
out = {
  'latest': call(Payload=json.dumps({'n': 1})),
  'live': call(Payload=json.dumps({'n': 2}), Qualifier='live'),
  'v1': call(Payload=json.dumps({'n': 3}), Qualifier='1'),
  'failed': call(Payload=json.dumps({'fail': True})),
  'dry': call(InvocationType='DryRun'),
  'missing': call(Qualifier='9'),
  'unknown_alias': call(Qualifier='nope'),
  'not_json': call(Payload=b'not json'),
  'tail': call(Payload=json.dumps({'say': 'hello-tail'}), LogType='Tail'),
  'failed_tail': call(Payload=json.dumps({'fail': True, 'say': 'before-failing'}), LogType='Tail'),
  'big_tail': call(Payload=json.dumps({'say': 'x' * 6000}), LogType='Tail'),
}
try:
    lam.invoke(FunctionName='nobody', Payload=b'{}')
except lam.exceptions.ResourceNotFoundException as e:
    out['nobody'] = e.response['Error']['Code']
print(json.dumps(out))
"#,
    )
    .await
    else {
        return;
    };
    // Unqualified is $LATEST: the newest version, even one not promoted.
    assert_eq!(answers["latest"]["status"], 200, "{answers:#}");
    assert_eq!(answers["latest"]["version"], "2");
    assert_eq!(
        answers["latest"]["payload"],
        json!({"got": {"n": 1}, "version": "2", "tag": "two"})
    );
    assert_eq!(answers["live"]["version"], "1");
    assert_eq!(answers["live"]["payload"]["tag"], "one");
    assert_eq!(answers["v1"]["payload"]["got"], json!({"n": 3}));
    // A function error: 200, FunctionError, and the error document.
    assert_eq!(answers["failed"]["status"], 200);
    assert_eq!(answers["failed"]["error"], "Unhandled");
    assert_eq!(
        answers["failed"]["payload"],
        json!({"errorType": "TypeError", "errorMessage": "asked to fail"})
    );
    assert_eq!(answers["dry"]["status"], 204);
    assert_eq!(answers["missing"]["code"], "ResourceNotFoundException");
    assert_eq!(
        answers["unknown_alias"]["code"],
        "ResourceNotFoundException"
    );
    assert_eq!(
        answers["not_json"]["code"],
        "InvalidRequestContentException"
    );
    assert_eq!(answers["nobody"], "ResourceNotFoundException");

    // `LogType='Tail'`: the invocation's own log, START to REPORT.
    assert_eq!(answers["latest"]["log"], Value::Null);
    let log = answers["tail"]["log"].as_str().unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines[0].starts_with("START RequestId: "), "{log}");
    let request = lines[0].split_whitespace().nth(2).unwrap();
    assert!(log.contains("echo says hello-tail"), "{log}");
    assert!(log.contains(&format!("END RequestId: {request}")), "{log}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("REPORT RequestId: {request}")),
        "{log}"
    );
    // Only this invocation's lines.
    assert_eq!(log.matches("START RequestId").count(), 1, "{log}");
    let failed = answers["failed_tail"]["log"].as_str().unwrap();
    assert_eq!(answers["failed_tail"]["error"], "Unhandled");
    assert!(
        failed.contains("echo says before-failing") && failed.contains("asked to fail"),
        "{failed}"
    );
    // The last 4 KB: the end of a longer log.
    let big = answers["big_tail"]["log"].as_str().unwrap();
    assert_eq!(big.len(), 4096, "{}", big.len());
    assert!(big.contains("REPORT RequestId"));
}

/// The AWS CLI of the moto environment.
fn aws_cli() -> Option<std::path::PathBuf> {
    let moto = std::env::var("ORCHESTRATOR_TEST_MOTO").ok()?;
    let aws = std::path::Path::new(&moto).parent()?.join("aws");
    aws.exists().then_some(aws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_invokes_a_function_with_endpoint_url() {
    let Some(aws) = aws_cli() else {
        crate::require::missing("no AWS CLI (the moto environment: .ci/run installs awscli)");
        return;
    };
    let app = TestApp::start(|_, _| {}).await;
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": "cli", "archive": zip_of(&[("index.js", ECHO)]), "environment": {"TAG": "cli"}}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let run = |args: Vec<String>| {
        let output = std::process::Command::new(&aws)
            .args([
                "lambda",
                "invoke",
                "--endpoint-url",
                &app.url,
                "--region",
                "us-east-1",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let out_path = out.display().to_string();
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        run(vec![
            "--function-name".into(),
            "cli".into(),
            "--payload".into(),
            r#"{"from":"cli"}"#.into(),
            out_path.clone(),
        ])
    });
    assert!(ok, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["StatusCode"], 200, "{stdout}");
    assert_eq!(answer["ExecutedVersion"], "1");
    let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        written,
        json!({"got": {"from": "cli"}, "version": "1", "tag": "cli"})
    );

    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        run(vec![
            "--function-name".into(),
            "cli".into(),
            "--invocation-type".into(),
            "DryRun".into(),
            out_path.clone(),
        ])
    });
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["StatusCode"],
        204
    );

    let (ok, _, stderr) = tokio::task::block_in_place(|| {
        run(vec![
            "--function-name".into(),
            "nobody".into(),
            out_path.clone(),
        ])
    });
    assert!(!ok);
    assert!(stderr.contains("ResourceNotFoundException"), "{stderr}");

    // `--log-type Tail`: the log comes back base64-encoded in LogResult.
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        run(vec![
            "--function-name".into(),
            "cli".into(),
            "--log-type".into(),
            "Tail".into(),
            "--payload".into(),
            r#"{"say":"from-the-cli"}"#.into(),
            out_path.clone(),
        ])
    });
    assert!(ok, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    use base64::Engine;
    let log = base64::engine::general_purpose::STANDARD
        .decode(answer["LogResult"].as_str().unwrap())
        .unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(log.starts_with("START RequestId: "), "{log}");
    assert!(
        log.contains("echo says from-the-cli") && log.contains("REPORT RequestId: "),
        "{log}"
    );

    // `--invocation-type Event`: 202 at once, run later (its line reaches the app's log).
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        run(vec![
            "--function-name".into(),
            "cli".into(),
            "--invocation-type".into(),
            "Event".into(),
            "--payload".into(),
            r#"{"say":"queued-by-the-cli"}"#.into(),
            out_path.clone(),
        ])
    });
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["StatusCode"],
        202
    );
    app.wait_for("/apps/cli/logs", |logs| {
        logs["events"].as_array().is_some_and(|lines| {
            lines.iter().any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("echo says queued-by-the-cli"))
            })
        })
    })
    .await;
}

const FLAKY: &str = r#"let runs = 0;
exports.handler = async (event) => {
  runs += 1;
  console.log(`run ${runs} of ${event.job}`);
  if (runs < 3) { throw new Error('not yet'); }
  return 'done';
};"#;

/// `Event`: `202` at once; the invocation runs later from the store's queue,
/// and a failed run is retried (twice, as Lambda does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_invocation_is_queued_and_retried_until_it_succeeds() {
    if without_boto3() {
        return;
    }
    let app = TestApp::start(|c, _| c.functions.async_retry_delay_ms = 100).await;
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": "flaky", "archive": zip_of(&[("index.js", FLAKY)])}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let Some(answers) = boto3_answers(
        &app.url,
        r#"
r = lam.invoke(FunctionName='flaky', InvocationType='Event', Payload=json.dumps({'job': 'nightly'}))
out = {'status': r['StatusCode']}
try:
    lam.invoke(FunctionName='nobody', InvocationType='Event', Payload=b'{}')
except lam.exceptions.ResourceNotFoundException as e:
    out['nobody'] = e.response['Error']['Code']
print(json.dumps(out))
"#,
    )
    .await
    else {
        return;
    };
    assert_eq!(
        answers,
        json!({"status": 202, "nobody": "ResourceNotFoundException"})
    );
    // Two failed runs, then the one that succeeds; the function's own log says so.
    let runs = crate::common::eventually(|| async {
        let (_, logs) = app.get("/apps/flaky/logs").await;
        let runs: Vec<String> = logs["events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["message"].as_str())
            .filter(|m| m.contains("of nightly"))
            .map(|m| {
                m.trim()
                    .rsplit_once("\t")
                    .map_or(m, |(_, t)| t)
                    .trim()
                    .to_owned()
            })
            .collect();
        (runs.len() >= 3).then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(runs[2].ends_with("run 3 of nightly"), "{runs:?}");
}

/// With tokens configured, an AWS client's SigV4 signature is checked
/// against `auth.lambda_access_keys`: the right key passes (boto3 and the
/// AWS CLI), a wrong secret, an unknown key or no signature are Lambda's 403s;
/// a bearer token (the orchestrator CLI) passes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_are_checked_against_the_configured_keys() {
    let Some(aws) = aws_cli() else {
        crate::require::missing("no AWS CLI (the moto environment: .ci/run installs awscli)");
        return;
    };
    let app = TestApp::start(|c, _| {
        c.auth.api_tokens = vec![orchestrator::config::Secret("admin".into())];
        c.auth.lambda_access_keys = vec![orchestrator::config::LambdaAccessKey {
            access_key_id: "AKIDORCHESTRATOR".into(),
            secret_access_key: orchestrator::config::Secret("local/secret+KEY".into()),
        }];
    })
    .await;
    let deployed = app
        .client
        .post(format!("{}/apps/deploy", app.url))
        .bearer_auth("admin")
        .json(&json!({"name": "signed", "archive": zip_of(&[("index.js", ECHO)]), "environment": {"TAG": "s"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 200);
    let invocations = format!("{}/2015-03-31/functions/signed/invocations", app.url);

    // Neither signed nor a bearer token: Lambda's 403.
    let bare = app
        .client
        .post(&invocations)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 403);
    assert_eq!(
        bare.headers()["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );
    // A bearer token: what `orchestrator invoke --token` sends.
    let bearer = app
        .client
        .post(&invocations)
        .bearer_auth("admin")
        .body("{\"n\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    let Some(answers) = boto3_answers(
        &app.url,
        r#"
def client(key, secret):
    return boto3.client('lambda', endpoint_url=lam.meta.endpoint_url, region_name='eu-west-1',
        aws_access_key_id=key, aws_secret_access_key=secret,
        config=botocore.config.Config(retries={'max_attempts': 1}))
def call(c, **kw):
    try:
        r = c.invoke(FunctionName='signed', **kw)
        return {'status': r['StatusCode'], 'payload': json.loads(r['Payload'].read())}
    except botocore.exceptions.ClientError as e:
        return {'code': e.response['Error']['Code'], 'status': e.response['ResponseMetadata']['HTTPStatusCode']}
good = client('AKIDORCHESTRATOR', 'local/secret+KEY')
print(json.dumps({
  'good': call(good, Payload=json.dumps({'signed': True})),
  'qualified': call(good, Payload=b'{}', Qualifier='live', LogType='Tail'),
  'wrong_secret': call(client('AKIDORCHESTRATOR', 'not-it'), Payload=b'{}'),
  'unknown_key': call(client('AKIDSOMEONEELSE', 'local/secret+KEY'), Payload=b'{}'),
}))
"#,
    )
    .await
    else {
        return;
    };
    assert_eq!(answers["good"]["status"], 200, "{answers:#}");
    assert_eq!(answers["good"]["payload"]["got"], json!({"signed": true}));
    assert_eq!(answers["qualified"]["status"], 200, "{answers:#}");
    assert_eq!(
        answers["wrong_secret"],
        json!({"code": "InvalidSignatureException", "status": 403})
    );
    assert_eq!(
        answers["unknown_key"],
        json!({"code": "UnrecognizedClientException", "status": 403})
    );

    // The AWS CLI, signing with the configured key.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let output = tokio::task::block_in_place(|| {
        std::process::Command::new(&aws)
            .args([
                "lambda",
                "invoke",
                "--endpoint-url",
                &app.url,
                "--region",
                "us-east-1",
            ])
            .args([
                "--function-name",
                "signed",
                "--payload",
                r#"{"via":"aws-cli"}"#,
            ])
            .arg(&out)
            .env("AWS_ACCESS_KEY_ID", "AKIDORCHESTRATOR")
            .env("AWS_SECRET_ACCESS_KEY", "local/secret+KEY")
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .unwrap()
    });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written["got"], json!({"via": "aws-cli"}));
}

/// A function on the AWS backend: the Invoke API hands the call to Lambda
/// (moto here) with the qualifier, and answers with what Lambda returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoke_api_passes_through_to_lambda() {
    let Some(moto) = crate::moto::moto().await else {
        return;
    };
    let role = moto.role(&crate::aws::unique("invoke-role")).await;
    let sdk = moto.sdk().await;
    let app = crate::aws::lambda_app(&sdk, &role, |_, _| {}).await;
    let name = crate::aws::unique("through");
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": name, "archive": zip_of(&[("index.js", ECHO)])}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    moto.queue_lambda_results(&[r#"{"from":"lambda","n":1}"#, r#"{"from":"lambda","n":2}"#])
        .await;
    let script = format!(
        r#"
out = {{}}
for key, kw in [('plain', {{}}), ('live', {{'Qualifier': 'live'}})]:
    r = lam.invoke(FunctionName='{name}', Payload=json.dumps({{'to': key}}), **kw)
    out[key] = {{'status': r['StatusCode'], 'version': r.get('ExecutedVersion'), 'payload': json.loads(r['Payload'].read())}}
try:
    lam.invoke(FunctionName='{name}', Qualifier='nope', Payload=b'{{}}')
except botocore.exceptions.ClientError as e:
    out['unknown_alias'] = e.response['Error']['Code']
print(json.dumps(out))
"#
    );
    let Some(answers) = boto3_answers(&app.url, &script).await else {
        return;
    };
    assert_eq!(answers["plain"]["status"], 200, "{answers:#}");
    assert_eq!(
        answers["plain"]["payload"],
        json!({"from": "lambda", "n": 1})
    );
    assert_eq!(
        answers["live"]["payload"],
        json!({"from": "lambda", "n": 2})
    );
    assert_eq!(answers["live"]["version"], "1");
    assert_eq!(answers["unknown_alias"], "ResourceNotFoundException");
}
