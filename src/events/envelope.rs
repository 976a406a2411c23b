//! Reading request bodies: an EventBridge envelope or a bare detail object.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
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

#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "detail-type")]
    detail_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    detail: Option<&'a RawValue>,
}

/// A string field: borrowed from the body, or decoded when it has escapes
/// (`\u00e9`, as encoders that write ASCII only send it).
fn string_field<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
) -> Result<Option<Cow<'a, str>>, EnvelopeError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let not_a_string =
        || EnvelopeError::Invalid(format!("envelope field '{field}' must be a string"));
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(Some(Cow::Borrowed(inner))),
        Some(_) => serde_json::from_str::<String>(text)
            .map(|s| Some(Cow::Owned(s)))
            .map_err(|_| not_a_string()),
        None => Err(not_a_string()),
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

/// Validates `body` and extracts the envelope fields without building a full JSON tree.
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
    let shape: Shape<'_> =
        serde_json::from_str(text).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let detail_type = string_field(shape.detail_type, "detail-type")?;
    let envelope = detail_type.is_some() && shape.detail.is_some();
    if envelope {
        let detail = shape.detail.map(RawValue::get).unwrap_or("null");
        if !detail.starts_with('{') {
            return Err(EnvelopeError::Invalid(
                "envelope field 'detail' must be a JSON object".into(),
            ));
        }
    }
    let id = if envelope {
        string_field(shape.id, "id")?
    } else {
        None
    };
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
        string_field(shape.source, "source")?
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
