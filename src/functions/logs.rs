//! Functions' output kept per app (`GET /apps/{name}/logs`): what a worker
//! writes on stdout and stderr, and the runtime's START, END and REPORT
//! lines. Lines are buffered in memory and written to the store by one task,
//! an app's lines of each write as one chunk (one row), so an invocation never
//! waits on the store and a busy app costs one row per write; each app's kept
//! lines are trimmed to `functions.log_retention_bytes` (`0`: none are kept).
//! Being in the store, every replica's lines are read through any replica.

use std::collections::HashMap;
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::function_config::AppName;
use crate::store::{LogChunk, LogLine, LogStore};

/// Longest a line waits in memory before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Lines that make the writer go at once.
const FLUSH_AT: usize = 2_000;
/// Lines held while the store does not take them; beyond, new lines are dropped (and counted).
const MAX_PENDING: usize = 100_000;
/// And at most about this many bytes of them.
const MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;
/// What a kept line costs beyond its message (its JSON in the store).
const LINE_OVERHEAD: usize = 64;

fn cost(line: &LogLine) -> usize {
    line.message.len() + LINE_OVERHEAD
}
/// Most lines, and message bytes, in one chunk (at most an eighth of the
/// retention too, so trimming whole chunks keeps close to it).
const CHUNK_LINES: usize = 2_000;
const CHUNK_BYTES: usize = 256 * 1024;

/// The stream a line came from.
pub const STDOUT: &str = "stdout";
pub const STDERR: &str = "stderr";
/// The runtime's own lines: START, END, REPORT, and why an invocation failed.
pub const PLATFORM: &str = "platform";

/// The most of an invocation's log a tail keeps (Lambda's `LogResult`: the last 4 KB).
pub const TAIL_BYTES: usize = 4096;

tokio::task_local! {
    static TAIL: Tail;
}

/// The log of the invocations a task makes, for Lambda's `X-Amz-Log-Type:
/// Tail`: the backends add to it what they ran (the local runtime its lines,
/// Lambda its `LogResult`), only the last [`TAIL_BYTES`] kept.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    /// Adds `text` (whole lines), keeping the last [`TAIL_BYTES`].
    pub fn push(&self, text: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.extend_from_slice(text);
        if kept.len() > TAIL_BYTES {
            let cut = kept.len() - TAIL_BYTES;
            kept.drain(..cut);
        }
    }

    fn text(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bytes added so far (the kept ones; it grows until the cut).
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits for the lines a worker wrote before it answered: they are in
    /// its output pipe, read by another task. Returns once none arrived for
    /// [`TAIL_QUIET`], or after [`TAIL_WAIT`] at most.
    pub async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + TAIL_WAIT;
        let mut seen = self.len();
        loop {
            tokio::time::sleep(TAIL_QUIET).await;
            let now = self.len();
            if now == seen || tokio::time::Instant::now() >= deadline {
                return;
            }
            seen = now;
        }
    }
}

/// How long a tail must stay unchanged after an invocation to be complete.
const TAIL_QUIET: Duration = Duration::from_millis(10);
/// The most a tail waits for late lines.
const TAIL_WAIT: Duration = Duration::from_millis(100);

/// Runs `work` with a tail of the invocations it makes; its output and the tail.
pub async fn with_tail<F: std::future::Future>(work: F) -> (F::Output, Vec<u8>) {
    let tail = Tail::default();
    let output = TAIL.scope(tail.clone(), work).await;
    (output, tail.text())
}

/// The tail the current task keeps, if it keeps one.
pub fn tail() -> Option<Tail> {
    TAIL.try_with(Tail::clone).ok()
}

struct Shared {
    pending: Mutex<Vec<(AppName, LogLine)>>,
    /// Invocations whose lines also go to a tail, by request id.
    taps: Mutex<HashMap<String, Tail>>,
    /// How many taps there are (read without the lock on every line).
    tapped: std::sync::atomic::AtomicUsize,
    wake: Notify,
    dropped: AtomicU64,
    /// About how many bytes `pending` holds.
    pending_bytes: std::sync::atomic::AtomicUsize,
}

/// An invocation's lines going to a tail; dropping it stops them.
pub struct Tap {
    shared: Arc<Shared>,
    request_id: String,
}

impl Drop for Tap {
    fn drop(&mut self) {
        if self.shared.taps().remove(&self.request_id).is_some() {
            self.shared.tapped.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Shared {
    fn taps(&self) -> MutexGuard<'_, HashMap<String, Tail>> {
        self.taps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A line of `request_id` for its tail, if one is kept.
    fn to_tap(&self, request_id: &str, message: &str) {
        if self.tapped.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(tail) = self.taps().get(request_id) {
            let mut line = Vec::with_capacity(message.len() + 1);
            line.extend_from_slice(message.as_bytes());
            line.push(b'\n');
            tail.push(&line);
        }
    }

    fn pending(&self) -> MutexGuard<'_, Vec<(AppName, LogLine)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where functions' lines go; cheap to clone.
#[derive(Clone)]
pub struct FunctionLogs {
    shared: Arc<Shared>,
    /// Lines are kept (`functions.log_retention_bytes` above 0).
    keep: bool,
}

/// One app's log, handed to its workers.
#[derive(Clone)]
pub struct AppLog {
    app: Option<AppName>,
    shared: Arc<Shared>,
}

impl AppLog {
    /// Keeps `message` (one line) under `request_id`.
    pub fn write(&self, request_id: Option<&str>, stream: &'static str, message: &str) {
        if let Some(id) = request_id {
            self.shared.to_tap(id, message);
        }
        let Some(app) = &self.app else { return };
        let line = LogLine {
            at_ms: crate::support::now_ms(),
            request_id: request_id.map(str::to_owned),
            stream: stream.into(),
            message: message.to_owned(),
        };
        let mut pending = self.shared.pending();
        if pending.len() >= MAX_PENDING
            || self.shared.pending_bytes.load(Ordering::Relaxed) >= MAX_PENDING_BYTES
        {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.shared
            .pending_bytes
            .fetch_add(cost(&line), Ordering::Relaxed);
        pending.push((app.clone(), line));
        if pending.len() == FLUSH_AT {
            self.shared.wake.notify_one();
        }
    }
}

impl std::fmt::Debug for FunctionLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionLogs").finish_non_exhaustive()
    }
}

impl Default for FunctionLogs {
    fn default() -> Self {
        Self::new()
    }
}

impl FunctionLogs {
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                pending: Mutex::default(),
                wake: Notify::new(),
                dropped: AtomicU64::new(0),
                pending_bytes: Default::default(),
                taps: Mutex::default(),
                tapped: Default::default(),
            }),
            keep: true,
        }
    }

    /// Keeps nothing (`functions.log_retention_bytes = 0`).
    pub fn off() -> Self {
        Self {
            keep: false,
            ..Self::new()
        }
    }

    /// Sends the lines of invocation `request_id` to `tail` too, until the
    /// guard is dropped.
    pub fn tap(&self, request_id: &str, tail: Tail) -> Tap {
        self.shared.taps().insert(request_id.to_owned(), tail);
        self.shared.tapped.fetch_add(1, Ordering::Relaxed);
        Tap {
            shared: self.shared.clone(),
            request_id: request_id.to_owned(),
        }
    }

    /// The log of `app` (a name that is not an app's keeps nothing).
    pub fn app(&self, app: &str) -> AppLog {
        AppLog {
            app: AppName::parse(app).ok().filter(|_| self.keep),
            shared: self.shared.clone(),
        }
    }

    /// Writes buffered lines to `store` until `shutdown`, then the last ones;
    /// trims an app's lines to `retention_bytes` each time an eighth of it
    /// was written since its last trim.
    pub async fn run(
        self,
        store: Arc<dyn LogStore>,
        retention_bytes: u64,
        shutdown: CancellationToken,
    ) {
        let retention = i64::try_from(retention_bytes).unwrap_or(i64::MAX);
        let mut written_since_trim: HashMap<AppName, u64> = HashMap::new();
        let mut failing = false;
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
                _ = self.shared.wake.notified() => false,
                _ = shutdown.cancelled() => true,
            };
            let batch = std::mem::take(&mut *self.shared.pending());
            let taken: usize = batch.iter().map(|(_, l)| cost(l)).sum();
            self.shared.pending_bytes.fetch_sub(
                taken.min(self.shared.pending_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "function log lines dropped: the store is not keeping up"
                );
            }
            if !batch.is_empty() {
                let chunk_bytes = usize::try_from(retention_bytes / 8)
                    .unwrap_or(CHUNK_BYTES)
                    .clamp(1, CHUNK_BYTES);
                let chunks = chunks(batch, chunk_bytes);
                match store.append_logs(&chunks).await {
                    Ok(()) => {
                        if failing {
                            tracing::info!("function logs are written again");
                            failing = false;
                        }
                        for chunk in &chunks {
                            let bytes: usize = chunk.lines.iter().map(cost).sum();
                            *written_since_trim.entry(chunk.app.clone()).or_default() +=
                                bytes as u64;
                        }
                    }
                    Err(err) => {
                        if !failing {
                            tracing::warn!(error = %err, "function logs could not be written; keeping them to try again");
                            failing = true;
                        }
                        // Back in front of what came meanwhile, within the bound.
                        let mut pending = self.shared.pending();
                        let room = MAX_PENDING.saturating_sub(pending.len());
                        let mut kept: Vec<(AppName, LogLine)> = chunks
                            .into_iter()
                            .flat_map(|c| {
                                let app = c.app;
                                c.lines.into_iter().map(move |l| (app.clone(), l))
                            })
                            .take(room)
                            .collect();
                        let back: usize = kept.iter().map(|(_, l)| cost(l)).sum();
                        self.shared.pending_bytes.fetch_add(back, Ordering::Relaxed);
                        kept.append(&mut pending);
                        *pending = kept;
                    }
                }
            }
            let due: Vec<AppName> = written_since_trim
                .iter()
                .filter(|(_, &written)| written.saturating_mul(8) >= retention_bytes)
                .map(|(app, _)| app.clone())
                .collect();
            for app in due {
                match store.trim_logs(&app, retention).await {
                    Ok(_) => {
                        written_since_trim.remove(&app);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, app = %app, "trimming function logs failed")
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }
}

/// Each app's lines of a batch as chunks, in order, none over
/// [`CHUNK_LINES`] lines or (past its first line) `max_bytes`.
fn chunks(batch: Vec<(AppName, LogLine)>, max_bytes: usize) -> Vec<LogChunk> {
    let mut open: HashMap<AppName, (Vec<LogLine>, usize)> = HashMap::new();
    let mut out = Vec::new();
    for (app, line) in batch {
        let (lines, bytes) = open.entry(app.clone()).or_default();
        if !lines.is_empty()
            && (lines.len() >= CHUNK_LINES || *bytes + line.message.len() > max_bytes)
        {
            out.push(LogChunk {
                app,
                lines: mem::take(lines),
            });
            *bytes = 0;
        }
        *bytes += line.message.len();
        lines.push(line);
    }
    out.extend(
        open.into_iter()
            .filter(|(_, (lines, _))| !lines.is_empty())
            .map(|(app, (lines, _))| LogChunk { app, lines }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(message: &str) -> LogLine {
        LogLine {
            at_ms: 1,
            request_id: None,
            stream: STDOUT.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_batch_becomes_chunks_per_app_in_order_and_bounded() {
        let (a, b) = (
            AppName::parse("a").expect("valid"),
            AppName::parse("b").expect("valid"),
        );
        let mut batch = vec![
            (a.clone(), line("1")),
            (b.clone(), line("x")),
            (a.clone(), line("2")),
        ];
        batch.extend((0..CHUNK_LINES + 1).map(|_| (b.clone(), line("y"))));
        let chunks = chunks(batch, CHUNK_BYTES);
        let of = |app: &AppName| -> Vec<usize> {
            chunks
                .iter()
                .filter(|c| &c.app == app)
                .map(|c| c.lines.len())
                .collect()
        };
        assert_eq!(of(&a), [2]);
        assert_eq!(of(&b), [CHUNK_LINES, 2]);
        let a_lines: Vec<&str> = chunks
            .iter()
            .filter(|c| c.app == a)
            .flat_map(|c| c.lines.iter().map(|l| l.message.as_str()))
            .collect();
        assert_eq!(a_lines, ["1", "2"]);
        let big = "z".repeat(CHUNK_BYTES);
        let split = super::chunks(
            vec![(a.clone(), line(&big)), (a.clone(), line("after"))],
            CHUNK_BYTES,
        );
        assert_eq!(split.len(), 2, "a chunk's bytes are bounded");
    }

    #[test]
    fn lines_are_held_for_the_writer_unless_logs_are_off() {
        let on = FunctionLogs::new();
        on.app("a").write(Some("r"), STDOUT, "kept");
        assert_eq!(on.shared.pending().len(), 1);
        let off = FunctionLogs::off();
        off.app("a").write(Some("r"), STDOUT, "dropped");
        assert!(off.shared.pending().is_empty());
    }
}
