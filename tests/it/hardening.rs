//! The attacks of the isolation and hardening issue, each run against the
//! real service with real workers: what a holder of an event key, a
//! deployed function, another local process or a hostile client can do.
//! Under `.ci/run` (root, bubblewrap installed) the functions are sandboxed;
//! elsewhere the sandbox tests say so visibly and check only what holds
//! without it.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::apps::zip_of;
use crate::common::{eventually, provisioning, write_job, Binary, TestApp, REQUIRE_SANDBOX};

/// Whether this machine sandboxes functions (else the test says so and
/// checks what it can; `.ci/run` requires it).
async fn sandboxed(app: &TestApp) -> bool {
    let (_, health) = app.get("/health").await;
    let on = health["isolation"] == "sandbox";
    if !on {
        assert!(
            std::env::var_os(REQUIRE_SANDBOX).is_none(),
            "the sandbox is required here: {health}"
        );
        eprintln!(
            "SANDBOX UNAVAILABLE on this machine: the confinement checks of this test are not run"
        );
    }
    on
}

async fn deploy(app: &TestApp, name: &str, files: &[(&str, &str)], extra: Value) -> (u16, Value) {
    let mut request = json!({"name": name, "archive": zip_of(files)});
    if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
        request.extend(extra.clone());
    }
    app.post("/apps/deploy", &request).await
}

async fn deploy_ok(app: &TestApp, name: &str, files: &[(&str, &str)], extra: Value) {
    let (status, body) = deploy(app, name, files, extra).await;
    assert_eq!(status, 200, "{body:#}");
}

/// `GET <path>` on app `name`; the status and the body.
async fn call(app: &TestApp, name: &str, path: &str) -> (u16, String) {
    let response = app.app_get(name, path).await;
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

/// `GET <path>` on app `name`, as JSON (the handler's report).
async fn report(app: &TestApp, name: &str, path: &str) -> Value {
    let (status, body) = call(app, name, path).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Processes on this machine whose command line contains `needle`, with their uids.
fn processes_with(needle: &str) -> Vec<(i32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(needle)
        {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse().ok())
                .unwrap_or(u32::MAX);
            found.push((pid, uid));
        }
    }
    found
}

/// The Runtime API address of the live worker whose environment names `app`.
fn runtime_api_of(app: &str) -> Option<String> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if vars
            .iter()
            .any(|v| v == &format!("AWS_LAMBDA_FUNCTION_NAME={app}"))
        {
            if let Some(addr) = vars
                .iter()
                .find_map(|v| v.strip_prefix("AWS_LAMBDA_RUNTIME_API="))
            {
                return Some(addr.to_owned());
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Environment names from events and deploys.

#[tokio::test]
async fn injected_environment_names_never_reach_a_job() {
    let app = TestApp::start(|config, dir| {
        write_job(
            dir,
            "provision",
            "env > \"$(dirname \"$JOB_OUTPUT\")/seen-env\"; echo ran >> \"$(dirname \"$JOB_OUTPUT\")/ran\"",
        );
        config.tiers.insert(
            "basic".into(),
            json!({"jobIdentifier": "provision"})
                .as_object()
                .unwrap()
                .clone(),
        );
    })
    .await;
    let marker = app.path().join("pwned");
    for (name, value) in [
        (
            "BASH_FUNC_echo%%",
            format!("() {{ id > {}; }}", marker.display()),
        ),
        ("LD_PRELOAD", "/tmp/evil.so".to_owned()),
        ("BASH_ENV", format!("{}", marker.display())),
        ("ENV", "/tmp/x".to_owned()),
        ("SHELLOPTS", "xtrace".to_owned()),
        ("NODE_OPTIONS", "--require /tmp/x".to_owned()),
        ("PYTHONPATH", "/tmp".to_owned()),
        ("PATH", "/tmp".to_owned()),
        ("JOB_OUTPUT", "/etc/passwd".to_owned()),
    ] {
        let mut event = provisioning(&format!("t-{}", name.len()), "basic");
        event["builderConfig"] = json!({"config": {"environmentOverride": {name: value}}});
        let (status, body) = app.post("/events/TENANT_PROVISIONING", &event).await;
        assert_eq!(status, 400, "{name}: {body:#}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(name.trim_end_matches('%')),
            "{name}: {message}"
        );
    }
    let (_, events) = app.get("/events").await;
    assert_eq!(events.as_array().map(Vec::len), Some(0), "{events:#}");
    assert!(!marker.exists());

    // A plain name still reaches the job.
    let mut event = provisioning("t-ok", "basic");
    event["builderConfig"] = json!({"config": {"environmentOverride": {"REGION_NAME": "eu"}}});
    let (status, body) = app.post("/events/TENANT_PROVISIONING", &event).await;
    assert_eq!(status, 200, "{body:#}");
    app.wait_tenant("t-ok", "ACTIVE").await;
}

#[tokio::test]
async fn app_environment_follows_the_same_rule() {
    let app = TestApp::start(|_, _| {}).await;
    let code = "exports.handler = async () => ({statusCode: 200, body: 'ok'});";
    for name in [
        "LD_PRELOAD",
        "NODE_OPTIONS",
        "BASH_ENV",
        "PYTHONHOME",
        "PATH",
        "A-B",
    ] {
        let (status, body) = deploy(
            &app,
            "envy",
            &[("index.js", code)],
            json!({"environment": {name: "x"}}),
        )
        .await;
        assert_eq!(status, 400, "{name}: {body:#}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(name)),
            "{body:#}"
        );
    }
    let (status, _) = app.get("/apps/envy").await;
    assert_eq!(status, 404, "nothing was stored");
}

// ---------------------------------------------------------------------------
// The Runtime API of a worker.

/// A `provided` bootstrap in bash that serves invocations over the TCP
/// Runtime API (as `provided.*` clients do).
const BASH_BOOTSTRAP: &str = r#"#!/bin/bash
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -D "$HEADERS" "$API/next")
  ID=$(grep -i Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  curl -sS -X POST "$API/$ID/response" -d '{"statusCode":200,"body":"victim"}' >/dev/null
done
"#;

/// One executable file as a deployable archive.
fn executable_zip(name: &str, content: &str) -> String {
    use base64::Engine;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    zip.start_file(name, options).unwrap();
    zip.write_all(content.as_bytes()).unwrap();
    zip.finish().unwrap();
    base64::engine::general_purpose::STANDARD.encode(out.into_inner())
}

#[tokio::test]
async fn no_other_process_can_take_a_workers_invocations() {
    let app = TestApp::start(|_, _| {}).await;
    let confined = sandboxed(&app).await;
    let archive = executable_zip("bootstrap", BASH_BOOTSTRAP);
    let (status, body) = app
        .post(
            "/apps/deploy",
            &json!({"name": "victim", "archive": archive, "runtime": "provided.al2023", "handler": "bootstrap.handler"}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(call(&app, "victim", "/").await, (200, "victim".into()));
    let api = runtime_api_of("victim").expect("the victim's worker runs");

    // This test process (root, not the worker's user) and an unprivileged
    // local user both dial the port: neither is served.
    let next = format!("http://{api}/2018-06-01/runtime/invocation/next");
    let thief = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let stolen = thief.get(&next).send().await;
    assert!(
        stolen.is_err(),
        "the service's own user was served: {stolen:?}"
    );
    if confined {
        let other_user = std::process::Command::new("setpriv")
            .args(["--reuid=4242", "--regid=4242", "--clear-groups", "--"])
            .args(["curl", "-sS", "--max-time", "2", &next])
            .output()
            .unwrap();
        assert!(
            !other_user.status.success(),
            "a local user was served: {}",
            String::from_utf8_lossy(&other_user.stdout)
        );
    }

    // Another app's function tries the same from inside its worker.
    let thief_code = r#"
        const net = require('net');
        exports.handler = async (event) => {
            const [host, port] = event.queryStringParameters.target.split(':');
            const outcome = await new Promise((done) => {
                let got = '';
                const timer = setTimeout(() => { socket.destroy(); done({ refused: 'no answer in 2 s' }); }, 2000);
                const socket = net.connect(Number(port), host, () => {
                    socket.write('GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n');
                });
                socket.on('data', (d) => { got += d; });
                socket.on('error', (e) => { clearTimeout(timer); done({ refused: e.code }); });
                socket.on('close', () => { clearTimeout(timer); done(got ? { stolen: got } : { refused: 'closed' }); });
            });
            return { statusCode: 200, body: JSON.stringify(outcome) };
        };"#;
    deploy_ok(&app, "thief", &[("index.js", thief_code)], json!({})).await;
    let seen = report(&app, "thief", &format!("/?target={api}")).await;
    assert!(seen.get("refused").is_some(), "{seen}");

    // The victim keeps answering its own requests.
    for _ in 0..3 {
        assert_eq!(call(&app, "victim", "/").await, (200, "victim".into()));
    }
}

// ---------------------------------------------------------------------------
// The sandbox.

/// What a function sees of the machine, reported as JSON.
const PROBE: &str = r#"
const fs = require('fs');
const { execFileSync, spawn } = require('child_process');
const attempt = (f) => { try { return { ok: f() }; } catch (e) { return { denied: e.code || String(e) }; } };
exports.handler = async (event) => {
    const q = event.queryStringParameters || {};
    const out = {
        uid: process.getuid(),
        pid: process.pid,
        procs: fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).length,
        root: fs.readdirSync('/').sort(),
        readData: attempt(() => fs.readFileSync(q.data + '/orchestrator.db').length),
        listData: attempt(() => fs.readdirSync(q.data)),
        writeData: attempt(() => fs.writeFileSync(q.data + '/evil', 'x')),
        readOwnParent: attempt(() => fs.readdirSync('/proc/1/cwd')),
        signalService: attempt(() => process.kill(Number(q.service), 'SIGTERM')),
        writeCode: attempt(() => fs.writeFileSync('/var/task/index.js', 'x')),
        writeTmp: attempt(() => { fs.writeFileSync('/tmp/scratch', 'ok'); return fs.readFileSync('/tmp/scratch', 'utf8'); }),
        etcShadow: attempt(() => fs.readFileSync('/etc/shadow', 'utf8').length),
        taskRoot: process.env.LAMBDA_TASK_ROOT,
    };
    return { statusCode: 200, body: JSON.stringify(out) };
};"#;

#[tokio::test]
async fn a_function_cannot_read_or_steer_the_service() {
    let app = TestApp::start(|_, _| {}).await;
    if !sandboxed(&app).await {
        return;
    }
    deploy_ok(&app, "probe", &[("index.js", PROBE)], json!({})).await;
    let data = app.path().join("data");
    let seen = report(
        &app,
        "probe",
        &format!("/?data={}&service={}", data.display(), std::process::id()),
    )
    .await;
    let uid = seen["uid"].as_u64().unwrap();
    assert!(uid >= 1000, "runs as a user of its own, not root: {seen}");
    assert!(
        seen["procs"].as_u64().unwrap() <= 3,
        "sees only its own processes: {seen}"
    );
    for denied in [
        "readData",
        "listData",
        "writeData",
        "readOwnParent",
        "writeCode",
        "etcShadow",
    ] {
        assert!(seen[denied].get("denied").is_some(), "{denied}: {seen}");
    }
    // The service's pid is not even in its namespace.
    assert_eq!(seen["signalService"]["denied"], "ESRCH", "{seen}");
    assert_eq!(
        seen["writeTmp"]["ok"], "ok",
        "a private writable /tmp: {seen}"
    );
    assert_eq!(seen["taskRoot"], "/var/task");
    assert!(!data.join("evil").exists());

    // Two apps never share a user.
    deploy_ok(&app, "probe-two", &[("index.js", PROBE)], json!({})).await;
    let other = report(&app, "probe-two", "/?data=/nonexistent&service=1").await;
    assert_ne!(other["uid"], seen["uid"]);
}

#[tokio::test]
async fn memory_beyond_memory_size_fails_the_invocation_and_the_next_gets_a_fresh_worker() {
    let app = TestApp::start(|_, _| {}).await;
    if !sandboxed(&app).await {
        return;
    }
    let code = r#"
        const started = Date.now();
        exports.handler = async (event) => {
            if (event.path === '/hog') {
                const held = [];
                for (let i = 0; i < 64; i++) held.push(Buffer.alloc(16 * 1024 * 1024, 1));
                return { statusCode: 200, body: 'survived ' + held.length };
            }
            return { statusCode: 200, body: String(started) };
        };"#;
    deploy_ok(
        &app,
        "hog",
        &[("index.js", code)],
        json!({"memorySize": 128}),
    )
    .await;
    let (status, first) = call(&app, "hog", "/").await;
    assert_eq!(status, 200);
    let (status, body) = call(&app, "hog", "/hog").await;
    assert_eq!(status, 502, "1 GiB in a 128 MB function: {body}");
    let (status, after) = call(&app, "hog", "/").await;
    assert_eq!(status, 200, "{after}");
    assert_ne!(after, first, "a fresh worker answered");
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_process_limit() {
    let app = TestApp::start(|config, _| config.functions.max_processes = 64).await;
    if !sandboxed(&app).await {
        return;
    }
    let code = r#"
        const { spawn } = require('child_process');
        exports.handler = async () => {
            let started = 0, refused = 0;
            for (let i = 0; i < 300; i++) {
                try {
                    const child = spawn('sleep', ['3037']);
                    await new Promise((ok) => { child.on('spawn', () => { started++; ok(); }); child.on('error', () => { refused++; ok(); }); });
                } catch (e) { refused++; }
            }
            return { statusCode: 200, body: JSON.stringify({ started, refused }) };
        };"#;
    deploy_ok(&app, "forky", &[("index.js", code)], json!({})).await;
    let seen = report(&app, "forky", "/").await;
    let started = seen["started"].as_u64().unwrap();
    assert!(started < 64, "{seen}");
    assert!(seen["refused"].as_u64().unwrap() > 0, "{seen}");
    let alive = processes_with("sleep 3037");
    assert!(alive.len() < 64, "{} sleepers", alive.len());
    assert!(alive.iter().all(|(_, uid)| *uid != 0), "none runs as root");
    // The service still answers.
    assert_eq!(app.get("/health").await.0, 200);
    // Removing the app ends every process it started.
    let (status, _) = app.post("/apps/forky/remove", &json!({})).await;
    assert_eq!(status, 200);
    eventually(|| async { processes_with("sleep 3037").is_empty().then_some(()) }).await;
}

#[tokio::test]
async fn a_detached_child_dies_with_its_worker() {
    let app = TestApp::start(|config, _| config.functions.idle_timeout_secs = 2).await;
    if !sandboxed(&app).await {
        return;
    }
    let code = r#"
        const { spawn } = require('child_process');
        exports.handler = async () => {
            const child = spawn('sh', ['-c', 'setsid sleep 3041 & exit 0'], { detached: true, stdio: 'ignore' });
            await new Promise((ok) => child.on('exit', ok));
            return { statusCode: 200, body: 'spawned' };
        };"#;
    deploy_ok(&app, "escapee", &[("index.js", code)], json!({})).await;
    assert_eq!(call(&app, "escapee", "/").await, (200, "spawned".into()));
    // The background shell may still be on its way to `sleep` when the call answers.
    eventually(|| async { (processes_with("sleep 3041").len() == 1).then_some(()) }).await;
    // The idle worker stops after two seconds; its detached grandchild goes too.
    eventually(|| async { processes_with("sleep 3041").is_empty().then_some(()) }).await;
}

// ---------------------------------------------------------------------------
// Resources a function or a client could exhaust.

#[tokio::test]
async fn output_floods_and_bad_utf8_do_not_hurt_the_service() {
    let app = TestApp::start(|_, _| {}).await;
    let code = r#"
        exports.handler = async (event) => {
            if (event.path === '/flood') {
                const chunk = 'x'.repeat(1024 * 1024);
                for (let i = 0; i < 64; i++) process.stdout.write(chunk);
                process.stdout.write(Buffer.from([0xff, 0xfe, 0x0a]));
                process.stderr.write(Buffer.from([0xc3, 0x28, 0x0a]));
            }
            console.log('line after');
            return { statusCode: 200, body: event.path };
        };"#;
    deploy_ok(&app, "loud", &[("index.js", code)], json!({})).await;
    let before = rss_kib();
    for _ in 0..3 {
        assert_eq!(call(&app, "loud", "/flood").await, (200, "/flood".into()));
    }
    for _ in 0..5 {
        assert_eq!(call(&app, "loud", "/quiet").await, (200, "/quiet".into()));
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "192 MiB of output without newlines grew the service by {grown} KiB"
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn thousands_of_idle_connections_neither_block_health_nor_stay_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start(|config, _| config.server.header_timeout_secs = 2).await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..3000 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // A slowloris: half a request head.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    idle.push(slow);

    let started = Instant::now();
    let (status, _) = app.get("/health").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // After the head deadline the server has closed every one of them.
    for stream in &mut idle {
        let mut buffer = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
        let closed = match read {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Err(_) => false,
        };
        assert!(
            closed,
            "a connection still open 10 s after the 2 s deadline"
        );
    }
}

/// `GET /?ms=<ms>&hook=<url>` on app `name` in the background: the status.
fn background_call(app: &TestApp, name: &str, query: String) -> tokio::task::JoinHandle<u16> {
    let (client, url, host) = (
        app.client.clone(),
        app.url.clone(),
        format!("{name}.localhost"),
    );
    tokio::spawn(async move {
        client
            .get(format!("{url}/?{query}"))
            .header("host", host)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    })
}

#[tokio::test]
async fn a_stuck_app_throttles_instead_of_queueing_without_bound() {
    let app = TestApp::start(|config, _| {
        config.functions.max_workers = 1;
        config.functions.max_queue = 3;
        config.functions.max_queue_wait_ms = 1500;
    })
    .await;
    // A handler tells the hook when it starts, then waits `ms`.
    let code = r#"
        let ran = 0;
        exports.handler = async (event) => {
            if (event.path === '/count') return { statusCode: 200, body: String(ran) };
            ran++;
            const q = event.queryStringParameters;
            if (q.hook) await fetch(q.hook, { method: 'POST', body: 'started' });
            await new Promise((ok) => setTimeout(ok, Number(q.ms)));
            return { statusCode: 200, body: 'done' };
        };"#;
    deploy_ok(&app, "stuck", &[("index.js", code)], json!({"timeout": 30})).await;
    assert_eq!(call(&app, "stuck", "/count").await, (200, "0".into()));

    // One runs for 4 s on the only worker; of eight more, three wait and
    // are refused after 1.5 s, the other five at once.
    let hook = crate::common::FakePeer::start(vec![200]).await;
    let slow = background_call(&app, "stuck", format!("ms=4000&hook={}", hook.url));
    eventually(|| async { (!hook.requests().is_empty()).then_some(()) }).await;
    let started = Instant::now();
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url.clone());
            tokio::spawn(async move {
                let response = client
                    .get(format!("{url}/?ms=10"))
                    .header("host", "stuck.localhost")
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let retry = response.headers().contains_key("retry-after");
                (status, retry, response.text().await.unwrap_or_default())
            })
        })
        .collect();
    for task in waiting {
        let (status, retry, body) = task.await.unwrap();
        assert_eq!(status, 429, "{body}");
        assert!(retry, "429 carries Retry-After");
        assert_eq!(body, r#"{"message":"Too Many Requests"}"#);
    }
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "none waited for the slow one: {:?}",
        started.elapsed()
    );
    assert_eq!(slow.await.unwrap(), 200);

    // Requests whose clients gave up before a worker took them never run.
    let hook = crate::common::FakePeer::start(vec![200]).await;
    // Held long enough that the three impatient clients (0.3 s each, one
    // after the other) give up before it ends, even on a loaded machine.
    let hold = background_call(&app, "stuck", format!("ms=3000&hook={}", hook.url));
    eventually(|| async { (!hook.requests().is_empty()).then_some(()) }).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for _ in 0..3 {
        let gave_up = impatient
            .get(format!("{}/?ms=10", app.url))
            .header("host", "stuck.localhost")
            .send()
            .await;
        assert!(gave_up.is_err());
    }
    assert_eq!(hold.await.unwrap(), 200);
    let (_, ran) = call(&app, "stuck", "/count").await;
    assert_eq!(
        ran, "2",
        "the slow one and the one that held; no refused or abandoned one"
    );
}

// ---------------------------------------------------------------------------
// Shutdown.

fn wait_exit(binary: &mut Binary, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = binary.child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn sigterm(binary: &Binary) {
    let pid = i32::try_from(binary.child.id()).unwrap();
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

#[tokio::test]
async fn shutdown_drops_a_held_half_request_and_stops_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("terminated");
    write_job(
        dir.path(),
        "slow",
        &format!(
            "trap 'echo term > {}; exit 143' TERM\nsleep 6011 & wait",
            marker.display()
        ),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[builder]\njobs_dir = {:?}\n[server]\nshutdown_timeout_secs = 1\njob_stop_grace_secs = 2\n[tiers.basic]\njobIdentifier = \"slow\"\n",
            dir.path().join("data"),
            dir.path().join("jobs")
        ),
    )
    .unwrap();
    let mut binary = Binary::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .unwrap();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/events/TENANT_PROVISIONING", binary.url))
        .json(&provisioning("t-held", "basic"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let url = binary.url.clone();
    eventually(|| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let tenant: Value = client
                .get(format!("{url}/tenants/t-held"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (tenant["status"] == "PROVISIONING" && !processes_with("sleep 6011").is_empty())
                .then_some(())
        }
    })
    .await;

    // A client holds a request whose body never finishes.
    let mut held = TcpStream::connect(binary.url.trim_start_matches("http://")).unwrap();
    held.write_all(
        b"POST /events/TENANT_PROVISIONING HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"a\":",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    sigterm(&binary);
    let status = wait_exit(&mut binary, Duration::from_secs(8));
    assert!(status.is_some(), "still running 8 s after SIGTERM");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "term",
        "the job got SIGTERM first"
    );
    eventually(|| async { processes_with("sleep 6011").is_empty().then_some(()) }).await;
    let log = binary.output.lock().unwrap().clone();
    assert!(log.contains("stopping a running local job"), "{log}");
    drop(held);
}

#[tokio::test]
async fn health_says_how_functions_are_confined() {
    let app = TestApp::start(|config, _| {
        config.functions.isolation = orchestrator::config::Isolation::None;
    })
    .await;
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["isolation"], "none", "{health}");
    let confined = TestApp::start(|_, _| {}).await;
    let (_, health) = confined.get("/health").await;
    assert!(
        health["isolation"] == "sandbox" || health["isolation"] == "none",
        "{health}"
    );
}

/// Start-up says what it chose, a line each: the configuration read, the
/// tiers, the backends, the isolation, where telemetry goes, the role.
#[test]
fn start_up_says_what_it_chose() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [tiers.basic]\njobIdentifier = \"b\"\n[tiers.gold]\njobIdentifier = \"g\"\n\
             [auth]\napi_tokens = [\"t\"]\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let service =
        crate::common::Binary::start(&["--config", &config, "serve", "--role", "proxy"], &[])
            .unwrap();
    // The reader thread records the `listening on` line just after it reports it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = service.output.lock().unwrap().clone();
        if log.contains("listening on") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    for expected in [
        format!("configuration read (then the environment and flags) file={config}"),
        "tiers loaded from the configuration count=2 names=basic,gold".to_owned(),
        "backends chosen".to_owned(),
        "functions isolation isolation=".to_owned(),
        "runtimes found available=".to_owned(),
        "telemetry metrics=GET /metrics (bearer token) metrics_listen=127.0.0.1:0".to_owned(),
        "role=proxy".to_owned(),
    ] {
        assert!(log.contains(&expected), "{expected:?} not in:\n{log}");
    }
}
