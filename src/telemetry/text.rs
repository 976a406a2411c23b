//! The text log line, laid out as `tracing-subscriber`'s `compact()` format
//! writes it without colours (`TIMESTAMP LEVEL spans: message key=value…`),
//! for less work per line: every invocation logs three of them.
//!
//! - The date and time to the second are formatted once a second per thread;
//!   only the microseconds are written for each line.
//! - Messages and errors are escaped as the stock formatter does (terminal
//!   control characters become `\x1b`, `\u{9b}`, …), but text is scanned a
//!   chunk at a time and written whole when it holds nothing to escape,
//!   instead of character by character.
//!
//! A unit test holds it to the stock formatter's output, field for field.

use std::cell::RefCell;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, Scope};

/// Formats whole lines (see the module documentation).
pub struct TextLine;

/// Formats the fields of events and spans: the message bare, then `name=value`.
pub struct TextFields;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_timestamp(&mut writer)?;
        writer.write_str(level_str(event.metadata().level()))?;
        writer.write_char(' ')?;
        let spans = || ctx.event_scope().into_iter().flat_map(Scope::from_root);
        let mut any_span = false;
        for span in spans() {
            any_span = true;
            writer.write_str(span.metadata().name())?;
            writer.write_char(':')?;
        }
        if any_span {
            writer.write_char(' ')?;
        }
        ctx.format_fields(writer.by_ref(), event)?;
        for span in spans() {
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                if !fields.is_empty() {
                    writer.write_char(' ')?;
                    writer.write_str(fields)?;
                }
            }
        }
        writer.write_char('\n')
    }
}

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FieldVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// The level as the stock formatter pads it to five columns.
fn level_str(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// `2026-12-01T10:27:03.123456Z ` (UTC, microseconds, then a space).
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let now = chrono::Utc::now();
    let second = now.timestamp();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            cached.1.clear();
            write!(cached.1, "{}", now.format("%Y-%m-%dT%H:%M:%S"))?;
            cached.0 = second;
        }
        writer.write_str(&cached.1)
    })?;
    let mut micros = now.timestamp_subsec_micros().min(999_999);
    let mut tail = *b".000000Z ";
    for digit in tail[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    // Only ASCII digits and punctuation went in.
    writer.write_str(std::str::from_utf8(&tail).map_err(|_| fmt::Error)?)
}

struct FieldVisitor<'writer> {
    writer: Writer<'writer>,
    empty: bool,
    result: fmt::Result,
}

impl FieldVisitor<'_> {
    /// A space before every field but the first.
    fn pad(&mut self) -> fmt::Result {
        if self.empty {
            self.empty = false;
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    fn record(&mut self, field: &Field, value: &dyn fmt::Debug, escape: bool) {
        if self.result.is_err() {
            return;
        }
        self.result = self.pad().and_then(|()| match field.name() {
            "message" => write!(Escaping(&mut self.writer), "{value:?}"),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                self.writer.write_str(name)?;
                self.writer.write_char('=')?;
                if escape {
                    write!(Escaping(&mut self.writer), "{value:?}")
                } else {
                    write!(self.writer, "{value:?}")
                }
            }
        });
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record(field, &format_args!("{value}"), false);
        } else {
            self.record(field, &value, false);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match value.source() {
            Some(source) => self.record(
                field,
                &format_args!("{value} {}.sources={}", field.name(), Sources(source)),
                true,
            ),
            None => self.record(field, &format_args!("{value}"), true),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, value, false);
    }
}

/// An error's causes as the stock formatter lists them: `[first, second]`.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(error) = next {
            list.entry(&format_args!("{error}"));
            next = error.source();
        }
        list.finish()
    }
}

/// Escapes, as it passes through, what a terminal would take for a control sequence.
struct Escaping<'a, W: Write>(&'a mut W);

/// Bytes that may start a character to escape: ESC, BEL, BS, FF, DEL, and
/// 0xC2, the first byte of U+0080..U+00BF (where the C1 controls are).
fn may_need_escaping(text: &str) -> bool {
    text.bytes()
        .any(|b| matches!(b, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f | 0xc2))
}

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if !may_need_escaping(text) {
            return self.0.write_str(text);
        }
        for ch in text.chars() {
            match ch {
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer \x1b[2J failed")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner \u{9b}cause")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    /// Every kind of line the service writes, and the awkward ones.
    fn emit() {
        let id = "9eb587c5-5936-4b23-9fd7-eb1e3fb48451";
        tracing::info!(target: "function", app = %"seed", request_id = %id, "START RequestId: {id} Version: {}", 3);
        tracing::info!("REPORT RequestId: {id}\tDuration: {:.2} ms", 1.234_f64);
        tracing::warn!(count = 3, ratio = 0.5, on = true, name = "quoted", r#type = %"TENANT_PROVISIONING", "plain");
        tracing::error!(
            error = &Outer(Inner) as &(dyn std::error::Error + 'static),
            "with causes"
        );
        tracing::error!(
            error = &Inner as &(dyn std::error::Error + 'static),
            "one cause"
        );
        tracing::info!(
            "output \x1b[31mred\x1b[0m bell\x07 back\x08 feed\x0c del\x7f c1\u{85}\u{9f} °é€ ok"
        );
        tracing::info!(raw = %"not \x1b escaped", "fields are written as given");
        tracing::info!(message = "a message given as a field", extra = ?Some("x"));
        tracing::debug!("hidden below the filter");
        let outer = tracing::info_span!("event", id = %"e-1", r#type = %"T", attempt = 2);
        let _outer = outer.enter();
        tracing::info!("inside a span");
        let inner = tracing::info_span!("job");
        let _inner = inner.enter();
        tracing::warn!(step = "build", "nested");
        tracing::info!("");
    }

    fn lines_of(captured: &Captured) -> Vec<String> {
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A subscriber with this module's formatter, as `telemetry::init` installs it.
    fn ours_writing_to(captured: &Captured) -> impl Subscriber {
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(captured.clone())
            .fmt_fields(TextFields)
            .event_format(TextLine)
            .finish()
    }

    #[test]
    fn lines_match_the_stock_compact_format_without_colours() {
        let (stock, ours) = (Captured::default(), Captured::default());
        let reference = tracing_subscriber::fmt()
            .compact()
            .with_target(false)
            .with_ansi(false)
            .with_writer(stock.clone())
            .finish();
        tracing::subscriber::with_default(reference, emit);
        let fast = ours_writing_to(&ours);
        let before = chrono::Utc::now();
        tracing::subscriber::with_default(fast, emit);
        let after = chrono::Utc::now();

        let (stock, ours) = (lines_of(&stock), lines_of(&ours));
        assert_eq!(stock.len(), 11, "{stock:#?}");
        assert_eq!(ours.len(), stock.len(), "{ours:#?}");
        for (theirs, mine) in stock.iter().zip(&ours) {
            // Timestamps: same shape, and ours is the time of the line.
            let (their_time, their_rest) = theirs.split_at(28);
            let (my_time, my_rest) = mine.split_at(28);
            assert_eq!(their_rest, my_rest);
            assert_eq!(my_time.len(), their_time.len());
            let at = chrono::DateTime::parse_from_rfc3339(my_time.trim_end())
                .unwrap_or_else(|e| panic!("{my_time:?}: {e}"));
            assert!(before <= at && at <= after, "{at} not in {before}..{after}");
            assert!(my_time.ends_with("Z "), "{my_time:?}");
        }
        // What the test is about, spelled out once.
        assert!(ours[5].contains(r"output \x1b[31mred\x1b[0m bell\x07 back\x08 feed\x0c del\x7f c1\u{85}\u{9f} °é€ ok"), "{}", ours[5]);
        assert!(
            ours[3].ends_with(
                r#"with causes error=outer \x1b[2J failed error.sources=[inner \u{9b}cause]"#
            ),
            "{}",
            ours[3]
        );
        assert!(
            ours[9].ends_with(" WARN event:job: nested step=\"build\" id=e-1 type=T attempt=2"),
            "{}",
            ours[9]
        );
    }

    #[test]
    fn the_second_is_formatted_again_when_it_changes() {
        let captured = Captured::default();
        tracing::subscriber::with_default(ours_writing_to(&captured), || {
            tracing::info!("first");
            std::thread::sleep(std::time::Duration::from_millis(1100));
            tracing::info!("second");
        });
        let lines = lines_of(&captured);
        let times: Vec<_> = lines
            .iter()
            .map(|l| chrono::DateTime::parse_from_rfc3339(l.split(' ').next().unwrap()).unwrap())
            .collect();
        let apart = times[1] - times[0];
        assert!(
            apart >= chrono::Duration::milliseconds(1100) && apart < chrono::Duration::seconds(3),
            "{lines:?}"
        );
    }
}
