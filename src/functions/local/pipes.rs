//! The Runtime API on two pipes a worker inherits, for our own runtime
//! clients: the same HTTP/1.1 requests and answers as on the TCP port,
//! without loopback TCP's cost per message, and reachable by nothing else.
//!
//! Two pipes, not one socket pair: reading a message from a Unix socket
//! wakes whoever sleeps on its sender's socket (the kernel reports the
//! sender's buffer space), and a runtime blocked reading its answer sleeps
//! there. Every result it posted woke it once for nothing, and every answer
//! it read woke our thread, about a quarter of the context switches on an
//! invocation's path. A pipe wakes its writers only when it was full.
//!
//! The connection is served here rather than by hyper: one client, ours,
//! that sends `Content-Length` bodies and reads each answer whole. Parsing
//! with `httparse` and writing the answers by hand costs a fraction of a
//! general server's work per call, and each invocation makes two calls.
//!
//! Imports `runtime_api` and `protocol`.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use super::protocol::{Answer, Call, TooLarge, ERROR_TYPE_HEADER, MAX_PAYLOAD};
use super::runtime_api::Api;

/// The descriptors on which a worker finds its connection: it reads the
/// API's answers from the first and writes its requests to the second.
pub const RUNTIME_FDS: [i32; 2] = [3, 4];
/// Tells our runtime clients about them, as `read,write` (other clients use
/// the TCP address).
pub const RUNTIME_FDS_ENV: &str = "ORCHESTRATOR_RUNTIME_API_FDS";

/// Longest request head (line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 32;
/// What is read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Our ends of a worker's connection to the Runtime API, and theirs.
pub struct RuntimePipes {
    /// Read: the runtime's requests.
    pub requests: OwnedFd,
    /// Written: the API's answers.
    pub answers: OwnedFd,
    /// The runtime's ends: it reads the answers and writes the requests.
    pub theirs: [OwnedFd; 2],
}

impl RuntimePipes {
    pub fn new() -> std::io::Result<RuntimePipes> {
        let (their_read, answers) = cloexec_pipe()?;
        let (requests, their_write) = cloexec_pipe()?;
        Ok(RuntimePipes {
            requests,
            answers,
            theirs: [their_read, their_write],
        })
    }
}

/// A pipe's read and write ends, closed on exec (passed on by hand).
fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// The thread that serves our runtimes' connections. A worker that posts a
/// result waits for its next event; on its own thread that answer is not
/// queued behind the proxy's other work.
pub fn runtime_api_thread() -> std::io::Result<tokio::runtime::Handle> {
    // Started once, under the lock. The runtime is built on its own thread
    // and never dropped: tokio panics when a runtime is dropped in async code.
    static HANDLE: Mutex<Option<tokio::runtime::Handle>> = Mutex::new(None);
    let mut slot = HANDLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let (built, handle) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("runtime-api".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let _ = built.send(Ok(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                }
                Err(err) => {
                    let _ = built.send(Err(err));
                }
            }
        })?;
    // A wait of well under a millisecond, once per process.
    let handle = handle
        .recv()
        .map_err(|_| std::io::Error::other("the runtime API thread ended"))??;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Serves the worker's connection on the runtime API thread until the
/// runtime closes its ends, breaks the protocol, or `stop` is cancelled.
pub fn serve(
    requests: OwnedFd,
    answers: OwnedFd,
    api: Arc<Api>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    runtime_api_thread()?.spawn(async move {
        // Registered with this thread's reactor, so made here.
        let (Ok(requests), Ok(answers)) = (
            pipe::Receiver::from_owned_fd(requests),
            pipe::Sender::from_owned_fd(answers),
        ) else {
            return;
        };
        let mut connection = Connection::new(requests, answers);
        tokio::select! {
            _ = connection.run(&api) => {}
            () = stop.cancelled() => {}
        }
    });
    Ok(())
}

/// One request's head, parsed.
struct Head {
    call: Result<Call, Answer>,
    error_type: Option<String>,
    head_len: usize,
    body_len: usize,
}

/// What the start of the read buffer holds.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    Head(Head),
    /// Not a request this connection serves: answered, then closed.
    Broken(Answer),
}

fn parse(buf: &[u8]) -> Parsed {
    use axum::http::StatusCode;
    let broken =
        |status, message: &str| Parsed::Broken(Answer::error(status, "BadRequest", message));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return broken(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request's head is too large",
            )
        }
        Err(err) => {
            return broken(
                StatusCode::BAD_REQUEST,
                &format!("not an HTTP/1.1 request: {err}"),
            )
        }
    };
    let mut body_len = 0;
    let mut error_type = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
            let Some(length) = length else {
                return broken(StatusCode::BAD_REQUEST, "Content-Length is not a number");
            };
            body_len = length;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return broken(
                StatusCode::NOT_IMPLEMENTED,
                "bodies on this connection need a Content-Length",
            );
        } else if header.name.eq_ignore_ascii_case(ERROR_TYPE_HEADER) {
            error_type = Some(String::from_utf8_lossy(header.value).into_owned());
        }
    }
    let call = Call::route(
        request.method.unwrap_or_default(),
        request.path.unwrap_or_default(),
    );
    Parsed::Head(Head {
        call,
        error_type,
        head_len,
        body_len,
    })
}

/// Appends an answer as an HTTP/1.1 response.
fn encode(answer: &Answer, out: &mut Vec<u8>) {
    use std::io::Write;
    let status = answer.status;
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&answer.body);
}

/// A worker's connection: requests read into `input`, answers gathered in
/// `output` and written when no whole request is left to answer (a result
/// and the poll for the next event come together: both answers go out in
/// one write).
struct Connection {
    requests: pipe::Receiver,
    answers: pipe::Sender,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of a body still to be dropped unread (over the limit, or of a
    /// wrong route).
    skip: usize,
}

impl Connection {
    fn new(requests: pipe::Receiver, answers: pipe::Sender) -> Connection {
        Connection {
            requests,
            answers,
            input: Vec::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(READ_CHUNK),
            skip: 0,
        }
    }

    /// Serves until the runtime closes its end or breaks the protocol.
    async fn run(&mut self, api: &Api) -> std::io::Result<()> {
        while let Some(need) = self.answer_buffered(api).await? {
            self.flush().await?;
            // Room for the whole request begun, when its length is known.
            let wanted = need.saturating_sub(self.input.len()).max(READ_CHUNK);
            self.input.reserve(wanted);
            if self.requests.read_buf(&mut self.input).await? == 0 {
                return Ok(());
            }
        }
        // Broken: answered, and closed on return.
        self.flush().await
    }

    /// Answers every whole request in the input. `Some(n)`: more input is
    /// needed, `n` bytes in all for what is begun; `None`: the connection
    /// is to close (its last answer is in the output).
    async fn answer_buffered(&mut self, api: &Api) -> std::io::Result<Option<usize>> {
        loop {
            if self.skip > 0 {
                let dropped = self.skip.min(self.input.len());
                self.input.drain(..dropped);
                self.skip -= dropped;
                if self.skip > 0 {
                    return Ok(Some(0));
                }
            }
            self.trim();
            let head = match parse(&self.input) {
                Parsed::Partial => return Ok(Some(self.input.len() + 1)),
                Parsed::Broken(answer) => {
                    encode(&answer, &mut self.output);
                    return Ok(None);
                }
                Parsed::Head(head) => head,
            };
            let end = head.head_len + head.body_len;
            let call = match head.call {
                Ok(call) => call,
                Err(answer) => {
                    encode(&answer, &mut self.output);
                    self.skip = end;
                    continue;
                }
            };
            let error_type = head.error_type.as_deref();
            let body = if head.body_len > MAX_PAYLOAD {
                // Answered without reading it; the runtime stays connected.
                self.skip = end;
                Err(TooLarge)
            } else if self.input.len() < end {
                return Ok(Some(end));
            } else {
                let body = self.input[head.head_len..end].to_vec();
                self.input.drain(..end);
                Ok(body)
            };
            let answer = self.answer_soon(api, call, error_type, body).await?;
            encode(&answer, &mut self.output);
        }
    }

    /// Answers one call; what is already answered goes out first if this
    /// one has to wait (a poll with no event queued).
    async fn answer_soon(
        &mut self,
        api: &Api,
        call: Call,
        error_type: Option<&str>,
        body: Result<Vec<u8>, TooLarge>,
    ) -> std::io::Result<Answer> {
        let mut answer = std::pin::pin!(api.answer(call, error_type, body));
        let now = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx))).await;
        match now {
            Poll::Ready(answer) => Ok(answer),
            Poll::Pending => {
                self.flush().await?;
                Ok(answer.await)
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.answers.write_all(&self.output).await?;
            self.output.clear();
        }
        self.trim();
        Ok(())
    }

    /// Gives back what a large event or result left in the buffers.
    fn trim(&mut self) {
        for buffer in [&mut self.input, &mut self.output] {
            if buffer.is_empty() && buffer.capacity() > 4 * READ_CHUNK {
                buffer.shrink_to(READ_CHUNK);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn head(buf: &[u8]) -> Head {
        match parse(buf) {
            Parsed::Head(head) => head,
            Parsed::Partial => panic!("partial"),
            Parsed::Broken(answer) => panic!("broken: {answer:?}"),
        }
    }

    fn broken(buf: &[u8]) -> StatusCode {
        match parse(buf) {
            Parsed::Broken(answer) => answer.status,
            _ => panic!("not broken"),
        }
    }

    #[test]
    fn requests_are_parsed_with_their_body_length_and_error_type() {
        let post = b"POST /2018-06-01/runtime/invocation/r-1/error HTTP/1.1\r\nHost: x\r\n\
            content-length: 12\r\nLambda-Runtime-Function-Error-Type: TypeError\r\n\r\n{}";
        let parsed = head(post);
        assert_eq!(parsed.call.ok(), Some(Call::Error("r-1".into())));
        assert_eq!(parsed.error_type.as_deref(), Some("TypeError"));
        assert_eq!((parsed.head_len, parsed.body_len), (post.len() - 2, 12));
        let next = head(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n");
        assert_eq!((next.call.ok(), next.body_len), (Some(Call::Next), 0));
        let wrong = head(b"GET /elsewhere HTTP/1.1\r\n\r\n");
        assert_eq!(
            wrong.call.err().map(|a| a.status),
            Some(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn incomplete_heads_wait_and_broken_ones_are_refused() {
        assert!(matches!(
            parse(b"GET /2018-06-01/runtime/inv"),
            Parsed::Partial
        ));
        assert!(matches!(parse(b""), Parsed::Partial));
        assert_eq!(broken(b"NOT HTTP\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(
            broken(b"POST / HTTP/1.1\r\nContent-Length: lots\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            broken(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            StatusCode::NOT_IMPLEMENTED
        );
        let endless = [b"GET / HTTP/1.1\r\nx: ".as_slice(), &[b'y'; MAX_HEAD]].concat();
        assert_eq!(
            broken(&endless),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            broken(many.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn answers_are_written_as_http_responses() {
        let answer = Answer {
            status: StatusCode::OK,
            headers: vec![(
                "lambda-runtime-aws-request-id",
                axum::http::HeaderValue::from_static("r-1"),
            )],
            body: bytes::Bytes::from_static(b"{}"),
        };
        let mut out = Vec::new();
        encode(&answer, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
             lambda-runtime-aws-request-id: r-1\r\n\r\n{}"
        );
    }
}
