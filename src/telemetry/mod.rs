//! Logging setup: `RUST_LOG`-style filter (default `info`), pretty or JSON lines,
//! both `tracing-subscriber`'s own formats (pretty is its `compact` layout,
//! coloured on a terminal).
//!
//! Lines go to an in-memory buffer that a background thread writes to stdout
//! every [`FLUSH_EVERY`] (sooner when it fills up). A request path that logs
//! (every function invocation logs START/END/REPORT) therefore neither waits
//! on stdout nor wakes a thread per line: on a busy proxy, one wake-up per line
//! cost about a quarter of the throughput.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub mod metrics;
pub mod trace;

/// Longest a line waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Buffered bytes that make the writer flush at once.
const FLUSH_AT: usize = 256 * 1024;
/// Buffered bytes beyond which lines are dropped (stdout is stuck) and counted.
const DROP_AT: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct Shared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    closed: AtomicBool,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The subscriber's writer: appends each formatted line to the shared buffer.
#[derive(Clone)]
struct Buffered(Arc<Shared>);

/// One line being written (the fmt layer writes each event with one `write_all`).
struct LineSink<'a>(&'a Shared);

impl Write for LineSink<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.0.lock();
        if pending.len() + line.len() > DROP_AT {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(line);
            if pending.len() >= FLUSH_AT {
                self.0.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineSink(&self.0)
    }
}

/// Writes buffered lines to stdout until closed, then writes what is left.
fn flush_loop(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        {
            let mut pending = shared.lock();
            if pending.len() < FLUSH_AT && !shared.closed.load(Ordering::Acquire) {
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_EVERY)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            std::mem::swap(&mut *pending, &mut batch);
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        let mut out = std::io::stdout().lock();
        // stdout gone (closed pipe): nothing better to do with the lines.
        let _ = out.write_all(&batch);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "WARN {dropped} log lines dropped: stdout is not keeping up"
            );
        }
        let _ = out.flush();
        batch.clear();
        if shared.closed.load(Ordering::Acquire) && shared.lock().is_empty() {
            return;
        }
    }
}

/// Keep alive until exit: dropping it writes the last lines.
pub struct LogGuard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

/// Installs the global subscriber; a second call is a no-op.
pub fn init(format: LogFormat) -> Option<LogGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let shared = Arc::new(Shared::default());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(Buffered(shared.clone()));
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    installed.ok()?;
    let flusher = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn({
            let shared = shared.clone();
            move || flush_loop(&shared)
        })
        .ok();
    Some(LogGuard { shared, flusher })
}
