//! Hardening of the store and the app lifecycle (issue 16): refused deploys
//! change nothing, store write failures are `503` + `Retry-After` with
//! `/ready` following, a deploy interrupted by kill -9 is settled at the next
//! start, and a proxy replica serves an app deployed through another one on
//! its first request without letting unknown hosts hammer the store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{
    assert_error, envelope, eventually, provisioning, status_json, Binary, TestApp,
};
use crate::gate::TcpGate;
use crate::pg::{suite_database, PgTestDb, StoreKind};

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Hand-made archives.

/// Writes bits least significant first, as deflate packs them.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code: most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let reversed = (0..len).fold(0, |r, i| r | (((code >> i) & 1) << (len - 1 - i)));
        self.put(reversed, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A deflate stream (one block, fixed Huffman codes) that inflates to about
/// `len` zero bytes: a literal 0, then copies of 258 bytes at distance 1.
fn deflated_zeros(len: u64) -> Vec<u8> {
    let mut bits = Bits::default();
    bits.put(1, 1); // last block
    bits.put(1, 2); // fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    for _ in 0..(len.saturating_sub(1) / 258) {
        bits.code(0b1100_0101, 8); // length 258 (symbol 285)
        bits.code(0, 5); // distance 1
    }
    bits.code(0, 7); // end of block
    bits.finish()
}

/// A one-entry zip written byte by byte: `index.js`, deflated `data`,
/// whose local and central headers both claim `declared` bytes unpacked.
fn zip_claiming(declared: u32, data: &[u8]) -> Vec<u8> {
    let name = b"index.js";
    let compressed = u32::try_from(data.len()).unwrap();
    let mut zip = Vec::new();
    let header = |zip: &mut Vec<u8>| {
        zip.extend_from_slice(&20u16.to_le_bytes()); // version needed
        zip.extend_from_slice(&0u16.to_le_bytes()); // flags
        zip.extend_from_slice(&8u16.to_le_bytes()); // deflated
        zip.extend_from_slice(&0u16.to_le_bytes()); // time
        zip.extend_from_slice(&0x21u16.to_le_bytes()); // date: 1980-01-01
        zip.extend_from_slice(&0u32.to_le_bytes()); // CRC-32 (never reached)
        zip.extend_from_slice(&compressed.to_le_bytes());
        zip.extend_from_slice(&declared.to_le_bytes());
        zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
        zip.extend_from_slice(&0u16.to_le_bytes()); // extra
    };
    zip.extend_from_slice(b"PK\x03\x04");
    header(&mut zip);
    zip.extend_from_slice(name);
    zip.extend_from_slice(data);
    let central_at = zip.len();
    zip.extend_from_slice(b"PK\x01\x02");
    zip.extend_from_slice(&0x031eu16.to_le_bytes()); // made by: unix
    header(&mut zip);
    zip.extend_from_slice(&0u16.to_le_bytes()); // comment
    zip.extend_from_slice(&0u16.to_le_bytes()); // disk
    zip.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    zip.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
    zip.extend_from_slice(&0u32.to_le_bytes()); // local header at 0
    zip.extend_from_slice(name);
    let central_len = zip.len() - central_at;
    zip.extend_from_slice(b"PK\x05\x06");
    zip.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    zip.extend_from_slice(&u32::try_from(central_len).unwrap().to_le_bytes());
    zip.extend_from_slice(&u32::try_from(central_at).unwrap().to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Every file and directory under `root` with its size, except the SQLite
/// files (whose WAL moves with any write elsewhere).
fn tree(root: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<String, u64>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            if name.starts_with("orchestrator.db") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                into.insert(format!("{name}/"), 0);
                walk(root, &path, into);
            } else {
                into.insert(name, meta.len());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    files
}

/// Bytes under `root`, SQLite files included.
fn disk_usage(root: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

async fn to_app(app: &TestApp, name: &str) -> (u16, String) {
    let response = app.app_get(name, "/").await;
    (response.status().as_u16(), response.text().await.unwrap())
}

fn versions(details: &Value) -> Vec<i64> {
    details["versions"]
        .as_array()
        .map(|v| v.iter().filter_map(|v| v["version"].as_i64()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// 1. A refused deploy changes nothing.

#[tokio::test]
async fn refused_archives_leave_no_version_no_files_and_the_served_version_serving() {
    let app = TestApp::start(|_, _| {}).await;
    let data = app.path().join("data");
    // 300 MiB of zeros in about 2 MB, each header claiming 20 bytes.
    let lying = b64(&zip_claiming(20, &deflated_zeros(300 * MIB)));
    // Data that cannot be inflated (a reserved block type).
    let corrupt = b64(&zip_claiming(20, &[0x07, 0x12, 0x34, 0x56]));
    // Honest about unpacking beyond 250 MB.
    let too_big = b64(&zip_claiming(300 * MIB as u32, &deflated_zeros(300 * MIB)));

    // A first deploy.
    let before = tree(&data);
    let usage = disk_usage(&data);
    let (status, body) = app
        .post("/apps/deploy", &json!({"name": "bomb", "archive": lying}))
        .await;
    assert_error(&body, 400, "invalid_app");
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("declared size"),
        "{body:#}"
    );
    assert_eq!(app.get("/apps").await.1, json!([]), "no app, no version");
    assert_eq!(app.get("/apps/bomb").await.0, 404);
    assert_eq!(tree(&data), before, "nothing left on disk");
    assert!(
        disk_usage(&data) < usage + MIB,
        "nothing written that stays"
    );

    // A redeploy of a working app.
    let one = crate::apps::zip_one(
        "index.js",
        "exports.handler = async () => ({ statusCode: 200, body: 'one' });",
    );
    let (status, body) = app
        .post("/apps/deploy", &json!({"name": "keep", "archive": one}))
        .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(to_app(&app, "keep").await, (200, "one".to_owned()));
    let before = tree(&data);
    let usage = disk_usage(&data);
    for (what, archive, expected) in [
        ("entries lying about their size", &lying, 400),
        ("an entry that cannot be inflated", &corrupt, 400),
        ("more than 250 MB unzipped", &too_big, 413),
    ] {
        let (status, body) = app
            .post("/apps/deploy", &json!({"name": "keep", "archive": archive}))
            .await;
        assert_eq!(status, expected, "{what}: {body:#}");
        assert_eq!(body["error"]["statusCode"], expected, "{what}");
        let (_, details) = app.get("/apps/keep").await;
        assert_eq!(details["status"], "ACTIVE", "{what}: {details:#}");
        assert_eq!(details["version"], 1, "{what}: {details:#}");
        assert_eq!(details["lastError"], Value::Null, "{what}: {details:#}");
        assert_eq!(versions(&details), [1], "{what}: no version stored");
        assert_eq!(tree(&data), before, "{what}: nothing left on disk");
        assert!(disk_usage(&data) < usage + MIB, "{what}");
        assert_eq!(
            to_app(&app, "keep").await,
            (200, "one".to_owned()),
            "{what}: the served version keeps serving"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Store failures on the write path: 503 + Retry-After, and /ready follows.

/// POSTs a provisioning event; its status, `Retry-After` and body.
async fn post_event(app: &TestApp, id: &str) -> (u16, Option<String>, Value) {
    let response = app
        .client
        .post(format!("{}/events/TENANT_PROVISIONING", app.url))
        .json(&envelope(
            id,
            "TENANT_PROVISIONING",
            provisioning(id, "basic"),
        ))
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = status_json(response).await;
    (status, retry_after, body)
}

/// `GET /ready`: status and `Retry-After`.
async fn ready(app: &TestApp) -> (u16, Option<String>) {
    let response = app
        .client
        .get(format!("{}/ready", app.url))
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), retry_after)
}

/// Asserts the write paths (events, deploys) answer 503 with `Retry-After`
/// and `/ready` is 503.
async fn assert_refusing_writes(app: &TestApp, what: &str) {
    let slug = what.replace(' ', "-");
    for i in 0..3 {
        let (status, retry_after, body) = post_event(app, &format!("refused-{slug}-{i}")).await;
        assert_eq!(status, 503, "{what}: {body:#}");
        assert_error(&body, 503, "unavailable");
        assert!(retry_after.is_some(), "{what}: Retry-After");
    }
    let response = app
        .client
        .post(format!("{}/apps/deploy", app.url))
        .json(&json!({"name": "refused", "archive": crate::apps::seed_archive()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "{what}: deploy");
    assert!(response.headers().contains_key("retry-after"), "{what}");
    let (status, retry_after) = eventually(|| async {
        let (status, retry_after) = ready(app).await;
        (status == 503).then_some((status, retry_after))
    })
    .await;
    assert_eq!(status, 503, "{what}: /ready");
    assert!(retry_after.is_some(), "{what}: /ready Retry-After");
    assert_eq!(app.get("/health").await.0, 200, "{what}: still alive");
    let leftovers = std::fs::read_dir(app.path().join("data/apps"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "{what}: the refused deploy left no code");
}

#[tokio::test]
async fn a_sqlite_file_removed_under_the_service_refuses_writes_and_ready_says_so() {
    if crate::STORE != StoreKind::Sqlite {
        return; // PostgreSQL: see the gate test below.
    }
    let app = TestApp::start(|_, _| {}).await;
    assert_eq!(post_event(&app, "before").await.0, 200);
    assert_eq!(ready(&app).await.0, 200);

    std::fs::remove_file(app.path().join("data/orchestrator.db")).unwrap();
    assert_refusing_writes(&app, "file removed").await;
}

/// Makes `file` unwritable for this process: `chattr +i` as root (root
/// writes through any mode bits), `chmod 0444` otherwise. Undone on drop.
struct ReadOnly {
    file: std::path::PathBuf,
    immutable: bool,
}

impl ReadOnly {
    fn make(file: &Path) -> Result<ReadOnly, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let out = std::process::Command::new("chattr")
                .arg("+i")
                .arg(file)
                .output()
                .map_err(|e| format!("chattr: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(ReadOnly {
                file: file.to_owned(),
                immutable: true,
            })
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| e.to_string())?;
            Ok(ReadOnly {
                file: file.to_owned(),
                immutable: false,
            })
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.file)
                .status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.file, std::fs::Permissions::from_mode(0o644));
        }
    }
}

#[tokio::test]
async fn a_sqlite_file_made_read_only_refuses_writes_until_it_is_writable_again() {
    if crate::STORE != StoreKind::Sqlite {
        return;
    }
    let app = TestApp::start(|_, _| {}).await;
    assert_eq!(post_event(&app, "before").await.0, 200);
    let file = app.path().join("data/orchestrator.db");
    let read_only = match ReadOnly::make(&file) {
        Ok(guard) => guard,
        Err(err) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: cannot make the SQLite file read-only here ({}): `chattr +i` is what stops root's writes; nothing was tested",
                err.trim()
            );
            return;
        }
    };
    assert_refusing_writes(&app, "file read-only").await;

    drop(read_only);
    eventually(|| async { (ready(&app).await.0 == 200).then_some(()) }).await;
    assert_eq!(post_event(&app, "after").await.0, 200);
    // Acknowledged events are there; the refused ones were never recorded.
    assert_eq!(app.get("/events/before").await.0, 200);
    assert_eq!(app.get("/events/after").await.0, 200);
    assert_eq!(app.get("/events/refused-file-read-only-0").await.0, 404);
}

// Multi-threaded: the gate forwards while requests wait on the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_out_of_reach_is_503_with_retry_after_and_ready_follows() {
    if crate::STORE != StoreKind::Postgres {
        return;
    }
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let gate = TcpGate::start(db.server_addr()).await;
    let url = db.url_via(gate.addr);
    let app = TestApp::start(move |c, _| c.database_url = Some(url)).await;
    assert_eq!(ready(&app).await.0, 200);
    assert_eq!(post_event(&app, "before").await.0, 200);

    gate.close();
    assert_refusing_writes(&app, "postgres cut").await;

    gate.open();
    eventually(|| async { (ready(&app).await.0 == 200).then_some(()) }).await;
    assert_eq!(post_event(&app, "after").await.0, 200);
    assert_eq!(app.get("/events/refused-postgres-cut-0").await.0, 404);
    drop(app);
    db.drop_db().await;
}

// ---------------------------------------------------------------------------
// 3. A deploy interrupted by kill -9 is settled on the next start.

/// A fake of Lambda's HTTP API whose functions stay `Pending` while `held`:
/// the AWS backend's deploy waits for `Active`, so a deploy stops there for
/// as long as the test wants.
mod held_lambda {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post, put};
    use serde_json::json;

    #[derive(Default)]
    pub struct Lambda {
        pub held: AtomicBool,
        pub created: Mutex<Vec<String>>,
        /// Updates of functions whose name starts with this fail (400).
        pub failing: Mutex<Option<String>>,
        /// Each function's aliases and the version each names.
        pub aliases: Mutex<std::collections::HashMap<(String, String), String>>,
    }

    type Shared = Arc<Lambda>;

    fn config(name: &str, state: &str) -> serde_json::Value {
        json!({
            "FunctionName": name,
            "FunctionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            "Runtime": "nodejs20.x", "Handler": "index.handler", "Version": "1",
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

    fn exists(s: &Lambda, name: &str) -> bool {
        s.created.lock().unwrap().iter().any(|n| n == name)
    }

    async fn create(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let name = body["FunctionName"].as_str().unwrap().to_owned();
        s.created.lock().unwrap().push(name.clone());
        (StatusCode::CREATED, axum::Json(config(&name, "Pending"))).into_response()
    }

    async fn get_function(State(s): State<Shared>, Path(name): Path<String>) -> Response {
        let state = if s.held.load(Ordering::SeqCst) {
            "Pending"
        } else {
            "Active"
        };
        axum::Json(json!({"Configuration": config(&name, state)})).into_response()
    }

    async fn get_configuration(State(s): State<Shared>, Path(name): Path<String>) -> Response {
        match exists(&s, &name) {
            true => axum::Json(config(&name, "Active")).into_response(),
            false => error(404, "ResourceNotFoundException"),
        }
    }

    async fn update(State(s): State<Shared>, Path(name): Path<String>) -> Response {
        let failing = s.failing.lock().unwrap().clone();
        match failing {
            Some(prefix) if name.starts_with(&prefix) => {
                error(400, "InvalidParameterValueException")
            }
            _ => axum::Json(config(&name, "Active")).into_response(),
        }
    }

    fn alias(name: &str, alias: &str, version: &str) -> Response {
        axum::Json(json!({"Name": alias, "FunctionVersion": version,
            "AliasArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:{alias}")}))
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
        s.aliases
            .lock()
            .unwrap()
            .insert((name.clone(), new.to_owned()), version.to_owned());
        alias(&name, new, version)
    }

    async fn put_alias(
        State(s): State<Shared>,
        Path((name, new)): Path<(String, String)>,
        body: axum::body::Bytes,
    ) -> Response {
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let version = body["FunctionVersion"].as_str().unwrap().to_owned();
        match s
            .aliases
            .lock()
            .unwrap()
            .get_mut(&(name.clone(), new.clone()))
        {
            Some(known) => {
                *known = version.clone();
                alias(&name, &new, &version)
            }
            None => error(404, "ResourceNotFoundException"),
        }
    }

    async fn get_alias(
        State(s): State<Shared>,
        Path((name, new)): Path<(String, String)>,
    ) -> Response {
        match s.aliases.lock().unwrap().get(&(name.clone(), new.clone())) {
            Some(version) => alias(&name, &new, version),
            None => error(404, "ResourceNotFoundException"),
        }
    }

    async fn publish(Path(name): Path<String>) -> Response {
        (StatusCode::CREATED, axum::Json(config(&name, "Active"))).into_response()
    }

    async fn invoke(Path(name): Path<String>) -> Response {
        axum::Json(json!({"statusCode": 200, "body": format!("{name} settled")})).into_response()
    }

    /// Serves the fake on 127.0.0.1; returns its URL.
    pub async fn start(lambda: Shared) -> String {
        let app = axum::Router::new()
            .route("/2015-03-31/functions", post(create))
            .route("/2015-03-31/functions/{name}", get(get_function))
            .route(
                "/2015-03-31/functions/{name}/configuration",
                get(get_configuration).put(update),
            )
            .route("/2015-03-31/functions/{name}/code", put(update))
            .route("/2015-03-31/functions/{name}/invocations", post(invoke))
            .route("/2015-03-31/functions/{name}/aliases", post(create_alias))
            .route(
                "/2015-03-31/functions/{name}/aliases/{alias}",
                get(get_alias).put(put_alias),
            )
            .route("/2015-03-31/functions/{name}/versions", post(publish))
            .with_state(lambda);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    status_json(client.get(url).send().await.unwrap()).await
}

// Multi-threaded: the fake answers while the test thread blocks starting the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_interrupted_by_kill_9_is_settled_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = suite_database().await;
    let lambda = Arc::new(held_lambda::Lambda::default());
    lambda.held.store(true, Ordering::SeqCst);
    let endpoint = held_lambda::start(lambda.clone()).await;
    let database = db.as_ref().map_or(String::new(), |db| {
        format!("database_url = \"{}\"\n", db.url)
    });
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n{database}\
             [functions]\nbackend = \"aws\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n\
             deploy_lease_secs = 2\nsync_interval_ms = 200\n",
            data = dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let client = reqwest::Client::new();

    let first = Binary::start(&["--config", &config], &env).unwrap();
    // Two first deploys, each waiting for its function to become Active.
    for name in ["held", "doomed"] {
        let request = client
            .post(format!("{}/apps/deploy", first.url))
            .json(&json!({"name": name, "archive": crate::apps::seed_archive()}));
        tokio::spawn(async move {
            let _ = request.send().await;
        });
    }
    eventually(|| async {
        for name in ["held", "doomed"] {
            let (_, status) = get_json(&client, &format!("{}/apps/{name}/status", first.url)).await;
            let created = lambda.created.lock().unwrap().iter().any(|n| n == name);
            if status["status"] != "DEPLOYED" || !created {
                return None;
            }
        }
        Some(())
    })
    .await;
    first.kill9();

    // Lambda settles; the second function's code cannot be updated any more.
    lambda.held.store(false, Ordering::SeqCst);
    *lambda.failing.lock().unwrap() = Some("doomed".into());
    let second = Binary::start(&["--config", &config], &env).unwrap();
    let held = eventually(|| async {
        let (_, app) = get_json(&client, &format!("{}/apps/held", second.url)).await;
        (app["status"] == "ACTIVE").then_some(app)
    })
    .await;
    assert_eq!(held["version"], 1, "{held:#}");
    assert_eq!(held["lastError"], Value::Null, "{held:#}");
    let response = client
        .get(format!("{}/", second.url))
        .header("host", "held.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "held settled");

    let doomed = eventually(|| async {
        let (_, app) = get_json(&client, &format!("{}/apps/doomed", second.url)).await;
        (app["status"] == "ERROR").then_some(app)
    })
    .await;
    let reason = doomed["lastError"].as_str().unwrap_or_default();
    assert!(
        reason.contains("interrupted") && reason.contains("InvalidParameterValue"),
        "{doomed:#}"
    );
    let log = second.output.lock().unwrap().clone();
    assert!(log.contains("was interrupted"), "{log}");
    drop(second);
    if let Some(db) = db {
        db.drop_db().await;
    }
}

// ---------------------------------------------------------------------------
// 4. A proxy replica serves an app deployed through another replica on its
//    first request; unknown hosts cost a bounded number of store lookups.

/// How many times this service has called `op` on its store, as its own
/// metrics count them (`orchestrator_store_query_duration_seconds{op}`).
async fn store_calls(app: &TestApp, op: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("orchestrator_store_query_duration_seconds_count{{op=\"{op}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |count| count.parse::<f64>().unwrap() as u64)
}

/// Sends `count` requests to unknown hosts (one name again and again, then
/// distinct names) and asserts they all get 404 while the store was asked
/// only a bounded number of times.
async fn unknown_hosts_cost_few_lookups(app: &TestApp, count: usize) {
    let before = store_calls(app, "get_app").await;
    let started = Instant::now();
    let names = (0..count)
        .map(|i| match i % 2 {
            0 => "ghost".to_owned(),
            _ => format!("ghost-{i}"),
        })
        .collect::<Vec<_>>();
    for chunk in names.chunks(50) {
        let answers = futures::future::join_all(chunk.iter().map(|n| to_app(app, n))).await;
        assert!(
            answers.iter().all(|(status, _)| *status == 404),
            "{answers:?}"
        );
    }
    let made = store_calls(app, "get_app").await - before;
    let seconds = started.elapsed().as_secs() + 1;
    // One per name and few seconds (negative cache), at most 20 a second overall.
    let bound = 20 * (seconds + 1);
    assert!(made >= 1, "a miss is looked up");
    assert!(
        made <= bound,
        "{count} requests to unknown hosts made {made} store lookups (bound {bound})"
    );
    eprintln!("{count} requests to unknown hosts: {made} store lookups in {seconds} s");
}

#[tokio::test]
async fn unknown_hosts_cannot_hammer_the_store() {
    if crate::STORE != StoreKind::Sqlite {
        return; // PostgreSQL: within the replica test below.
    }
    let app = TestApp::start(|_, _| {}).await;
    unknown_hosts_cost_few_lookups(&app, 400).await;
}

#[tokio::test]
async fn a_proxy_replica_serves_an_app_deployed_elsewhere_on_its_first_request() {
    if crate::STORE != StoreKind::Postgres {
        return;
    }
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let url = db.url.clone();
    let a = TestApp::start(move |c, _| c.database_url = Some(url)).await;
    let url = db.url.clone();
    // B checks the store once a minute: the first request comes long before.
    let b = TestApp::start(move |c, _| {
        c.database_url = Some(url);
        c.functions.sync_interval_ms = 60_000;
    })
    .await;
    // B's store sync runs once at start, then a minute later: the deploy comes
    // after that first listing (restoring at start lists too), so only the
    // first request can find the app.
    crate::common::eventually(|| async { (store_calls(&b, "list_apps").await >= 2).then_some(()) })
        .await;
    let started = Instant::now();
    let (status, body) = a
        .post(
            "/apps/deploy",
            &json!({"name": "twin", "archive": crate::apps::seed_archive()}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let before = store_calls(&b, "get_app").await;
    assert_eq!(
        to_app(&b, "twin").await,
        (200, "success".to_owned()),
        "B serves it on its first request"
    );
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "before B's next sync"
    );
    assert_eq!(
        store_calls(&b, "get_app").await - before,
        1,
        "found by one lookup"
    );
    // Served from now on without asking the store again.
    for _ in 0..20 {
        assert_eq!(to_app(&b, "twin").await.0, 200);
    }
    assert_eq!(store_calls(&b, "get_app").await - before, 1);

    unknown_hosts_cost_few_lookups(&b, 400).await;

    // Deactivation still spreads within the sync interval (with first-request
    // lookups in place): replicas::an_app_deployed_through_one_replica_is_served_by_the_other_and_deactivation_spreads.
    drop((a, b));
    db.drop_db().await;
}
