//! `orchestrator deploy`: zip a directory (or take a zip), upload it raw to
//! `PUT /apps/{name}/code` with a progress bar, print the URL and version.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

use super::output::{self, Output};
use super::pack::{self, Packed};
use super::{CliError, Client};

/// The largest archive the service takes (its `PUT /apps/{name}/code` limit).
const MAX_ARCHIVE: usize = 50 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// A directory to zip (all but `.git` and what `.orchestratorignore`
    /// lists), or a zip archive.
    pub path: PathBuf,
    /// The app's name: its host is `<name>.<base domain>`.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub settings: Settings,
    /// Deploy the version without moving `live` (it answers at `v<N>--<name>`).
    #[arg(long)]
    pub no_promote: bool,
    /// `--wait=false`: return once the upload is in, with the deploy's operation.
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub wait: bool,
}

/// A version's settings; what is left out stays as the app's newest version has it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Settings {
    /// `nodejs20.x`…`nodejs24.x`, `python3.12`, `python3.13`, `provided.al2023`, …
    #[arg(long)]
    pub runtime: Option<String>,
    /// `file.function` (Node.js, Python) or the executable (`provided.*`).
    #[arg(long)]
    pub handler: Option<String>,
    /// An environment variable, `KEY=VALUE` (repeat for more); replaces the app's environment.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Memory in MB.
    #[arg(long)]
    pub memory: Option<u32>,
    /// Timeout in seconds.
    #[arg(long)]
    pub timeout: Option<u32>,
    /// The event the function takes: `1.0` or `2.0`.
    #[arg(long)]
    pub payload_format: Option<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

impl Settings {
    /// The environment for the upload's header (base64 of its JSON), if any is given.
    fn environment_header(&self) -> Option<String> {
        use base64::Engine;
        if self.env.is_empty() {
            return None;
        }
        let environment: serde_json::Map<String, Value> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(Value::Object(environment).to_string()),
        )
    }

    /// The query of a raw upload.
    fn query(&self, promote: bool, wait: bool) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let mut put = |key, value: Option<String>| {
            if let Some(value) = value {
                query.push((key, value));
            }
        };
        put("runtime", self.runtime.clone());
        put("handler", self.handler.clone());
        put("memorySize", self.memory.map(|m| m.to_string()));
        put("timeout", self.timeout.map(|t| t.to_string()));
        put("payloadFormat", self.payload_format.clone());

        put("promote", (!promote).then(|| "false".to_owned()));
        put("wait", (!wait).then(|| "false".to_owned()));
        query
    }
}

pub async fn run(client: &Client, args: DeployArgs, output: Output) -> Result<(), CliError> {
    let packed = pack_with_spinner(&args.path)?;
    if packed.bytes.len() > MAX_ARCHIVE {
        return Err(CliError::Usage(format!(
            "the archive is {} MB; the service takes at most {} MB (leave files out with {})",
            packed.bytes.len().div_ceil(1024 * 1024),
            MAX_ARCHIVE / (1024 * 1024),
            pack::IGNORE_FILE
        )));
    }
    let answer = upload(
        client,
        &args.name,
        &packed,
        &args.settings,
        !args.no_promote,
        args.wait,
    )
    .await?;
    report(client, &answer, output);
    Ok(())
}

/// Zips `path`, saying so on a terminal.
pub fn pack_with_spinner(path: &std::path::Path) -> Result<Packed, CliError> {
    let spinner = ProgressBar::new_spinner().with_message(format!("zipping {}", path.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let packed = pack::pack(path);
    match &packed {
        Ok(packed) if packed.files > 0 => spinner.finish_with_message(format!(
            "zipped {} files ({} KiB)",
            packed.files,
            packed.bytes.len().div_ceil(1024)
        )),
        _ => spinner.finish_and_clear(),
    }
    let packed = packed?;
    if packed.links_skipped > 0 {
        eprintln!(
            "note: {} symbolic link(s) left out (the service unpacks regular files only)",
            packed.links_skipped
        );
    }
    Ok(packed)
}

/// Uploads `packed` as the app's new version; the app, or (`wait = false`)
/// the accepted operation.
pub async fn upload(
    client: &Client,
    name: &str,
    packed: &Packed,
    settings: &Settings,
    promote: bool,
    wait: bool,
) -> Result<Value, CliError> {
    let total = packed.bytes.len() as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    const CHUNK: usize = 64 * 1024;
    let all = packed.bytes.clone();
    let progress = bar.clone();
    let chunks = (0..all.len())
        .step_by(CHUNK)
        .map(move |at| all.slice(at..all.len().min(at + CHUNK)));
    let body = futures_util::stream::iter(chunks.map(move |chunk| {
        progress.inc(chunk.len() as u64);
        Ok::<_, std::io::Error>(chunk)
    }));
    let request = client
        .request(Method::PUT, &["apps", name, "code"])
        .query(&settings.query(promote, wait))
        .header(CONTENT_TYPE, "application/zip")
        .header(CONTENT_LENGTH, total)
        .body(reqwest::Body::wrap_stream(body));
    let request = match settings.environment_header() {
        Some(environment) => request.header("x-orchestrator-environment", environment),
        None => request,
    };
    bar.set_message("deploying");
    let answer = client.json(request).await;
    bar.finish_and_clear();
    answer
}

/// Prints a deploy's answer: where the app answers and which version.
pub fn report(client: &Client, answer: &Value, output: Output) {
    if output == Output::Json {
        return output::json(answer);
    }
    if let Some(operation) = answer.get("operation") {
        println!(
            "Accepted: operation {} ({}); follow it at {}",
            output::cell(operation.get("id")),
            output::cell(operation.get("status")),
            client.url(&[
                "operations",
                operation
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ])
        );
        return;
    }
    let name = output::cell(answer.get("name"));
    let live = answer.get("version").and_then(Value::as_i64);
    let latest = answer.get("latestVersion").and_then(Value::as_i64);
    let host = answer
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (live, latest) {
        (Some(live), Some(latest)) if live != latest => {
            println!("Deployed {name} version {latest} (not live; live is version {live})");
            println!("  {}", client.app_url(&format!("v{latest}--{host}")));
        }
        _ => {
            println!(
                "Deployed {name} version {} (live)",
                output::cell(answer.get("version"))
            );
            println!("  {}", client.app_url(host));
        }
    }
}
