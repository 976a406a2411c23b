//! The local function runtime with real Node.js and Python workers, driven
//! through the `FunctionBackend` seam and the proxy mapping.

use std::path::Path;
use std::time::Duration;

use crate::common::eventually;
use orchestrator::apps::{validate, AppName, DeployRequest, FunctionConfig};
use orchestrator::functions::local::{LocalFunctions, LocalOptions, Scaling};
use orchestrator::functions::{Deployment, FunctionBackend, FunctionError};
use orchestrator::proxy::{event_v1, map_result, IncomingRequest, PayloadFormat};
use serde_json::{json, Value};

fn config(extra: Value) -> FunctionConfig {
    let mut request = json!({"name": "x", "archive": ""});
    request
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let request: DeployRequest = serde_json::from_value(request).unwrap();
    validate(&request, None).unwrap().1
}

/// Sandboxed workers where the machine allows it (as the service runs them).
fn local(dir: &Path, idle: Duration) -> std::sync::Arc<LocalFunctions> {
    backend(dir, idle, cap(4), crate::common::sandbox())
}

/// A worker per CPU up to `max_workers`, started as soon as the queue needs them.
fn cap(max_workers: usize) -> Scaling {
    Scaling {
        max_workers,
        eager_workers: max_workers,
        delay: Duration::from_millis(20),
    }
}

/// As if on a machine with a CPU per worker: workers start as soon as the
/// queue needs them (the tests of the CPU rule set their own `Scaling`).
fn local_with_cap(
    dir: &Path,
    idle: Duration,
    max_workers: usize,
) -> std::sync::Arc<LocalFunctions> {
    local_with(
        dir,
        idle,
        Scaling {
            max_workers,
            eager_workers: max_workers,
            delay: Duration::from_millis(20),
        },
    )
}

/// Unconfined workers, for tests that meet their handlers through files in
/// the test's directory or tell workers apart by process id (in the sandbox
/// neither is visible: each worker has its own `/tmp` and is process 2).
fn local_with(dir: &Path, idle: Duration, scaling: Scaling) -> std::sync::Arc<LocalFunctions> {
    backend(dir, idle, scaling, None)
}

fn local_unconfined(dir: &Path, idle: Duration) -> std::sync::Arc<LocalFunctions> {
    local_with(dir, idle, cap(4))
}

fn backend(
    dir: &Path,
    idle: Duration,
    scaling: Scaling,
    sandbox: Option<std::sync::Arc<orchestrator::functions::local::sandbox::Sandbox>>,
) -> std::sync::Arc<LocalFunctions> {
    let confined = sandbox.is_some();
    LocalFunctions::start(LocalOptions {
        metrics: Default::default(),
        logs: Default::default(),
        runtimes_dir: dir.join("runtimes"),
        scaling,
        idle_timeout: idle,
        batch_scheduling: true,
        region: "us-east-1".into(),
        sandbox,
        max_queue: 100,
        max_queue_wait: Duration::from_secs(10),
        runtimes: crate::common::runtimes(confined),
    })
    .unwrap()
}

async fn deploy(
    backend: &LocalFunctions,
    dir: &Path,
    app: &str,
    files: &[(&str, &str)],
    config: &FunctionConfig,
) -> AppName {
    let code = dir.join(app);
    for (name, content) in files {
        let path = code.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let app = AppName::parse(app).unwrap();
    backend
        .deploy(Deployment {
            app: &app,
            version: 1,
            zip: &[],
            code_dir: &code,
            config,
        })
        .await
        .unwrap();
    app
}

fn get(path: &str, query: &str) -> Vec<u8> {
    let request = IncomingRequest {
        method: "GET".into(),
        path: path.into(),
        raw_query: query.into(),
        headers: vec![("host".into(), "seed.localhost".into())],
        body: Vec::new(),
        source_ip: "127.0.0.1".into(),
        domain_name: "seed.localhost".into(),
        domain_prefix: "seed".into(),
        request_id: "r".into(),
        time_epoch_ms: 0,
    };
    event_v1(&request)
}

#[tokio::test]
async fn the_seed_lambda_runs_on_node_and_stays_warm() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    let seed = include_str!("../fixtures/seed-app.js");
    let app = deploy(
        &backend,
        dir.path(),
        "seed",
        &[("index.js", seed)],
        &config(json!({})),
    )
    .await;
    let result = backend.invoke(&app, get("/", "")).await.unwrap();
    let response = map_result(PayloadFormat::V1, &result).unwrap();
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, b"success".as_slice())
    );
    let result = backend
        .invoke(&app, get("/testProxyingWithQueryParams", "text=hi"))
        .await
        .unwrap();
    assert_eq!(map_result(PayloadFormat::V1, &result).unwrap().body, b"hi");
    let result = backend.invoke(&app, get("/notFound", "")).await.unwrap();
    assert_eq!(map_result(PayloadFormat::V1, &result).unwrap().status, 400);
    assert_eq!(
        backend.idle_workers(&app),
        1,
        "sequential requests reuse one warm worker"
    );

    // A client calling again the moment it has its answer (before the worker
    // has asked for its next event) still finds the same worker.
    let code = "exports.handler = async () => ({ statusCode: 200, body: String(process.pid) });";
    let pid = deploy(
        &backend,
        dir.path(),
        "pid",
        &[("index.js", code)],
        &config(json!({})),
    )
    .await;
    let mut pids = std::collections::HashSet::new();
    for _ in 0..200 {
        let result = backend.invoke(&pid, b"{}".to_vec()).await.unwrap();
        pids.insert(map_result(PayloadFormat::V1, &result).unwrap().body);
    }
    assert_eq!(pids.len(), 1, "one worker served every call");
    // Every call was answered and nothing is queued: no later start can happen.
    assert_eq!(backend.workers_started(&pid), 1, "and no other was started");
    assert_eq!(backend.idle_workers(&pid), 1);
}

#[tokio::test]
async fn node_handlers_in_every_style() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    let cases: [(&str, &str, &str); 3] = [
        ("esm", "app.mjs", "export const handler = async () => ({ statusCode: 200, body: 'esm' });"),
        ("callback", "index.js", "exports.handler = (event, context, callback) => { setTimeout(() => callback(null, { statusCode: 200, body: String(context.getRemainingTimeInMillis() > 1000) }), 10); };"),
        ("nested", "src/api/main.js", "module.exports.handler = async (e, ctx) => ({ statusCode: 200, body: ctx.functionName + ':' + process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE });"),
    ];
    for (name, file, code) in cases {
        let handler = match name {
            "esm" => "app.handler",
            "nested" => "src/api/main.handler",
            _ => "index.handler",
        };
        let app = deploy(
            &backend,
            dir.path(),
            name,
            &[(file, code)],
            &config(json!({"handler": handler})),
        )
        .await;
        let result = backend.invoke(&app, b"{}".to_vec()).await.unwrap();
        let body: Value = serde_json::from_slice(&result).unwrap();
        let expected = match name {
            "esm" => "esm",
            "callback" => "true",
            _ => "nested:128",
        };
        assert_eq!(body["body"], expected, "{name}");
    }
}

/// The runtime's own connection (descriptors 3 and 4 at exec) does not
/// leak into the processes a handler starts: a child that looks for them
/// finds neither, in Node (whose spawn does not pass them on) and in Python
/// (whose client makes them close-on-exec; `subprocess` is told to keep
/// what is inheritable).
#[tokio::test]
async fn a_handlers_child_processes_do_not_get_the_runtime_connection() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    let probe =
        r#"for fd in 3 4; do [ -e /proc/self/fd/$fd ] && printf "fd$fd "; done; printf listed"#;
    let node = format!(
        "const {{ execFileSync }} = require('node:child_process');\n\
         exports.handler = async () => ({{ statusCode: 200, body: execFileSync('sh', ['-c', '{probe}']).toString() }});"
    );
    let python = format!(
        "import subprocess\n\
         def handler(event, context):\n    \
             out = subprocess.run(['sh', '-c', '{probe}'], capture_output=True, close_fds=False)\n    \
             return {{'statusCode': 200, 'body': out.stdout.decode()}}\n"
    );
    let cases = [
        ("node-child", "index.js", node, json!({})),
        (
            "python-child",
            "index.py",
            python,
            json!({"runtime": python_runtime()}),
        ),
    ];
    for (name, file, code, settings) in cases {
        let app = deploy(
            &backend,
            dir.path(),
            name,
            &[(file, &code)],
            &config(settings),
        )
        .await;
        // Twice: the first and a warm invocation.
        for _ in 0..2 {
            let result = backend.invoke(&app, b"{}".to_vec()).await.unwrap();
            let body: Value = serde_json::from_slice(&result).unwrap();
            assert_eq!(body["body"], "listed", "{name}: {body}");
        }
    }
}

#[tokio::test]
async fn a_node_worker_is_frozen_between_invocations_as_on_lambda() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    // A timer ticks every 10 ms while the event loop turns; the handler
    // reports how often it has ticked, and waits 100 ms in the first call.
    let code = "let ticks = 0; setInterval(() => { ticks++; }, 10);
        exports.handler = async (e) => {
          if (e.wait) await new Promise(r => setTimeout(r, 100));
          return { statusCode: 200, body: String(ticks) };
        };";
    let app = deploy(
        &backend,
        dir.path(),
        "frozen",
        &[("index.js", code)],
        &config(json!({})),
    )
    .await;
    let ticks = |result: Vec<u8>| -> u64 {
        let body = map_result(PayloadFormat::V1, &result).unwrap().body;
        String::from_utf8(body).unwrap().parse().unwrap()
    };
    let during = ticks(
        backend
            .invoke(&app, br#"{"wait":true}"#.to_vec())
            .await
            .unwrap(),
    );
    assert!(
        during >= 5,
        "the event loop turns during an invocation ({during} ticks)"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = ticks(backend.invoke(&app, b"{}".to_vec()).await.unwrap());
    assert!(
        after <= during + 1,
        "nothing ran in the 500 ms between invocations ({during} ticks, then {after})"
    );
    assert_eq!(backend.idle_workers(&app), 1, "one warm worker served both");
}

#[tokio::test]
async fn a_node_worker_runs_as_batch_work_on_its_own_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    // The scheduling policy is the 41st field of /proc/self/stat (3 is
    // SCHED_BATCH); fds 3 and 4 are the Runtime API's pipes.
    let code = "const fs = require('node:fs');
        exports.handler = async () => {
          const stat = fs.readFileSync('/proc/self/stat', 'utf8');
          const policy = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
          const fifos = [3, 4].map((fd) => fs.fstatSync(fd).isFIFO());
          return { policy, fifos, advertised: process.env.ORCHESTRATOR_RUNTIME_API_FDS ?? null };
        };";
    let app = deploy(
        &backend,
        dir.path(),
        "batch",
        &[("index.js", code)],
        &config(json!({})),
    )
    .await;
    let result = backend.invoke(&app, b"{}".to_vec()).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&result).unwrap(),
        json!({"policy": 3, "fifos": [true, true], "advertised": null}),
        "SCHED_BATCH, pipes on fds 3 and 4, and the variable kept from the handler"
    );
}

#[tokio::test]
async fn python_handlers_run() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    let code = "import os\ndef handler(event, context):\n    return {'statusCode': 200, 'body': event['name'] + ':' + context.function_name + ':' + str(context.get_remaining_time_in_millis() > 0)}\n";
    let app = deploy(
        &backend,
        dir.path(),
        "py",
        &[("app.py", code)],
        &config(json!({"runtime": python_runtime(), "handler": "app.handler"})),
    )
    .await;
    let result = backend
        .invoke(&app, br#"{"name":"ada"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&result).unwrap()["body"],
        "ada:py:True"
    );
}

/// A result over Lambda's 6 MB fails its invocation, is dropped unread, and
/// the worker that posted it goes on serving, warm (Node and Python, each on
/// its pipes).
#[tokio::test]
async fn a_result_over_the_limit_fails_and_the_worker_stays_warm() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    let node = "exports.handler = async (e) => e.huge ? 'x'.repeat(7 * 1024 * 1024) : { pid: process.pid, got: e.n };";
    let python = "import os\ndef handler(event, context):\n    if event.get('huge'):\n        return 'x' * (7 * 1024 * 1024)\n    return {'pid': os.getpid(), 'got': event.get('n')}\n";
    let apps = [
        deploy(
            &backend,
            dir.path(),
            "big-node",
            &[("index.js", node)],
            &config(json!({})),
        )
        .await,
        deploy(
            &backend,
            dir.path(),
            "big-py",
            &[("app.py", python)],
            &config(json!({"runtime": python_runtime(), "handler": "app.handler"})),
        )
        .await,
    ];
    for app in &apps {
        let first = backend.invoke(app, br#"{"n":1}"#.to_vec()).await.unwrap();
        let first: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(first["got"], 1, "{app}");
        let huge = backend.invoke(app, br#"{"huge":true}"#.to_vec()).await;
        assert!(
            matches!(huge, Err(FunctionError::PayloadTooLarge(_))),
            "{app}: {huge:?}"
        );
        let after = backend.invoke(app, br#"{"n":2}"#.to_vec()).await.unwrap();
        let after: Value = serde_json::from_slice(&after).unwrap();
        assert_eq!(after["got"], 2, "{app}");
        assert_eq!(after["pid"], first["pid"], "{app}: the same warm worker");
        assert_eq!(backend.idle_workers(app), 1, "{app}");
    }
}

#[tokio::test]
async fn errors_crashes_init_failures_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    let code = r#"exports.handler = async (e) => {
        if (e.mode === 'throw') throw new TypeError('boom');
        if (e.mode === 'exit') process.exit(3);
        if (e.mode === 'hang') await new Promise(() => setTimeout(() => {}, 60000));
        return { statusCode: 200, body: 'ok' };
    };"#;
    let app = deploy(
        &backend,
        dir.path(),
        "faulty",
        &[("index.js", code)],
        &config(json!({"timeout": 1})),
    )
    .await;
    let err = backend
        .invoke(&app, br#"{"mode":"throw"}"#.to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FunctionError::Failed(m) if m.contains("TypeError: boom")),
        "{err:?}"
    );
    assert!(
        backend.invoke(&app, b"{}".to_vec()).await.is_ok(),
        "a handled error keeps the worker"
    );
    let err = backend
        .invoke(&app, br#"{"mode":"exit"}"#.to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, FunctionError::Failed(_)), "{err:?}");
    assert!(
        backend.invoke(&app, b"{}".to_vec()).await.is_ok(),
        "the next request gets a fresh worker"
    );
    let err = backend
        .invoke(&app, br#"{"mode":"hang"}"#.to_vec())
        .await
        .unwrap_err();
    assert_eq!(err, FunctionError::Timeout(1));
    assert!(
        backend.invoke(&app, b"{}".to_vec()).await.is_ok(),
        "the timed-out worker was replaced"
    );

    let broken = deploy(
        &backend,
        dir.path(),
        "broken",
        &[("index.js", "throw new Error('init failed');")],
        &config(json!({})),
    )
    .await;
    let err = backend.invoke(&broken, b"{}".to_vec()).await.unwrap_err();
    assert!(
        matches!(&err, FunctionError::Failed(m) if m.contains("init error") && m.contains("init failed")),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrency_scales_out_and_idle_workers_stop() {
    let dir = tempfile::tempdir().unwrap();
    // As if on one CPU: the workers beyond the first wait for the scale-out
    // delay, and start because these invocations wait (as I/O would).
    let scaling = Scaling {
        max_workers: 4,
        eager_workers: 1,
        delay: Duration::from_millis(20),
    };
    let backend = local_with(dir.path(), Duration::from_millis(600), scaling);
    // Each invocation waits until four are running at once (or 20 s pass),
    // so four answers from four workers whatever the workers' start takes.
    let code = r#"const fs = require('node:fs');
        exports.handler = async (e) => {
            fs.writeFileSync(e.dir + '/' + process.pid, '');
            for (let i = 0; i < 2000 && fs.readdirSync(e.dir).length < 4; i++) {
                await new Promise(r => setTimeout(r, 10));
            }
            return { statusCode: 200, body: String(process.pid) };
        };"#;
    let app = deploy(
        &backend,
        dir.path(),
        "busy",
        &[("index.js", code)],
        // The first invocation waits for the other workers to start.
        &config(json!({"timeout": 30})),
    )
    .await;
    let barrier = dir.path().join("barrier");
    std::fs::create_dir(&barrier).unwrap();
    let event = serde_json::to_vec(&json!({"dir": barrier})).unwrap();
    let calls = (0..4).map(|_| backend.invoke(&app, event.clone()));
    let pids: std::collections::HashSet<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.unwrap()).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(pids.len(), 4, "four concurrent requests, four workers");
    assert_eq!(backend.idle_workers(&app), 4);
    crate::common::eventually(|| async { (backend.idle_workers(&app) == 0).then_some(()) }).await;
}

#[tokio::test]
async fn beyond_one_worker_per_cpu_short_invocations_share_the_warm_workers() {
    let dir = tempfile::tempdir().unwrap();
    // Two "CPUs" and a cap of four. The first round waits for both workers
    // to start, which takes longer than the delay: that wait does not count.
    let scaling = Scaling {
        max_workers: 4,
        eager_workers: 2,
        delay: Duration::from_millis(200),
    };
    let backend = local_with(dir.path(), Duration::from_secs(60), scaling);
    let code = "await new Promise(r => setTimeout(r, 400));\n\
        export const handler = async (e) => ({ statusCode: 200, body: process.pid + ':' + e.n });";
    let app = deploy(
        &backend,
        dir.path(),
        "short",
        &[("index.mjs", code)],
        &config(json!({})),
    )
    .await;
    let mut pids = std::collections::HashSet::new();
    for round in 0..5 {
        let calls = (0..16).map(|n| backend.invoke(&app, format!(r#"{{"n":{n}}}"#).into_bytes()));
        for (n, answer) in bodies(futures::future::join_all(calls).await)
            .iter()
            .enumerate()
        {
            let body = answer.as_ref().unwrap();
            let (pid, echoed) = body.split_once(':').unwrap();
            assert_eq!(
                echoed,
                n.to_string(),
                "round {round}: each caller gets its own answer"
            );
            pids.insert(pid.to_owned());
        }
    }
    assert!(
        (1..=2).contains(&pids.len()),
        "16 concurrent short invocations stay on the CPUs' two workers: {pids:?}"
    );
    // Both eager workers start in the first round, but on a loaded machine
    // the first one up may serve every call before the second is ready: the
    // second then idles unused, which is fine. A third is not (and with
    // every call answered, none can start later).
    let workers = backend.workers_started(&app) as usize;
    assert!(
        (pids.len()..=2).contains(&workers),
        "no third worker started: {workers} workers, {} served",
        pids.len()
    );
}

/// The bash bootstraps below use curl, as AWS's tutorial does (`.ci/run`
/// requires it; see [`crate::require`]).
fn has_curl() -> bool {
    let found = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        crate::require::missing("curl is not installed (the bash bootstrap tests use it)");
    }
    found
}

#[tokio::test]
async fn a_provided_bootstrap_in_bash_with_curl_works() {
    if !has_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    // AWS's tutorial bootstrap, in essence.
    let bootstrap = r#"#!/bin/bash
set -euo pipefail
while true; do
  HEADERS="$(mktemp)"
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  RESPONSE="{\"statusCode\":200,\"body\":\"echo:$(echo "$EVENT_DATA" | tr -d '"{}')\"}"
  curl -sS "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response" -d "$RESPONSE" > /dev/null
done
"#;
    let app = deploy(
        &backend,
        dir.path(),
        "bash",
        &[("bootstrap", bootstrap)],
        &config(json!({"runtime": "provided.al2023", "handler": "function.handler"})),
    )
    .await;
    let result = backend
        .invoke(&app, br#"{"a":"b"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&result).unwrap()["body"],
        "echo:a:b"
    );
}

/// A `provided` bootstrap in bash that takes one event (its id in
/// `$REQUEST_ID`, the invocation URL in `$api`), then runs `then`.
fn one_event_bootstrap(then: &str) -> String {
    let take = r#"#!/bin/bash
set -euo pipefail
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
HEADERS="$(mktemp)"
curl -sS -o /dev/null -D "$HEADERS" "$api/next"
REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
"#;
    format!("{take}{then}\n")
}

/// The pipes' connection answers what is not the Runtime API: a wrong
/// route (its body skipped), an unknown request id (its 7 MB body dropped
/// unread), then something that is not HTTP, after which it closes. A bash
/// bootstrap takes its event over TCP, probes the pipes and posts what it read.
/// Bash's printf writes a line at a time: the garbage is one line, so the
/// connection closing on it cannot meet a write still to come (SIGPIPE).
#[tokio::test]
async fn the_pipes_answer_wrong_requests_and_close_on_garbage() {
    if !has_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    let probe = r#"{
  printf 'POST /nope HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc'
  printf 'POST /2018-06-01/runtime/invocation/no-such-id/response HTTP/1.1\r\nContent-Length: 7340032\r\n\r\n'
  head -c 7340032 /dev/zero
  printf 'NOT HTTP AT ALL\n'
} >&4
SEEN=$(timeout 10 cat <&3 | tr -d '\r' | grep -o 'HTTP/1.1 [0-9][0-9]*\|"errorType":"[A-Za-z]*"' | tr -d '"' | tr '\n' ' ')
curl -sS "$api/$REQUEST_ID/response" -d "{\"seen\":\"$SEEN\"}" > /dev/null
sleep 60"#;
    let app = deploy(
        &backend,
        dir.path(),
        "probe",
        &[("bootstrap", &one_event_bootstrap(probe))],
        &config(json!({"runtime": "provided.al2023", "handler": "function.handler"})),
    )
    .await;
    let result = backend.invoke(&app, b"{}".to_vec()).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&result).unwrap()["seen"],
        "HTTP/1.1 404 errorType:NotFound HTTP/1.1 400 errorType:InvalidRequestID \
         HTTP/1.1 400 errorType:BadRequest "
    );
}

/// Answers one event (with its pid), then goes quiet for a minute before
/// it would poll again.
fn quiet_bootstrap() -> String {
    one_event_bootstrap(
        r#"curl -sS "$api/$REQUEST_ID/response" -d "{\"statusCode\":200,\"body\":\"$$\"}" > /dev/null
sleep 60"#,
    )
}

#[tokio::test]
async fn a_runtime_that_answers_and_never_asks_again_does_not_hold_up_the_queue() {
    if !has_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Idle timeout 600 ms: the reaper looks every 300 ms.
    let backend = local_unconfined(dir.path(), Duration::from_millis(600));
    let app = deploy(
        &backend,
        dir.path(),
        "quiet",
        &[("bootstrap", quiet_bootstrap().as_str())],
        &config(json!({"runtime": "provided.al2023", "handler": "function.handler"})),
    )
    .await;
    let first = backend.invoke(&app, b"{}".to_vec()).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), backend.invoke(&app, b"{}".to_vec()))
        .await
        .expect("the second call got a worker of its own")
        .unwrap();
    let pid = |r: &[u8]| serde_json::from_slice::<Value>(r).unwrap()["body"].clone();
    assert_ne!(pid(&first), pid(&second), "served by a second worker");
}

#[tokio::test]
async fn a_result_still_uploading_at_the_deadline_times_out() {
    if !has_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    // Starts its answer at once and finishes it 30 s later, streamed from a pipe.
    let bootstrap = one_event_bootstrap(
        r#"(printf '{"statusCode":200,'; sleep 30; printf '"body":"late"}') | curl -sS -X POST -T - "$api/$REQUEST_ID/response" > /dev/null"#,
    );
    let app = deploy(
        &backend,
        dir.path(),
        "slow-upload",
        &[("bootstrap", bootstrap.as_str())],
        &config(json!({"runtime": "provided.al2023", "handler": "function.handler", "timeout": 1})),
    )
    .await;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        backend.invoke(&app, b"{}".to_vec()),
    )
    .await
    .expect("the timeout covers the upload of the result");
    assert_eq!(answer.unwrap_err(), FunctionError::Timeout(1));
}

#[tokio::test]
async fn a_queued_invocation_outlives_a_redeploy_even_behind_a_quiet_runtime() {
    if !has_curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Idle timeout 60 s: the reaper looks only every 5 s.
    let backend = local(dir.path(), Duration::from_secs(60));
    let quiet = quiet_bootstrap();
    let files = [("bootstrap", quiet.as_str())];
    let config = config(json!({"runtime": "provided.al2023", "handler": "function.handler"}));
    let app = deploy(&backend, dir.path(), "quiet-redeploy", &files, &config).await;
    backend.invoke(&app, b"{}".to_vec()).await.unwrap();
    // Queued behind the quiet worker, then its pool is retired by a redeploy.
    let queued = backend.invoke(&app, b"{}".to_vec());
    let redeploy = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        deploy(&backend, dir.path(), "quiet-redeploy", &files, &config).await;
    };
    let (answer, ()) = tokio::time::timeout(
        Duration::from_secs(3),
        futures::future::join(queued, redeploy),
    )
    .await
    .expect("the retired pool served what it had queued");
    answer.unwrap();
}

/// The body of each result, in order.
fn bodies(results: Vec<Result<Vec<u8>, FunctionError>>) -> Vec<Result<String, FunctionError>> {
    results
        .into_iter()
        .map(|r| {
            r.map(|bytes| {
                serde_json::from_slice::<Value>(&bytes).unwrap()["body"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect()
}

#[tokio::test]
async fn invocations_beyond_the_cap_wait_for_a_worker_and_all_run() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local_with_cap(dir.path(), Duration::from_secs(60), 2);
    // Each invocation first waits until both workers have checked in (or
    // 10 s pass), so a slow start of the second on a loaded machine cannot
    // leave the first to serve all eight.
    let code = r#"const fs = require('node:fs');
        exports.handler = async (e) => {
            fs.writeFileSync(e.dir + '/' + process.pid, '');
            for (let i = 0; i < 1000 && fs.readdirSync(e.dir).length < 2; i++) {
                await new Promise(r => setTimeout(r, 10));
            }
            await new Promise(r => setTimeout(r, 150));
            return { statusCode: 200, body: process.pid + ':' + e.n };
        };"#;
    let app = deploy(
        &backend,
        dir.path(),
        "capped",
        &[("index.js", code)],
        &config(json!({"timeout": 30})),
    )
    .await;
    let barrier = dir.path().join("checked-in");
    std::fs::create_dir(&barrier).unwrap();
    let calls = (0..8).map(|n| {
        let event = json!({"n": n, "dir": barrier});
        backend.invoke(&app, serde_json::to_vec(&event).unwrap())
    });
    let started = std::time::Instant::now();
    let answers = bodies(futures::future::join_all(calls).await);
    let mut pids = std::collections::HashSet::new();
    for (n, answer) in answers.iter().enumerate() {
        let body = answer.as_ref().unwrap();
        let (pid, echoed) = body.split_once(':').unwrap();
        assert_eq!(echoed, n.to_string(), "each caller gets its own answer");
        pids.insert(pid.to_owned());
    }
    assert_eq!(
        pids.len(),
        2,
        "both workers served, never more than the cap"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(4 * 150),
        "eight 150 ms invocations on two workers take four rounds"
    );
    assert_eq!(backend.idle_workers(&app), 2);
}

#[tokio::test]
async fn a_crash_loses_no_queued_invocation_and_init_errors_reach_every_waiting_caller() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local_with_cap(dir.path(), Duration::from_secs(60), 1);
    let code = r#"exports.handler = async (e) => {
        await new Promise(r => setTimeout(r, 50));
        if (e.exit) process.exit(3);
        return { statusCode: 200, body: String(process.pid) };
    };"#;
    let app = deploy(
        &backend,
        dir.path(),
        "crashy",
        &[("index.js", code)],
        &config(json!({})),
    )
    .await;
    // One worker: the first call crashes it while three wait in the queue.
    let calls = [r#"{"exit":true}"#, "{}", "{}", "{}"]
        .map(|event| backend.invoke(&app, event.as_bytes().to_vec()));
    let answers = bodies(futures::future::join_all(calls).await);
    assert!(
        matches!(&answers[0], Err(FunctionError::Failed(m)) if m.contains("exit")),
        "{:?}",
        answers[0]
    );
    let pids: std::collections::HashSet<&String> =
        answers[1..].iter().map(|a| a.as_ref().unwrap()).collect();
    assert_eq!(pids.len(), 1, "a fresh worker served the rest: {answers:?}");

    let broken = deploy(
        &backend,
        dir.path(),
        "broken-init",
        &[("index.js", "throw new Error('cannot start');")],
        &config(json!({})),
    )
    .await;
    let calls = (0..3).map(|_| backend.invoke(&broken, b"{}".to_vec()));
    let answers = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(calls))
        .await
        .expect("no caller waits forever on a function that cannot start");
    for answer in answers {
        assert!(
            matches!(&answer, Err(FunctionError::Failed(m)) if m.contains("cannot start")),
            "{answer:?}"
        );
    }
    assert_eq!(backend.idle_workers(&broken), 0);
}

#[tokio::test]
async fn each_invocation_sees_its_trace_id_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path(), Duration::from_secs(60));
    // Child processes inherit what the handler sets, as with Node's own process.env.
    let node = r#"const { execSync } = require('node:child_process');
        exports.handler = async () => {
            process.env.FROM_HANDLER = 42;
            const child = execSync('echo -n "$FROM_HANDLER"').toString();
            return { statusCode: 200, body: process.env._X_AMZN_TRACE_ID + '|' + child + '|' + typeof process.env.FROM_HANDLER };
        };"#;
    let python = "import os\ndef handler(event, context):\n    return {'statusCode': 200, 'body': os.environ['_X_AMZN_TRACE_ID']}\n";
    let node_app = deploy(
        &backend,
        dir.path(),
        "trace-node",
        &[("index.js", node)],
        &config(json!({})),
    )
    .await;
    let python_app = deploy(
        &backend,
        dir.path(),
        "trace-py",
        &[("app.py", python)],
        &config(json!({"runtime": python_runtime(), "handler": "app.handler"})),
    )
    .await;
    for app in [&node_app, &python_app] {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let answer = bodies(vec![backend.invoke(app, b"{}".to_vec()).await])
                .remove(0)
                .unwrap();
            let trace = answer.split('|').next().unwrap().to_owned();
            assert!(
                trace.starts_with("Root=1-") && trace.contains(";Parent="),
                "{answer}"
            );
            if *app == node_app {
                assert!(answer.ends_with("|42|string"), "{answer}");
            }
            seen.push(trace);
        }
        assert_ne!(seen[0], seen[1], "a new trace id per invocation");
    }
}

#[tokio::test]
async fn invocations_queued_before_a_redeploy_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local_with_cap(dir.path(), Duration::from_secs(60), 1);
    let v1 = "exports.handler = async () => { await new Promise(r => setTimeout(r, 200)); return { statusCode: 200, body: 'v1' }; };";
    let v2 = "exports.handler = async () => ({ statusCode: 200, body: 'v2' });";
    let app = deploy(
        &backend,
        dir.path(),
        "rolling",
        &[("index.js", v1)],
        &config(json!({})),
    )
    .await;
    let queued = (0..3).map(|_| backend.invoke(&app, b"{}".to_vec()));
    let redeploy = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        deploy(
            &backend,
            dir.path(),
            "rolling-v2",
            &[("index.js", v2)],
            &config(json!({})),
        )
        .await;
        let code = dir.path().join("rolling-v2");
        backend
            .deploy(Deployment {
                app: &app,
                version: 2,
                zip: &[],
                code_dir: &code,
                config: &config(json!({})),
            })
            .await
            .unwrap();
    };
    let (answers, ()) = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join(futures::future::join_all(queued), redeploy),
    )
    .await
    .expect("nothing queued is stranded by the redeploy");
    let answers = bodies(answers);
    assert!(
        answers.iter().all(|a| a.as_deref() == Ok("v1")),
        "{answers:?}"
    );
    let after = bodies(vec![backend.invoke(&app, b"{}".to_vec()).await]);
    assert_eq!(after[0].as_deref(), Ok("v2"));
}

#[tokio::test]
async fn a_caller_that_goes_away_does_not_cancel_its_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local_unconfined(dir.path(), Duration::from_secs(60));
    let marker = dir.path().join("ran");
    let code = format!(
        r#"const fs = require('fs');
        exports.handler = async (e) => {{
            if (e.mode === 'hang') await new Promise(() => setTimeout(() => {{}}, 60000));
            await new Promise(r => setTimeout(r, 300));
            if (e.mode === 'mark') fs.writeFileSync({marker:?}, 'done');
            return {{ statusCode: 200, body: String(process.pid) }};
        }};"#
    );
    let app = deploy(
        &backend,
        dir.path(),
        "walkaway",
        &[("index.js", &code)],
        &config(json!({"timeout": 1})),
    )
    .await;
    let pid = |r: Result<Vec<u8>, FunctionError>| {
        serde_json::from_slice::<Value>(&r.unwrap()).unwrap()["body"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let warm = pid(backend.invoke(&app, b"{}".to_vec()).await);

    // The caller gives up after 50 ms; the handler still runs to its end, on the same worker.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        backend.invoke(&app, br#"{"mode":"mark"}"#.to_vec()),
    )
    .await;
    assert!(gave_up.is_err(), "the invocation takes 300 ms");
    // Done, and the worker is back waiting for the next event.
    eventually(|| async {
        let done = std::fs::read_to_string(&marker).unwrap_or_default() == "done";
        (done && backend.idle_workers(&app) == 1).then_some(())
    })
    .await;
    assert_eq!(
        pid(backend.invoke(&app, b"{}".to_vec()).await),
        warm,
        "the worker was neither killed nor replaced"
    );

    // Without a caller, the function's timeout still stops a hung worker.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        backend.invoke(&app, br#"{"mode":"hang"}"#.to_vec()),
    )
    .await;
    assert!(gave_up.is_err());
    // The hung worker's process ends at the 1 s timeout (gone, or a zombie not reaped yet).
    eventually(|| async {
        let status = std::fs::read_to_string(format!("/proc/{warm}/status")).unwrap_or_default();
        (status.is_empty() || status.contains("State:\tZ")).then_some(())
    })
    .await;
    let replaced = pid(backend.invoke(&app, b"{}".to_vec()).await);
    assert_ne!(replaced, warm, "the hung worker was stopped at its timeout");
}

/// The newest Python runtime this machine runs both confined and not (the
/// tests of Python functions deploy it; a machine without Python fails them).
pub fn python_runtime() -> String {
    let (confined, plain) = (
        crate::common::runtimes(true),
        crate::common::runtimes(false),
    );
    let both: Vec<&str> = plain
        .available()
        .filter(|r| r.starts_with("python") && confined.available().any(|c| c == *r))
        .collect();
    match both.last() {
        Some(runtime) => (*runtime).to_owned(),
        None => panic!(
            "no Python 3.9-3.13 both on PATH and on the sandbox's PATH ({})",
            orchestrator::functions::local::sandbox::PATH
        ),
    }
}
