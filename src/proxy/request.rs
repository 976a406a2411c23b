//! HTTP request → API Gateway proxy event (REST v1 or HTTP API v2).

use std::borrow::Cow;

use base64::Engine;
use chrono::{Datelike, Timelike};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// What the proxy knows of one request.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    pub method: String,
    /// The path as received, without the query.
    pub path: String,
    /// The query string as received, without `?`.
    pub raw_query: String,
    /// Header names (lowercase, as HTTP/1 servers see them) and values, in order, repeats kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub source_ip: String,
    /// The `Host` header's name part, e.g. `shop.localhost`.
    pub domain_name: String,
    /// The app name, the first label of the host.
    pub domain_prefix: String,
    pub request_id: String,
    pub time_epoch_ms: i64,
}

/// Content types sent as text; anything else that is not UTF-8 goes as base64.
fn is_text_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
                | ""
        )
}

impl IncomingRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `(body, isBase64Encoded)`: text when it is UTF-8 of a textual type, else base64.
    fn body(&self) -> (Option<Cow<'_, str>>, bool) {
        if self.body.is_empty() {
            return (None, false);
        }
        let text_type = is_text_type(self.header("content-type").unwrap_or_default());
        match std::str::from_utf8(&self.body) {
            Ok(text) if text_type => (Some(Cow::Borrowed(text)), false),
            _ => (
                Some(Cow::Owned(
                    base64::engine::general_purpose::STANDARD.encode(&self.body),
                )),
                true,
            ),
        }
    }

    fn query_pairs(&self) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
        form_urlencoded::parse(self.raw_query.as_bytes()).collect()
    }
}

/// Values grouped by name, names in order of first appearance (requests
/// carry a few dozen at most, so a linear search beats hashing).
struct Grouped<'a>(Vec<(&'a str, Vec<&'a str>)>);

impl<'a> Grouped<'a> {
    fn of(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for (name, value) in pairs {
            match groups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => groups.push((name, vec![value])),
            }
        }
        Self(groups)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last value per name (REST's `headers`, `queryStringParameters`).
    fn last(&self) -> Option<LastValues<'_>> {
        (!self.is_empty()).then_some(LastValues(self))
    }

    /// Every value per name (REST's `multiValue…` maps).
    fn all(&self) -> Option<AllValues<'_>> {
        (!self.is_empty()).then_some(AllValues(self))
    }

    /// Repeats joined with commas (HTTP API's rule).
    fn joined(&self) -> JoinedValues<'_> {
        JoinedValues(self)
    }
}

struct LastValues<'a>(&'a Grouped<'a>);
struct AllValues<'a>(&'a Grouped<'a>);
struct JoinedValues<'a>(&'a Grouped<'a>);

impl Serialize for LastValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                 .0
                .iter()
                .map(|(name, values)| (name, values.last().copied().unwrap_or_default())),
        )
    }
}

impl Serialize for AllValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0 .0.iter().map(|(name, values)| (name, values)))
    }
}

impl Serialize for JoinedValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0 .0.len()))?;
        for (name, values) in &self.0 .0 {
            match values.as_slice() {
                [one] => map.serialize_entry(name, one)?,
                many => map.serialize_entry(name, &many.join(","))?,
            }
        }
        map.end()
    }
}

/// API Gateway's `requestTime`, e.g. `23/Nov/2025:10:00:00 +0000`.
fn request_time(epoch_ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = chrono::DateTime::from_timestamp_millis(epoch_ms).unwrap_or_default();
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        t.day(),
        MONTHS[t.month0() as usize % 12],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventV1<'a> {
    resource: &'a str,
    path: &'a str,
    http_method: &'a str,
    headers: Option<LastValues<'a>>,
    multi_value_headers: Option<AllValues<'a>>,
    query_string_parameters: Option<LastValues<'a>>,
    multi_value_query_string_parameters: Option<AllValues<'a>>,
    path_parameters: Option<ProxyParameter<'a>>,
    stage_variables: Option<()>,
    request_context: ContextV1<'a>,
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
struct ProxyParameter<'a> {
    proxy: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContextV1<'a> {
    account_id: &'a str,
    api_id: &'a str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    extended_request_id: &'a str,
    http_method: &'a str,
    identity: Identity<'a>,
    path: &'a str,
    protocol: &'a str,
    request_id: &'a str,
    request_time: String,
    request_time_epoch: i64,
    resource_id: &'a str,
    resource_path: &'a str,
    stage: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    access_key: Option<()>,
    account_id: Option<()>,
    caller: Option<()>,
    cognito_authentication_provider: Option<()>,
    cognito_authentication_type: Option<()>,
    cognito_identity_id: Option<()>,
    cognito_identity_pool_id: Option<()>,
    principal_org_id: Option<()>,
    source_ip: &'a str,
    user: Option<()>,
    user_agent: Option<&'a str>,
    user_arn: Option<()>,
    client_cert: Option<()>,
}

const ACCOUNT_ID: &str = "000000000000";
const API_ID: &str = "local";
const STAGE: &str = "$default";
const PROTOCOL: &str = "HTTP/1.1";

fn to_json(event: &impl Serialize) -> Vec<u8> {
    // Only strings, numbers and maps with string keys: serializing cannot fail.
    serde_json::to_vec(event).unwrap_or_else(|_| b"null".to_vec())
}

/// The REST API (payload 1.0) event, as a `{proxy+}` resource on stage
/// `$default`, serialized.
pub fn event_v1(request: &IncomingRequest) -> Vec<u8> {
    let headers = Grouped::of(
        request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let pairs = request.query_pairs();
    let query = Grouped::of(pairs.iter().map(|(n, v)| (n.as_ref(), v.as_ref())));
    let (body, is_base64_encoded) = request.body();
    let proxy = request.path.trim_start_matches('/');
    to_json(&EventV1 {
        resource: "/{proxy+}",
        path: &request.path,
        http_method: &request.method,
        headers: headers.last(),
        multi_value_headers: headers.all(),
        query_string_parameters: query.last(),
        multi_value_query_string_parameters: query.all(),
        path_parameters: (!proxy.is_empty()).then_some(ProxyParameter { proxy }),
        stage_variables: None,
        request_context: ContextV1 {
            account_id: ACCOUNT_ID,
            api_id: API_ID,
            domain_name: &request.domain_name,
            domain_prefix: &request.domain_prefix,
            extended_request_id: &request.request_id,
            http_method: &request.method,
            identity: Identity {
                access_key: None,
                account_id: None,
                caller: None,
                cognito_authentication_provider: None,
                cognito_authentication_type: None,
                cognito_identity_id: None,
                cognito_identity_pool_id: None,
                principal_org_id: None,
                source_ip: &request.source_ip,
                user: None,
                user_agent: request.header("user-agent"),
                user_arn: None,
                client_cert: None,
            },
            path: &request.path,
            protocol: PROTOCOL,
            request_id: &request.request_id,
            request_time: request_time(request.time_epoch_ms),
            request_time_epoch: request.time_epoch_ms,
            resource_id: "proxy",
            resource_path: "/{proxy+}",
            stage: STAGE,
        },
        body,
        is_base64_encoded,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventV2<'a> {
    version: &'a str,
    route_key: &'a str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    headers: JoinedValues<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_string_parameters: Option<JoinedValues<'a>>,
    request_context: ContextV2<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContextV2<'a> {
    account_id: &'a str,
    api_id: &'a str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    http: HttpV2<'a>,
    request_id: &'a str,
    route_key: &'a str,
    stage: &'a str,
    time: String,
    time_epoch: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpV2<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'a str,
    source_ip: &'a str,
    user_agent: Option<&'a str>,
}

/// The HTTP API (payload 2.0) event, as a `$default` route (as Function URLs
/// send it), serialized.
pub fn event_v2(request: &IncomingRequest) -> Vec<u8> {
    let is_cookie = |name: &str| name.eq_ignore_ascii_case("cookie");
    let cookies: Vec<&str> = request
        .headers
        .iter()
        .filter(|(name, _)| is_cookie(name))
        .flat_map(|(_, value)| value.split(';').map(str::trim).filter(|c| !c.is_empty()))
        .collect();
    // HTTP/1 servers hand names over in lowercase already; others are lowered here.
    let lowered: Vec<(Cow<'_, str>, &str)> = request
        .headers
        .iter()
        .filter(|(name, _)| !is_cookie(name))
        .map(|(n, v)| {
            let name = if n.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(n.to_ascii_lowercase())
            } else {
                Cow::Borrowed(n.as_str())
            };
            (name, v.as_str())
        })
        .collect();
    let headers = Grouped::of(lowered.iter().map(|(n, v)| (n.as_ref(), *v)));
    let pairs = request.query_pairs();
    let query = Grouped::of(pairs.iter().map(|(n, v)| (n.as_ref(), v.as_ref())));
    let (body, is_base64_encoded) = request.body();
    to_json(&EventV2 {
        version: "2.0",
        route_key: STAGE,
        raw_path: &request.path,
        raw_query_string: &request.raw_query,
        cookies,
        headers: headers.joined(),
        query_string_parameters: (!query.is_empty()).then(|| query.joined()),
        request_context: ContextV2 {
            account_id: ACCOUNT_ID,
            api_id: API_ID,
            domain_name: &request.domain_name,
            domain_prefix: &request.domain_prefix,
            http: HttpV2 {
                method: &request.method,
                path: &request.path,
                protocol: PROTOCOL,
                source_ip: &request.source_ip,
                user_agent: request.header("user-agent"),
            },
            request_id: &request.request_id,
            route_key: STAGE,
            stage: STAGE,
            time: request_time(request.time_epoch_ms),
            time_epoch: request.time_epoch_ms,
        },
        body,
        is_base64_encoded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn v1(request: &IncomingRequest) -> Value {
        serde_json::from_slice(&event_v1(request)).unwrap()
    }

    fn v2(request: &IncomingRequest) -> Value {
        serde_json::from_slice(&event_v2(request)).unwrap()
    }

    fn request() -> IncomingRequest {
        IncomingRequest {
            method: "GET".into(),
            path: "/items/42".into(),
            raw_query: "a=1&b=x%20y&a=2&plus=c+d".into(),
            headers: vec![
                ("host".into(), "shop.localhost:8080".into()),
                ("accept".into(), "text/html".into()),
                ("accept".into(), "application/json".into()),
                ("cookie".into(), "s=1; theme=dark".into()),
                ("user-agent".into(), "curl/8".into()),
            ],
            body: Vec::new(),
            source_ip: "127.0.0.1".into(),
            domain_name: "shop.localhost".into(),
            domain_prefix: "shop".into(),
            request_id: "req-1".into(),
            time_epoch_ms: 1_763_892_000_000,
        }
    }

    #[test]
    fn v1_keeps_repeats_in_multi_value_maps_and_the_last_in_single_maps() {
        let e = v1(&request());
        assert_eq!(e["httpMethod"], "GET");
        assert_eq!(e["path"], "/items/42");
        assert_eq!(e["resource"], "/{proxy+}");
        assert_eq!(e["pathParameters"], json!({"proxy": "items/42"}));
        assert_eq!(e["headers"]["accept"], "application/json");
        assert_eq!(
            e["multiValueHeaders"]["accept"],
            json!(["text/html", "application/json"])
        );
        assert_eq!(
            e["queryStringParameters"],
            json!({"a": "2", "b": "x y", "plus": "c d"})
        );
        assert_eq!(e["multiValueQueryStringParameters"]["a"], json!(["1", "2"]));
        assert_eq!(e["body"], Value::Null);
        assert_eq!(e["isBase64Encoded"], false);
        assert_eq!(e["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
        assert_eq!(e["requestContext"]["identity"]["userAgent"], "curl/8");
        assert_eq!(
            e["requestContext"]["requestTimeEpoch"],
            1_763_892_000_000i64
        );
        assert_eq!(
            e["requestContext"]["requestTime"],
            "23/Nov/2025:10:00:00 +0000"
        );
        assert_eq!(e["stageVariables"], Value::Null);
    }

    #[test]
    fn v1_absent_maps_are_null_and_root_has_no_path_parameters() {
        let mut r = request();
        r.raw_query.clear();
        r.path = "/".into();
        let e = v1(&r);
        assert_eq!(e["queryStringParameters"], Value::Null);
        assert_eq!(e["multiValueQueryStringParameters"], Value::Null);
        assert_eq!(e["pathParameters"], Value::Null);
    }

    #[test]
    fn v2_joins_repeats_with_commas_and_moves_cookies() {
        let e = v2(&request());
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "$default");
        assert_eq!(e["rawPath"], "/items/42");
        assert_eq!(e["rawQueryString"], "a=1&b=x%20y&a=2&plus=c+d");
        assert_eq!(e["headers"]["accept"], "text/html,application/json");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["cookies"], json!(["s=1", "theme=dark"]));
        assert_eq!(e["queryStringParameters"]["a"], "1,2");
        assert_eq!(e["requestContext"]["http"]["method"], "GET");
        assert_eq!(e["requestContext"]["http"]["sourceIp"], "127.0.0.1");
        assert!(e.get("multiValueHeaders").is_none());
        assert!(e.get("body").is_none());
    }

    #[test]
    fn binary_bodies_are_base64_and_text_bodies_are_not() {
        let mut r = request();
        r.method = "POST".into();
        r.headers
            .push(("content-type".into(), "application/json".into()));
        r.body = br#"{"text":"hi"}"#.to_vec();
        let e = v1(&r);
        assert_eq!(
            (e["body"].as_str(), e["isBase64Encoded"].as_bool()),
            (Some(r#"{"text":"hi"}"#), Some(false))
        );

        r.headers.push(("content-type".into(), "image/png".into()));
        r.body = vec![0x89, b'P', b'N', b'G', 0, 0xff];
        for e in [v1(&r), v2(&r)] {
            assert_eq!(e["isBase64Encoded"], true);
            assert_eq!(e["body"], "iVBORwD/");
        }
        // Textual type but not UTF-8: still base64.
        r.headers.push(("content-type".into(), "text/plain".into()));
        r.body = vec![0xff, 0xfe];
        assert_eq!(v1(&r)["isBase64Encoded"], true);
    }

    #[test]
    fn v1_has_every_field_api_gateway_sends_in_its_order() {
        let e = v1(&request());
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&e),
            [
                "resource",
                "path",
                "httpMethod",
                "headers",
                "multiValueHeaders",
                "queryStringParameters",
                "multiValueQueryStringParameters",
                "pathParameters",
                "stageVariables",
                "requestContext",
                "body",
                "isBase64Encoded"
            ]
        );
        assert_eq!(
            keys(&e["requestContext"]),
            [
                "accountId",
                "apiId",
                "domainName",
                "domainPrefix",
                "extendedRequestId",
                "httpMethod",
                "identity",
                "path",
                "protocol",
                "requestId",
                "requestTime",
                "requestTimeEpoch",
                "resourceId",
                "resourcePath",
                "stage"
            ]
        );
        let identity = &e["requestContext"]["identity"];
        assert_eq!(identity.as_object().unwrap().len(), 13);
        assert_eq!(identity["cognitoIdentityPoolId"], Value::Null);
        assert_eq!(e["requestContext"]["stage"], "$default");
        assert_eq!(
            keys(&e["headers"]),
            ["host", "accept", "cookie", "user-agent"],
            "names in order of first appearance"
        );
        let mut r = request();
        r.headers.retain(|(n, _)| n != "user-agent");
        assert_eq!(
            v1(&r)["requestContext"]["identity"]["userAgent"],
            Value::Null
        );
        assert_eq!(v2(&r)["requestContext"]["http"]["userAgent"], Value::Null);
    }

    #[test]
    fn v2_lowers_header_names_and_omits_absent_parts() {
        let mut r = request();
        r.headers = vec![
            ("X-Trace".into(), "a".into()),
            ("x-trace".into(), "b".into()),
        ];
        r.raw_query.clear();
        let e = v2(&r);
        assert_eq!(e["headers"], json!({"x-trace": "a,b"}));
        assert!(e.get("cookies").is_none() && e.get("queryStringParameters").is_none());
        assert_eq!(e["requestContext"]["time"], "23/Nov/2025:10:00:00 +0000");
        assert_eq!(e["requestContext"]["timeEpoch"], 1_763_892_000_000i64);
    }
}
