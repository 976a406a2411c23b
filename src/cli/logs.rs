//! `orchestrator logs`: an app's function output, once or followed
//! (`GET /apps/{name}/logs`, Server-Sent Events with `follow=true`).

use serde_json::Value;

use super::client::describe;
use super::output::Output;
use super::{CliError, Client};

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The app.
    pub app: String,
    /// Keep printing new lines as the function writes them.
    #[arg(long, short)]
    pub follow: bool,
    /// From this time: a duration ago (`30s`, `10m`, `2h`, `1d`), RFC 3339 or epoch milliseconds.
    #[arg(long)]
    pub since: Option<String>,
    /// Only this invocation's lines.
    #[arg(long)]
    pub request_id: Option<String>,
    /// The newest this many lines (default 100, at most 1000).
    #[arg(long)]
    pub limit: Option<u32>,
}

pub async fn run(client: &Client, args: &LogsArgs, output: Output) -> Result<(), CliError> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(since) = &args.since {
        query.push(("since", since.clone()));
    }
    if let Some(id) = &args.request_id {
        query.push(("requestId", id.clone()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let path = ["apps", args.app.as_str(), "logs"];
    if !args.follow {
        let logs = client.json(client.get(&path).query(&query)).await?;
        let empty = Vec::new();
        for line in logs
            .get("events")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
        {
            print_line(line, output);
        }
        return Ok(());
    }
    query.push(("follow", "true".to_owned()));
    let mut response = client
        .send(
            client
                .get(&path)
                .query(&query)
                .header("accept", "text/event-stream"),
        )
        .await?;
    let mut events = SseReader::default();
    loop {
        let chunk = response.chunk().await.map_err(|e| CliError::Unreachable {
            url: client.url(&path).to_string(),
            reason: describe(&e),
        })?;
        let Some(chunk) = chunk else {
            return Err(CliError::BadAnswer(
                "the service closed the log stream".into(),
            ));
        };
        for data in events.push(&chunk) {
            match serde_json::from_str::<Value>(&data) {
                Ok(line) => print_line(&line, output),
                Err(_) => println!("{data}"),
            }
        }
    }
}

/// One log line: `time  request  message` for people, one JSON object per line for scripts.
fn print_line(line: &Value, output: Output) {
    if output == Output::Json {
        println!("{line}");
        return;
    }
    let text = |key| line.get(key).and_then(Value::as_str).unwrap_or_default();
    let request = text("requestId");
    let short = request
        .get(..8)
        .unwrap_or(if request.is_empty() { "-" } else { request });
    println!(
        "{} {short:8} {}",
        text("timestamp"),
        text("message").trim_end()
    );
}

/// Splits a Server-Sent Events stream into its events' data.
#[derive(Default)]
struct SseReader {
    pending: Vec<u8>,
}

impl SseReader {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = find_blank_line(&self.pending) {
            let block: Vec<u8> = self.pending.drain(..end.1).collect();
            let block = String::from_utf8_lossy(&block[..end.0]);
            let data: Vec<&str> = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }
}

/// Where the first event ends: (end of its text, end of the blank line).
fn find_blank_line(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_split_anywhere() {
        let stream = b": keep-alive\n\nid: 1\ndata: {\"a\":1}\n\nid: 2\ndata: x\ndata: y\n\n";
        for split in 0..stream.len() {
            let mut reader = SseReader::default();
            let mut got = reader.push(&stream[..split]);
            got.extend(reader.push(&stream[split..]));
            assert_eq!(got, ["{\"a\":1}", "x\ny"], "split at {split}");
        }
    }
}
