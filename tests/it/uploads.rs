//! Archives without base64: a raw zip body (`PUT /apps/{name}/code`). (S3
//! locations and images, which need moto, are in `aws.rs`.)

use std::io::Write;

use serde_json::{json, Value};

use crate::common::{assert_error, TestApp};

pub const HELLO: &str = r#"exports.handler = async () => ({ statusCode: 200, body: `hello ${process.env.WHO} ${process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE}` });"#;

/// Files as raw zip bytes.
pub fn zip_bytes(files: &[(&str, &str)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        for (name, content) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(content.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }
    out.into_inner()
}

async fn put_code(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .put(format!("{}{path}", app.url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn body_of(url: &str, host: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{url}/"))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_raw_zip_deploys_a_version_with_the_apps_settings() {
    let app = TestApp::start(|_, _| {}).await;
    let zip = zip_bytes(&[("index.js", HELLO)]);
    // A new app from a raw upload alone.
    let (status, first) = put_code(
        &app,
        "/apps/raw/code?memorySize=256",
        "application/zip",
        zip.clone(),
    )
    .await;
    assert_eq!(status, 200, "{first:#}");
    assert_eq!(
        (first["version"].clone(), first["memorySize"].clone()),
        (json!(1), json!(256))
    );

    let deployed = app
        .post(
            "/apps/deploy",
            &json!({"name": "raw", "archive": crate::apps::zip_of(&[("index.js", HELLO)]),
                    "environment": {"WHO": "json"}}),
        )
        .await;
    assert_eq!(deployed.0, 200, "{:#}", deployed.1);
    // The current settings stay; the query overrides one.
    let (status, second) = put_code(
        &app,
        "/apps/raw/code?memorySize=512",
        "application/zip; charset=binary",
        zip.clone(),
    )
    .await;
    assert_eq!(status, 200, "{second:#}");
    assert_eq!(second["version"], 3);
    assert_eq!(second["environment"], json!({"WHO": "json"}));
    assert_eq!(
        body_of(&app.url, "raw.localhost").await,
        (200, "hello json 512".into())
    );
    let (status, third) = put_code(
        &app,
        "/apps/raw/code?promote=false",
        "application/zip",
        zip.clone(),
    )
    .await;
    assert_eq!(status, 200, "{third:#}");
    assert_eq!(
        (third["version"].clone(), third["latestVersion"].clone()),
        (json!(3), json!(4))
    );
    assert_eq!(
        body_of(&app.url, "v4--raw.localhost").await,
        (200, "hello json 512".into())
    );

    // Bad uploads: the envelope, and nothing changed.
    let (_, before) = app.get("/apps/raw").await;
    let (status, body) = put_code(&app, "/apps/raw/code", "application/json", zip.clone()).await;
    assert_eq!(status, 415, "{body:#}");
    assert_error(&body, 415, "unsupported_media_type");
    let (status, body) = put_code(
        &app,
        "/apps/raw/code",
        "application/zip",
        b"not a zip".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{body:#}");
    let (status, body) = put_code(&app, "/apps/raw/code", "application/zip", Vec::new()).await;
    assert_eq!(status, 400, "{body:#}");
    let (status, body) = put_code(
        &app,
        "/apps/raw/code",
        "application/zip",
        zip_bytes(&[("other.js", HELLO)]),
    )
    .await;
    assert_eq!(status, 400, "{body:#}");
    let (status, body) = put_code(
        &app,
        "/apps/raw/code?timeout=0",
        "application/zip",
        zip.clone(),
    )
    .await;
    assert_eq!(status, 400, "{body:#}");
    let (status, body) = put_code(
        &app,
        "/apps/raw/code?colour=red",
        "application/zip",
        zip.clone(),
    )
    .await;
    assert_eq!(status, 400, "{body:#}");
    let (status, body) = put_code(
        &app,
        "/apps/Not_A_Name/code",
        "application/zip",
        zip.clone(),
    )
    .await;
    assert_eq!(status, 400, "{body:#}");
    // Over 50 MB: refused while it streams in.
    let huge = vec![0u8; 50 * 1024 * 1024 + 1];
    let (status, body) = put_code(&app, "/apps/raw/code", "application/zip", huge).await;
    assert_eq!(status, 413, "{body:#}");
    let (_, after) = app.get("/apps/raw").await;
    assert_eq!(after["versions"], before["versions"]);
    assert_eq!(after["version"], before["version"]);
    // No upload is left behind in the code directory.
    let leftovers: Vec<_> = std::fs::read_dir(app.path().join("data/apps"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".unpacking-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
