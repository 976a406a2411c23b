//! A function's result → the HTTP response, by API Gateway's rules.

use base64::Engine;
use serde_json::{Map, Value};

/// Which proxy format an app speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub enum PayloadFormat {
    /// REST API, payload 1.0 (the default).
    #[serde(rename = "1.0")]
    V1,
    /// HTTP API / Function URL, payload 2.0.
    #[serde(rename = "2.0")]
    V2,
}

impl PayloadFormat {
    /// As the API spells it: `1.0`, `2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::V1 => "1.0",
            PayloadFormat::V2 => "2.0",
        }
    }
}

/// The HTTP response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedResponse {
    pub status: u16,
    /// Names as the function gave them; repeats are separate entries (e.g. several `set-cookie`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a result cannot be mapped (API Gateway answers 502).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Lambda proxy response: {0}")]
pub struct MappingError(pub String);

fn malformed(why: impl Into<String>) -> MappingError {
    MappingError(why.into())
}

/// Keys a REST (1.0) result may have; any other key makes it malformed.
const V1_KEYS: [&str; 6] = [
    "statusCode",
    "headers",
    "multiValueHeaders",
    "body",
    "isBase64Encoded",
    "cookies",
];

/// Header values may be strings, numbers or booleans.
fn header_value(name: &str, value: &Value) -> Result<String, MappingError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(malformed(format!("header '{name}' must be a string"))),
    }
}

/// A final status (200–599). A 1xx is no answer to a request (it would leave
/// the client waiting, or switch protocols), so API Gateway treats it as an
/// invalid Lambda response, as any other out-of-range code.
fn status_code(value: Option<&Value>) -> Result<u16, MappingError> {
    let code = match value {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    match code.and_then(|c| u16::try_from(c).ok()) {
        Some(code @ 200..=599) => Ok(code),
        Some(code @ 100..=199) => Err(malformed(format!(
            "statusCode {code} is informational (1xx), not a final response"
        ))),
        _ => Err(malformed(
            "statusCode must be an integer between 200 and 599",
        )),
    }
}

/// `Content-Type` of a REST (1.0) result that names none: API Gateway's REST
/// proxy sends `application/json` (as SAM's local emulation does).
const V1_DEFAULT_CONTENT_TYPE: &str = "application/json";
/// `Content-Type` of an HTTP API (2.0) result without `statusCode` (a plain
/// value): `application/json`, as AWS documents for payload 2.0.
const V2_PLAIN_CONTENT_TYPE: &str = "application/json";
/// `Content-Type` of an HTTP API (2.0) result with `statusCode` that names
/// none. AWS's documentation is silent; HTTP APIs answer
/// `text/plain; charset=utf-8`, and so do we.
const V2_DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Statuses whose responses never carry content (RFC 9110 §15.3.5, §15.4.5).
const NO_CONTENT: [u16; 2] = [204, 304];

/// The response to send: `default_type` as `Content-Type` unless the
/// function named one, and no body for 204 and 304 whatever the function
/// returned as body.
fn response(
    status: u16,
    mut headers: Vec<(String, String)>,
    mut body: Vec<u8>,
    default_type: &str,
) -> MappedResponse {
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type".to_owned(), default_type.to_owned()));
    }
    if NO_CONTENT.contains(&status) {
        body.clear();
    }
    MappedResponse {
        status,
        headers,
        body,
    }
}

fn body_bytes(body: Option<&Value>, base64: Option<&Value>) -> Result<Vec<u8>, MappingError> {
    let encoded = match base64 {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(malformed("isBase64Encoded must be a boolean")),
    };
    let text = match body {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => s,
        Some(_) => return Err(malformed("body must be a string")),
    };
    if encoded {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| malformed("body is not valid base64"))
    } else {
        Ok(text.clone().into_bytes())
    }
}

fn object<'a>(
    fields: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, MappingError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(malformed(format!("{key} must be an object"))),
    }
}

fn cookies(fields: &Map<String, Value>) -> Result<Vec<(String, String)>, MappingError> {
    match fields.get("cookies") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| {
                c.as_str()
                    .map(|c| ("set-cookie".to_owned(), c.to_owned()))
                    .ok_or_else(|| malformed("cookies must be strings"))
            })
            .collect(),
        Some(_) => Err(malformed("cookies must be an array")),
    }
}

/// REST (1.0): `statusCode` required; `multiValueHeaders` win over `headers` for the same name.
fn map_v1(fields: &Map<String, Value>) -> Result<MappedResponse, MappingError> {
    if let Some(extra) = fields.keys().find(|k| !V1_KEYS.contains(&k.as_str())) {
        return Err(malformed(format!("unexpected key '{extra}'")));
    }
    let status = status_code(fields.get("statusCode"))?;
    let multi = object(fields, "multiValueHeaders")?;
    let mut headers = Vec::new();
    if let Some(single) = object(fields, "headers")? {
        for (name, value) in single {
            if !multi.is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(name))) {
                headers.push((name.clone(), header_value(name, value)?));
            }
        }
    }
    for (name, values) in multi.into_iter().flatten() {
        let Value::Array(values) = values else {
            return Err(malformed(format!(
                "multiValueHeaders '{name}' must be an array"
            )));
        };
        for value in values {
            headers.push((name.clone(), header_value(name, value)?));
        }
    }
    headers.extend(cookies(fields)?);
    let body = body_bytes(fields.get("body"), fields.get("isBase64Encoded"))?;
    Ok(response(status, headers, body, V1_DEFAULT_CONTENT_TYPE))
}

/// HTTP API (2.0): a result with `statusCode` is a response; any other JSON is
/// a `200 application/json` body.
fn map_v2(result: Value) -> Result<MappedResponse, MappingError> {
    let fields = match result {
        Value::Object(fields) if fields.contains_key("statusCode") => fields,
        Value::String(text) => return Ok(json_body(text.into_bytes())),
        other => return Ok(json_body(other.to_string().into_bytes())),
    };
    let status = status_code(fields.get("statusCode"))?;
    let mut headers = Vec::new();
    for (name, value) in object(&fields, "headers")?.into_iter().flatten() {
        headers.push((name.clone(), header_value(name, value)?));
    }
    headers.extend(cookies(&fields)?);
    let body = body_bytes(fields.get("body"), fields.get("isBase64Encoded"))?;
    Ok(response(status, headers, body, V2_DEFAULT_CONTENT_TYPE))
}

fn json_body(body: Vec<u8>) -> MappedResponse {
    response(200, Vec::new(), body, V2_PLAIN_CONTENT_TYPE)
}

/// Maps a function's raw result payload.
///
/// `Content-Type`, when the function names none, is what API Gateway sends:
/// `application/json` for REST (1.0) results and for HTTP API (2.0) plain
/// values, `text/plain; charset=utf-8` for 2.0 results with `statusCode`.
/// A 1xx `statusCode` is malformed (API Gateway answers 502); 204 and 304 go
/// out without a body.
pub fn map_result(format: PayloadFormat, payload: &[u8]) -> Result<MappedResponse, MappingError> {
    let result: Value =
        serde_json::from_slice(payload).map_err(|_| malformed("the result is not JSON"))?;
    match format {
        PayloadFormat::V1 => match &result {
            Value::Object(fields) => map_v1(fields),
            _ => Err(malformed("the result must be an object")),
        },
        PayloadFormat::V2 => map_v2(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(json: &str) -> Result<MappedResponse, MappingError> {
        map_result(PayloadFormat::V1, json.as_bytes())
    }

    fn v2(json: &str) -> Result<MappedResponse, MappingError> {
        map_result(PayloadFormat::V2, json.as_bytes())
    }

    #[test]
    fn v1_maps_status_headers_and_body() {
        let r = v1(r#"{"statusCode":201,"headers":{"Content-Type":"text/plain","X-Count":3},"body":"made"}"#).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(
            r.headers,
            vec![
                ("Content-Type".into(), "text/plain".into()),
                ("X-Count".into(), "3".into())
            ]
        );
        assert_eq!(r.body, b"made");
    }

    #[test]
    fn v1_multi_value_headers_win_and_repeat() {
        let r = v1(
            r#"{"statusCode":200,"headers":{"set-cookie":"ignored=1","x-a":"1"},
                "multiValueHeaders":{"Set-Cookie":["a=1","b=2"]},"body":""}"#,
        )
        .unwrap();
        assert_eq!(
            r.headers,
            vec![
                ("x-a".into(), "1".into()),
                ("Set-Cookie".into(), "a=1".into()),
                ("Set-Cookie".into(), "b=2".into()),
                ("content-type".into(), "application/json".into())
            ]
        );
    }

    #[test]
    fn v1_decodes_base64_bodies() {
        let r = v1(r#"{"statusCode":200,"isBase64Encoded":true,"body":"iVBORwD/"}"#).unwrap();
        assert_eq!(r.body, vec![0x89, b'P', b'N', b'G', 0, 0xff]);
        assert!(v1(r#"{"statusCode":200,"isBase64Encoded":true,"body":"not base64!"}"#).is_err());
    }

    #[test]
    fn v1_rejects_what_api_gateway_rejects() {
        for bad in [
            r#""just a string""#,
            r#"{"body":"no status"}"#,
            r#"{"statusCode":"abc"}"#,
            r#"{"statusCode":99}"#,
            r#"{"statusCode":200,"body":{"an":"object"}}"#,
            r#"{"statusCode":200,"headers":{"x":{"nested":1}}}"#,
            r#"{"statusCode":200,"unexpected":true}"#,
            r#"{"statusCode":200,"isBase64Encoded":"yes"}"#,
            "not json",
        ] {
            assert!(v1(bad).is_err(), "{bad} must be rejected");
        }
        assert_eq!(
            v1(r#"{"statusCode":"204"}"#).unwrap().status,
            204,
            "numeric strings are accepted"
        );
        assert!(v1(r#"{"statusCode":204,"body":null}"#)
            .unwrap()
            .body
            .is_empty());
    }

    #[test]
    fn v2_structured_results_with_cookies() {
        let r = v2(r#"{"statusCode":302,"headers":{"location":"/home"},"cookies":["a=1; Path=/","b=2"],"body":""}"#).unwrap();
        assert_eq!(r.status, 302);
        assert_eq!(
            r.headers,
            vec![
                ("location".into(), "/home".into()),
                ("set-cookie".into(), "a=1; Path=/".into()),
                ("set-cookie".into(), "b=2".into()),
                ("content-type".into(), "text/plain; charset=utf-8".into())
            ]
        );
    }

    #[test]
    fn v2_plain_values_become_200_json() {
        let r = v2(r#"{"message":"hi"}"#).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, br#"{"message":"hi"}"#.as_slice())
        );
        assert_eq!(
            r.headers,
            vec![("content-type".into(), "application/json".into())]
        );
        assert_eq!(v2(r#""Hello""#).unwrap().body, b"Hello");
        assert_eq!(v2("42").unwrap().body, b"42");
        assert_eq!(v2("[1,2]").unwrap().body, b"[1,2]");
        assert!(v2("not json").is_err());
        assert!(v2(r#"{"statusCode":700}"#).is_err());
    }

    fn content_type(r: &MappedResponse) -> Vec<&str> {
        r.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    #[test]
    fn a_missing_content_type_is_what_api_gateway_sends() {
        let plain = r#"{"statusCode":200,"body":"hi"}"#;
        assert_eq!(content_type(&v1(plain).unwrap()), ["application/json"]);
        assert_eq!(
            content_type(&v2(plain).unwrap()),
            ["text/plain; charset=utf-8"]
        );
        assert_eq!(
            content_type(&v2(r#"{"a":1}"#).unwrap()),
            ["application/json"]
        );
        assert_eq!(
            content_type(&v2(r#""text""#).unwrap()),
            ["application/json"]
        );
        // The function's own, in any case and from either header map, stays alone.
        for given in [
            r#"{"statusCode":200,"headers":{"CONTENT-TYPE":"text/html"}}"#,
            r#"{"statusCode":200,"multiValueHeaders":{"Content-type":["text/html"]}}"#,
        ] {
            assert_eq!(content_type(&v1(given).unwrap()), ["text/html"], "{given}");
        }
        let r = v2(r#"{"statusCode":200,"headers":{"content-type":"image/png"}}"#).unwrap();
        assert_eq!(content_type(&r), ["image/png"]);
    }

    #[test]
    fn informational_statuses_are_malformed_in_both_formats() {
        for code in ["100", "101", "103", "199", r#""101""#] {
            let result = format!(r#"{{"statusCode":{code},"body":"x"}}"#);
            for mapped in [v1(&result), v2(&result)] {
                let err = mapped.expect_err(&result);
                assert!(err.0.contains("informational"), "{result}: {err}");
            }
        }
        assert_eq!(v1(r#"{"statusCode":200}"#).unwrap().status, 200);
        assert!(v1(r#"{"statusCode":600}"#).is_err());
    }

    #[test]
    fn no_content_and_not_modified_carry_no_body() {
        for status in [204, 304] {
            let text = format!(r#"{{"statusCode":{status},"body":"ignored"}}"#);
            let base64 = format!(
                r#"{{"statusCode":{status},"body":"aWdub3JlZA==","isBase64Encoded":true}}"#
            );
            for result in [&text, &base64] {
                for mapped in [v1(result).unwrap(), v2(result).unwrap()] {
                    assert_eq!(mapped.status, status);
                    assert!(mapped.body.is_empty(), "{result}");
                }
            }
        }
        assert_eq!(
            v1(r#"{"statusCode":205,"body":"kept"}"#).unwrap().body,
            b"kept"
        );
    }
}
