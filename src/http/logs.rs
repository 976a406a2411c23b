//! `GET /apps/{name}/logs`: what an app's functions wrote, as kept in the
//! store (from every replica), and `?follow=true` to stream new lines as
//! Server-Sent Events, as `sam logs --tail` does.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::AppState;
use crate::function_config::AppName;
use crate::store::{ChunkQuery, LogLine, Store, StoreError, StoredLogChunk};

/// How often a follower asks the store for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Chunks read per poll (a chunk is an app's lines of one write of a replica).
const FOLLOW_BATCH: i64 = 64;
/// Chunks read per page when looking for the newest lines.
const PAGE: i64 = 32;
/// Lines can reach the store out of order (replicas write concurrently): a
/// follower looks again this far back for lines it has not sent yet.
const FOLLOW_SETTLE: Duration = Duration::from_secs(3);

/// Which lines to read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// From this time: RFC 3339, epoch milliseconds, or a duration ago (`30s`, `10m`, `2h`, `1d`).
    pub since: Option<String>,
    /// Before this time (same forms); not with `follow`.
    pub until: Option<String>,
    /// Only the lines of this invocation.
    pub request_id: Option<String>,
    /// The newest this many lines (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Stream the lines, then every new one, as Server-Sent Events.
    pub follow: Option<bool>,
}

/// An app's kept output, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsView {
    pub events: Vec<LogEventView>,
}

/// One line an app's function wrote, or the runtime said about it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEventView {
    /// RFC 3339, milliseconds.
    pub timestamp: String,
    /// The invocation it belongs to (`null` for output outside one, e.g. at init).
    pub request_id: Option<String>,
    /// `stdout`, `stderr` or `platform` (START, END, REPORT, and why an invocation failed).
    pub stream: String,
    pub message: String,
}

impl From<LogLine> for LogEventView {
    fn from(line: LogLine) -> Self {
        Self {
            timestamp: crate::support::timestamp(line.at_ms),
            request_id: line.request_id,
            stream: line.stream.into_owned(),
            message: line.message,
        }
    }
}

/// A kept line and where it is: its chunk and its place in it.
struct Placed {
    seq: i64,
    index: usize,
    line: LogLine,
}

/// Which lines a query keeps.
#[derive(Clone)]
struct Filter {
    app: AppName,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    request_id: Option<String>,
}

impl Filter {
    fn keeps(&self, line: &LogLine) -> bool {
        self.since_ms.is_none_or(|since| line.at_ms >= since)
            && self.until_ms.is_none_or(|until| line.at_ms < until)
            && self
                .request_id
                .as_deref()
                .is_none_or(|id| line.request_id.as_deref() == Some(id))
    }

    fn chunks(&self, before_seq: Option<i64>, after_seq: Option<i64>, limit: i64) -> ChunkQuery {
        ChunkQuery {
            app: self.app.clone(),
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            before_seq,
            after_seq,
            limit,
        }
    }

    /// The lines of `chunk` this filter keeps, in order.
    fn placed(&self, chunk: StoredLogChunk) -> impl Iterator<Item = Placed> + '_ {
        let seq = chunk.seq;
        chunk
            .lines
            .into_iter()
            .enumerate()
            .filter(|(_, line)| self.keeps(line))
            .map(move |(index, line)| Placed { seq, index, line })
    }
}

/// The newest `limit` lines `filter` keeps, oldest first, and the newest
/// chunk read (what a follower goes on after).
async fn newest(
    store: &dyn Store,
    filter: &Filter,
    limit: usize,
) -> Result<(Vec<Placed>, i64), StoreError> {
    let mut out: Vec<Placed> = Vec::new();
    let mut newest_seq = 0;
    let mut before = None;
    'pages: loop {
        let chunks = store.log_chunks(&filter.chunks(before, None, PAGE)).await?;
        let full = chunks.len() as i64 == PAGE;
        for chunk in chunks {
            newest_seq = newest_seq.max(chunk.seq);
            before = Some(chunk.seq);
            let mut lines: Vec<Placed> = filter.placed(chunk).collect();
            while let Some(line) = lines.pop() {
                out.push(line);
                if out.len() == limit {
                    break 'pages;
                }
            }
        }
        if !full {
            break;
        }
    }
    out.reverse();
    Ok((out, newest_seq))
}

/// A time in a query: RFC 3339, epoch milliseconds, or a duration before now.
fn instant(field: &str, text: &str, now_ms: i64) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_query",
            format!("{field} must be an RFC 3339 time, epoch milliseconds or a duration such as 10m, not {text:?}"),
        )
    };
    let text = text.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_millis());
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad());
    }
    let unit = text.chars().last().ok_or_else(bad)?;
    let number = &text[..text.len() - unit.len_utf8()];
    let seconds: i64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let count: i64 = number.parse().map_err(|_| bad())?;
    if !(0..=3650 * 86_400).contains(&count.saturating_mul(seconds)) {
        return Err(bad());
    }
    Ok(now_ms - count * seconds * 1000)
}

/// An app's output: its functions' stdout and stderr and the runtime's
/// START, END and REPORT lines, newest last.
///
/// Kept per app up to `functions.log_retention_bytes` (oldest lines go
/// first), in the store: with PostgreSQL, every replica's lines through any
/// replica. `follow=true` answers `text/event-stream`: the lines as below,
/// then each new one as it is kept, each an event whose data is one
/// `LogEventView` and whose id is its position. Functions on AWS Lambda log
/// to CloudWatch Logs instead.
#[utoipa::path(
    get, path = "/apps/{name}/logs", tag = "apps",
    params(("name" = String, Path), LogsQuery),
    responses(
        (status = 200, description = "The lines (JSON), or a stream of them (`follow=true`)", content(
            (LogsView = "application/json"),
            (String = "text/event-stream", example = json!("id: 42\ndata: {\"timestamp\":\"2026-12-07T10:00:00.000Z\",\"requestId\":\"8f5…\",\"stream\":\"stdout\",\"message\":\"hello\"}\n\n")),
        )),
        (status = 400, description = "Bad time, limit, or `until` with `follow`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such app", body = ErrorBody),
        (status = 503, description = "Store unavailable; retry (see Retry-After)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn logs(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let now = crate::support::now_ms();
    let since_ms = query
        .since
        .as_deref()
        .map(|t| instant("since", t, now))
        .transpose()?;
    let until_ms = query
        .until
        .as_deref()
        .map(|t| instant("until", t, now))
        .transpose()?;
    let limit = super::limit(query.limit)?;
    let follow = query.follow.unwrap_or(false);
    if follow && until_ms.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "until cannot be used with follow (which streams new lines)",
        ));
    }
    let request_id = query.request_id.filter(|r| !r.is_empty());
    if request_id.as_ref().is_some_and(|r| r.len() > 128) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "requestId is at most 128 characters",
        ));
    }
    // The app must exist (any status: a removed app's lines are still kept).
    state.apps.status(&name).await?;
    let app = AppName::parse(&name).map_err(|e| ApiError::not_found(e.to_string()))?;
    let filter = Filter {
        app,
        since_ms,
        until_ms,
        request_id,
    };
    let limit = usize::try_from(limit).unwrap_or(100);
    let (lines, newest_seq) = newest(state.store.as_ref(), &filter, limit).await?;
    if !follow {
        let events = lines
            .into_iter()
            .map(|p| LogEventView::from(p.line))
            .collect();
        return Ok(Json(LogsView { events }).into_response());
    }
    let follower = Follower::new(state.store.clone(), filter, lines, newest_seq);
    // Until the client goes, or the service stops.
    let stopping = state.stopping.clone();
    let stream = futures_util::stream::unfold(follower, move |mut follower| {
        let stopping = stopping.clone();
        async move {
            tokio::select! {
                line = follower.next() => Some((Ok::<Event, Infallible>(event(line)), follower)),
                _ = stopping.cancelled() => None,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn event(placed: Placed) -> Event {
    let id = format!("{}-{}", placed.seq, placed.index);
    let view = LogEventView::from(placed.line);
    Event::default()
        .id(id)
        .json_data(&view)
        .unwrap_or_else(|_| Event::default().comment("unencodable line"))
}

/// Reads an app's new lines as they are kept.
struct Follower {
    store: Arc<dyn Store>,
    filter: Filter,
    ready: VecDeque<Placed>,
    /// Chunks read lately (position, when): positions before them are
    /// looked at again for a while, in case a replica's earlier position
    /// reached the store after a later one.
    recent: VecDeque<(i64, Instant)>,
    read: HashSet<i64>,
    /// Every chunk at or before it was read or settled.
    floor: i64,
    first: bool,
}

impl Follower {
    /// After `backlog`, read up to chunk `newest`: the chunks up to it count
    /// as read (and settle like any other), so a chunk below it committed
    /// later is still found.
    fn new(store: Arc<dyn Store>, filter: Filter, backlog: Vec<Placed>, newest: i64) -> Self {
        let now = Instant::now();
        let mut read: HashSet<i64> = backlog.iter().map(|p| p.seq).collect();
        read.insert(newest);
        let mut recent: VecDeque<(i64, Instant)> = read.iter().map(|&seq| (seq, now)).collect();
        recent.make_contiguous().sort_unstable();
        // Chunks older than the backlog's oldest are settled.
        let floor = backlog.first().map_or(newest, |p| p.seq - 1).max(0);
        Self {
            store,
            filter,
            floor,
            ready: backlog.into(),
            recent,
            read,
            first: true,
        }
    }

    /// The next line to send, waiting for one.
    async fn next(&mut self) -> Placed {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return line;
            }
            if !self.first {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
            self.first = false;
            self.poll().await;
        }
    }

    async fn poll(&mut self) {
        // Chunks read long enough ago are settled: nothing before them can still arrive.
        while let Some(&(seq, at)) = self.recent.front() {
            if at.elapsed() < FOLLOW_SETTLE {
                break;
            }
            self.recent.pop_front();
            self.read.remove(&seq);
            self.floor = self.floor.max(seq);
        }
        // Everything after the settled floor: an earlier position committed
        // after a later one is still found (the ones read are skipped).
        let from = self.floor;
        // The chunks read since `from` come again (and are skipped): room for them.
        let room = i64::try_from(self.recent.len()).unwrap_or(i64::MAX);
        let query = self
            .filter
            .chunks(None, Some(from), FOLLOW_BATCH.saturating_add(room));
        let chunks = match self.store.log_chunks(&query).await {
            Ok(chunks) => chunks,
            Err(err) => {
                tracing::debug!(error = %err, "following logs: the store did not answer");
                return;
            }
        };
        let now = Instant::now();
        for chunk in chunks {
            if !self.read.insert(chunk.seq) {
                continue;
            }
            self.recent.push_back((chunk.seq, now));
            let lines: Vec<Placed> = self.filter.placed(chunk).collect();
            self.ready.extend(lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_epoch_ms_or_a_duration_ago() {
        let now = 1_700_000_000_000;
        assert_eq!(
            instant("since", "2023-11-14T22:13:20Z", now).ok(),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            instant("since", "1699999999000", now).ok(),
            Some(1_699_999_999_000)
        );
        assert_eq!(instant("since", "10m", now).ok(), Some(now - 600_000));
        assert_eq!(instant("since", "2h", now).ok(), Some(now - 7_200_000));
        for bad in [
            "",
            "m",
            "10x",
            "-5m",
            "yesterday",
            "99999999999999999999d",
            "10é",
            "é",
        ] {
            assert!(instant("since", bad, now).is_err(), "{bad:?}");
        }
    }
}
