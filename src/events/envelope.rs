//! Reading request bodies: an EventBridge envelope or a bare detail object.

use std::borrow::Cow;

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Longest envelope id we keep as the event id.
pub const MAX_ID_LEN: usize = 256;
/// Longest envelope source (EventBridge allows 256).
pub const MAX_SOURCE_LEN: usize = 256;
/// The `source` of the events the service raises itself; it and
/// `orchestrator.*` are refused from clients, as EventBridge keeps `aws.*`
/// for AWS's own events. Handlers can therefore trust it.
pub const INTERNAL_SOURCE: &str = "orchestrator";

/// Whether `source` is one only the service itself may give its events.
pub fn is_reserved_source(source: &str) -> bool {
    source
        .strip_prefix(INTERNAL_SOURCE)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("request body is not valid UTF-8")]
    NotUtf8,
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(String),
}

/// The parts of a body the ingestion path needs; the rest stays as received.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// The body as received, validated as UTF-8 JSON.
    pub text: &'a str,
    /// Whether it is an EventBridge envelope (`detail-type` and a `detail`
    /// object), not a bare detail.
    pub envelope: bool,
    /// Envelope `id`, used as the event id (and deduplication key).
    pub id: Option<Cow<'a, str>>,
    /// `detail-type` (read from a bare detail too).
    pub detail_type: Option<Cow<'a, str>>,
    /// Envelope `source`.
    pub source: Option<Cow<'a, str>>,
}

/// A field of the envelope as found in the body.
#[derive(Debug, Default)]
enum Field<'a> {
    /// Absent, or `null`.
    #[default]
    Absent,
    /// A string: borrowed from the body, or decoded when it has escapes
    /// (`\u00e9`, as encoders that write ASCII only send it).
    Text(Cow<'a, str>),
    /// Any other JSON value (read through, as everything else).
    Other,
}

impl<'a> Field<'a> {
    /// The string, if any; another value is refused, naming `field`.
    fn text(self, field: &str) -> Result<Option<Cow<'a, str>>, EnvelopeError> {
        match self {
            Field::Absent => Ok(None),
            Field::Text(text) => Ok(Some(text)),
            Field::Other => Err(EnvelopeError::Invalid(format!(
                "envelope field '{field}' must be a string"
            ))),
        }
    }
}

/// What the envelope's `detail` is.
#[derive(Debug, Default, PartialEq, Eq)]
enum Detail {
    /// Absent, or `null`.
    #[default]
    Absent,
    Object,
    Other,
}

/// The parts of the body the ingestion path needs, read in the one pass that
/// also reads every other value of the body through.
#[derive(Debug, Default)]
struct Shape<'a> {
    id: Field<'a>,
    detail_type: Field<'a>,
    source: Field<'a>,
    detail: Detail,
}

/// Reads any JSON value through with serde_json's own parsing, keeping
/// nothing: numbers are converted (so `1e999999` is out of range), strings
/// decoded (so a lone surrogate `"\ud800"` is an error) and nesting counted
/// against serde_json's recursion limit, exactly as when the handler
/// later reads the payload into a `serde_json::Value` ([`MAX_DEPTH`]). Skipping a value
/// (`IgnoredAny`, `RawValue`) checks none of that.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

/// Reads the rest of an array through.
fn read_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Checked>()?.is_some() {}
    Ok(())
}

/// Reads the rest of an object through, keys included.
fn read_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_key::<Checked>()?.is_some() {
        map.next_value::<Checked>()?;
    }
    Ok(())
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Checked, A::Error> {
        read_seq(seq).map(|()| Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Checked, A::Error> {
        read_map(map).map(|()| Checked)
    }
}

/// An envelope string field, read as [`Checked`] reads everything.
impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Borrowed(text)))
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(text.to_owned())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Absent)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
        read_seq(seq).map(|()| Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
        read_map(map).map(|()| Field::Other)
    }
}

/// The envelope's `detail`, read as [`Checked`] reads everything.
impl<'de> Deserialize<'de> for Detail {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DetailVisitor)
    }
}

struct DetailVisitor;

impl<'de> Visitor<'de> for DetailVisitor {
    type Value = Detail;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Detail, E> {
        Ok(Detail::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Detail, E> {
        Ok(Detail::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Detail, E> {
        Ok(Detail::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Detail, E> {
        Ok(Detail::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Detail, E> {
        Ok(Detail::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Detail, E> {
        Ok(Detail::Absent)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Detail, A::Error> {
        read_seq(seq).map(|()| Detail::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Detail, A::Error> {
        read_map(map).map(|()| Detail::Object)
    }
}

/// The body's top-level object: the envelope fields kept, the rest read through.
impl<'de> Deserialize<'de> for Shape<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ShapeVisitor)
    }
}

struct ShapeVisitor;

/// Stores `value` in `slot` unless the body named that field already.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(name));
    }
    Ok(())
}

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape<'de>, A::Error> {
        let (mut id, mut detail_type, mut source, mut detail) = (None, None, None, None);
        while let Some(key) = map.next_key::<Field<'de>>()? {
            let Field::Text(key) = key else {
                return Err(de::Error::custom("object keys must be strings"));
            };
            match key.as_ref() {
                "id" => once(&mut id, "id", map.next_value()?)?,
                "detail-type" => once(&mut detail_type, "detail-type", map.next_value()?)?,
                "source" => once(&mut source, "source", map.next_value()?)?,
                "detail" => once(&mut detail, "detail", map.next_value()?)?,
                _ => map.next_value::<Checked>().map(|_| ())?,
            }
        }
        Ok(Shape {
            id: id.unwrap_or_default(),
            detail_type: detail_type.unwrap_or_default(),
            source: source.unwrap_or_default(),
            detail: detail.unwrap_or_default(),
        })
    }
}

/// Whether a JSON text spells a NUL character (`\u0000`, not `\\u0000`).
fn has_nul_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = bytes[at..].iter().position(|&b| b == b'\\') {
        let escape = at + found;
        if bytes.get(escape + 1..escape + 6) == Some(b"u0000".as_slice()) {
            return true;
        }
        // Past the escaped character, so `\\` does not start another escape.
        at = escape + 2;
        if at >= bytes.len() {
            return false;
        }
    }
    false
}

/// How many levels of arrays and objects JSON may nest: what serde_json's
/// recursion limit (128) allows, for [`read`] and [`detail_of`] alike
/// (serde_json does not let it be set, only disabled).
pub const MAX_DEPTH: usize = 127;

/// serde_json's own sentence, with the limit spelled out where it names one.
fn malformed(err: serde_json::Error) -> EnvelopeError {
    let text = err.to_string();
    if text.starts_with("recursion limit exceeded") {
        return EnvelopeError::Malformed(format!(
            "{text} (JSON may nest at most {MAX_DEPTH} levels)"
        ));
    }
    EnvelopeError::Malformed(text)
}

/// Validates `body` and extracts the envelope fields without building a full
/// JSON tree, in one pass that reads every value as [`detail_of`] will (the
/// same parser with the same limits): a body the handler could not read is
/// refused here, before anything is stored.
pub fn read(body: &[u8]) -> Result<Incoming<'_>, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
    if !text.trim_start().starts_with('{') {
        // Also rejects the empty body and literal `null`.
        if text.trim().is_empty() {
            return Err(EnvelopeError::NotAnObject);
        }
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Err(EnvelopeError::NotAnObject),
            Err(e) => Err(EnvelopeError::Malformed(e.to_string())),
        };
    }
    if has_nul_escape(text) {
        // PostgreSQL's text cannot hold it: refused here, not failed later.
        return Err(EnvelopeError::Invalid(
            "JSON strings must not contain the NUL character (\\u0000)".into(),
        ));
    }
    let shape: Shape<'_> = serde_json::from_str(text).map_err(malformed)?;
    let detail_type = shape.detail_type.text("detail-type")?;
    let envelope = detail_type.is_some() && shape.detail != Detail::Absent;
    if envelope && shape.detail != Detail::Object {
        return Err(EnvelopeError::Invalid(
            "envelope field 'detail' must be a JSON object".into(),
        ));
    }
    let id = if envelope { shape.id.text("id")? } else { None };
    if let Some(id) = id.as_deref() {
        if id.is_empty()
            || id.chars().count() > MAX_ID_LEN
            || id.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(EnvelopeError::Invalid(format!(
                "envelope 'id' must be 1 to {MAX_ID_LEN} characters without '/' or control characters"
            )));
        }
    }
    let source = if envelope {
        shape.source.text("source")?
    } else {
        None
    };
    if let Some(source) = source.as_deref() {
        if source.chars().count() > MAX_SOURCE_LEN || source.chars().any(char::is_control) {
            return Err(EnvelopeError::Invalid(format!(
                "envelope 'source' must be at most {MAX_SOURCE_LEN} characters without control characters"
            )));
        }
        if is_reserved_source(source) {
            return Err(EnvelopeError::Invalid(format!(
                "envelope 'source' '{source}' is reserved for events the service raises itself"
            )));
        }
    }
    Ok(Incoming {
        text,
        envelope,
        id,
        detail_type,
        source,
    })
}

/// The detail of a stored payload: `detail` of an envelope, or the whole bare object.
///
/// Read with serde_json's defaults (nesting depth 128, numbers within `f64`,
/// valid escapes); [`read`] checks bodies with the same at ingestion.
pub fn detail_of(payload: &str) -> Result<Map<String, Value>, serde_json::Error> {
    let mut body: Map<String, Value> = serde_json::from_str(payload)?;
    let envelope =
        body.contains_key("detail-type") && matches!(body.get("detail"), Some(Value::Object(_)));
    if envelope {
        if let Some(Value::Object(detail)) = body.remove("detail") {
            return Ok(detail);
        }
    }
    Ok(body)
}

/// Builds the envelope the service stores for events it raises itself.
pub fn internal_envelope(id: &str, detail_type: &str, detail: Value) -> String {
    serde_json::json!({
        "version": "0",
        "id": id,
        "detail-type": detail_type,
        "source": INTERNAL_SOURCE,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "resources": [],
        "detail": detail,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_envelope_fields() {
        let body = br#"{"version":"0","id":"abc-1","detail-type":"TENANT_PROVISIONING","source":"tms","detail":{"tenantId":"t1"}}"#;
        let inc = read(body).unwrap();
        assert!(inc.envelope);
        assert_eq!(inc.id.as_deref(), Some("abc-1"));
        assert_eq!(inc.detail_type.as_deref(), Some("TENANT_PROVISIONING"));
        assert_eq!(inc.source.as_deref(), Some("tms"));
        assert_eq!(detail_of(inc.text).unwrap()["tenantId"], "t1");
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let body = br#"{"id":"caf\u00e9-1","detail-type":"TENANT_\u0050ROVISIONING","source":"a\"b","detail":{}}"#;
        let inc = read(body).unwrap();
        assert_eq!(inc.id.as_deref(), Some("café-1"));
        assert_eq!(inc.detail_type.as_deref(), Some("TENANT_PROVISIONING"));
        assert_eq!(inc.source.as_deref(), Some("a\"b"));
        // What an escape spells is checked as if it came plain.
        for id in [r#""a\/b""#, r#""a\u0007""#, r#""""#] {
            let body = format!(r#"{{"id":{id},"detail-type":"X","detail":{{}}}}"#);
            assert!(
                matches!(read(body.as_bytes()), Err(EnvelopeError::Invalid(_))),
                "{id}"
            );
        }
        for source in [r#""a\u0000b""#, r#""line\nbreak""#] {
            let body = format!(r#"{{"source":{source},"detail-type":"X","detail":{{}}}}"#);
            assert!(
                matches!(read(body.as_bytes()), Err(EnvelopeError::Invalid(_))),
                "{source}"
            );
        }
    }

    #[test]
    fn a_nul_character_is_refused_wherever_it_is() {
        for body in [
            r#"{"detail-type":"X","detail":{"tenant":{"id":"t\u0000"}}}"#,
            r#"{"tenantId":"\u0000"}"#,
            r#"{"k\\\u0000":1}"#,
        ] {
            assert!(
                matches!(read(body.as_bytes()), Err(EnvelopeError::Invalid(_))),
                "{body}"
            );
        }
        // An escaped backslash before `u0000` is text, and other escapes are fine.
        for body in [r#"{"path":"C:\\u0000"}"#, r#"{"a":"\u0001\\","b":"\""}"#] {
            assert!(read(body.as_bytes()).is_ok(), "{body}");
        }
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        let envelope = |id: &str| format!(r#"{{"id":"{id}","detail-type":"X","detail":{{}}}}"#);
        let longest = "é".repeat(MAX_ID_LEN);
        assert_eq!(
            read(envelope(&longest).as_bytes()).unwrap().id.as_deref(),
            Some(longest.as_str())
        );
        let over = "é".repeat(MAX_ID_LEN + 1);
        assert!(matches!(
            read(envelope(&over).as_bytes()),
            Err(EnvelopeError::Invalid(_))
        ));
    }

    #[test]
    fn bare_detail_is_the_detail() {
        let inc = read(br#" {"tenantId":"t1","id":"x"}"#).unwrap();
        assert!(!inc.envelope);
        assert_eq!(inc.id, None, "a bare detail's id is not an envelope id");
        assert_eq!(detail_of(inc.text).unwrap()["id"], "x");
        let inc = read(br#"{"detail-type":"X","detail":null}"#).unwrap();
        assert!(!inc.envelope, "a null detail is no envelope's");
    }

    #[test]
    fn refuses_non_objects_and_bad_json() {
        assert_eq!(read(b"[1,2]").unwrap_err(), EnvelopeError::NotAnObject);
        assert_eq!(read(b"\"s\"").unwrap_err(), EnvelopeError::NotAnObject);
        assert_eq!(read(b"null").unwrap_err(), EnvelopeError::NotAnObject);
        assert_eq!(read(b"").unwrap_err(), EnvelopeError::NotAnObject);
        assert_eq!(read(b"\xff\xfe").unwrap_err(), EnvelopeError::NotUtf8);
        assert!(matches!(
            read(b"{\"a\":").unwrap_err(),
            EnvelopeError::Malformed(_)
        ));
        assert!(matches!(
            read(b"[1,").unwrap_err(),
            EnvelopeError::Malformed(_)
        ));
        assert!(matches!(
            read(br#"{"detail-type":"X","detail":[1]}"#).unwrap_err(),
            EnvelopeError::Invalid(_)
        ));
        assert!(matches!(
            read(br#"{"detail-type":"X","detail":{},"id":5}"#).unwrap_err(),
            EnvelopeError::Invalid(_)
        ));
    }

    /// `depth` nested arrays around `inner`, under `detail`.
    fn nested(depth: usize, inner: &str) -> String {
        format!(
            r#"{{"detail-type":"X","detail":{{"a":{}{inner}{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    }

    #[test]
    fn what_the_handler_cannot_read_is_refused_and_nothing_else() {
        // The top object and `detail` are two of the levels.
        let deepest = nested(MAX_DEPTH - 2, "1");
        let too_deep = nested(MAX_DEPTH - 1, "1");
        let refused = [
            too_deep.as_str(),
            r#"{"detail-type":"X","detail":{"n":1e999999}}"#,
            r#"{"detail-type":"X","detail":{"n":-1e309}}"#,
            r#"{"detail-type":"X","detail":{"s":"\ud800"}}"#,
            r#"{"detail-type":"X","detail":{"\udc00":1}}"#,
            r#"{"tenantId":"t","s":"a\ud800b"}"#,
            r#"{"id":"\ud800","detail-type":"X","detail":{}}"#,
            r#"{"unrelated":[1e400],"detail-type":"X","detail":{}}"#,
            r#"{"s":"\x"}"#,
        ];
        for body in refused {
            assert!(detail_of(body).is_err(), "the handler reads {body}");
            assert!(
                matches!(read(body.as_bytes()), Err(EnvelopeError::Malformed(_))),
                "{body}"
            );
        }
        let accepted = [
            deepest.as_str(),
            r#"{"detail-type":"X","detail":{"n":1e308,"m":1e-999999,"big":123456789012345678901234567890}}"#,
            r#"{"detail-type":"X","detail":{"s":"\ud83d\ude00","t":"\u00e9"}}"#,
        ];
        for body in accepted {
            assert!(detail_of(body).is_ok(), "the handler cannot read {body}");
            assert!(read(body.as_bytes()).is_ok(), "{body}");
        }
        let Err(EnvelopeError::Malformed(message)) = read(too_deep.as_bytes()) else {
            panic!("too deep is malformed");
        };
        assert!(message.contains("at most 127 levels"), "{message}");
    }

    #[test]
    fn each_envelope_field_is_named_once() {
        for body in [
            r#"{"id":"a","id":"b","detail-type":"X","detail":{}}"#,
            r#"{"detail-type":"X","detail":{},"detail":{}}"#,
        ] {
            assert!(
                matches!(read(body.as_bytes()), Err(EnvelopeError::Malformed(_))),
                "{body}"
            );
        }
        // Inside the detail, as anywhere else, a repeated key is the handler's (the last wins).
        assert!(read(br#"{"detail-type":"X","detail":{"a":1,"a":2}}"#).is_ok());
    }

    #[test]
    fn the_services_own_sources_are_refused_from_clients() {
        for source in ["orchestrator", "orchestrator.builder", "orchestrator.x"] {
            assert!(is_reserved_source(source), "{source}");
            let body = format!(r#"{{"source":"{source}","detail-type":"X","detail":{{}}}}"#);
            assert!(
                matches!(read(body.as_bytes()), Err(EnvelopeError::Invalid(m)) if m.contains("reserved")),
                "{source}"
            );
        }
        for source in [
            "orchestrators",
            "my.orchestrator",
            "Orchestrator-x",
            "aws.codebuild",
        ] {
            assert!(!is_reserved_source(source), "{source}");
        }
        // A bare detail's `source` is data, not the event's source.
        assert!(read(br#"{"source":"orchestrator.builder","tenantId":"t"}"#).is_ok());
    }
}
