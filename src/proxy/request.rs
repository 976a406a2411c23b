//! HTTP request → API Gateway proxy event (REST v1 or HTTP API v2).

use base64::Engine;
use serde_json::{json, Map, Value};

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
    fn body(&self) -> (Value, bool) {
        if self.body.is_empty() {
            return (Value::Null, false);
        }
        let text_type = is_text_type(self.header("content-type").unwrap_or_default());
        match std::str::from_utf8(&self.body) {
            Ok(text) if text_type => (Value::String(text.to_owned()), false),
            _ => (
                Value::String(base64::engine::general_purpose::STANDARD.encode(&self.body)),
                true,
            ),
        }
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.raw_query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn user_agent(&self) -> Value {
        self.header("user-agent")
            .map_or(Value::Null, |ua| Value::String(ua.to_owned()))
    }
}

/// Last value per name, and every value per name.
fn single_and_multi(pairs: &[(String, String)]) -> (Value, Value) {
    if pairs.is_empty() {
        return (Value::Null, Value::Null);
    }
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in pairs {
        single.insert(name.clone(), json!(value));
        match multi.get_mut(name) {
            Some(Value::Array(values)) => values.push(json!(value)),
            _ => {
                multi.insert(name.clone(), json!([value]));
            }
        }
    }
    (Value::Object(single), Value::Object(multi))
}

/// Repeated names joined with commas (HTTP API's rule).
fn comma_joined(pairs: impl Iterator<Item = (String, String)>) -> Option<Map<String, Value>> {
    let mut joined: Map<String, Value> = Map::new();
    for (name, value) in pairs {
        match joined.get_mut(&name) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                joined.insert(name, Value::String(value));
            }
        }
    }
    (!joined.is_empty()).then_some(joined)
}

fn request_time(epoch_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(epoch_ms)
        .unwrap_or_default()
        .format("%d/%b/%Y:%H:%M:%S %z")
        .to_string()
}

/// The REST API (payload 1.0) event, as a `{proxy+}` resource on stage `$default`.
pub fn event_v1(request: &IncomingRequest) -> Value {
    let (headers, multi_headers) = single_and_multi(&request.headers);
    let (query, multi_query) = single_and_multi(&request.query_pairs());
    let (body, base64) = request.body();
    let proxy = request.path.trim_start_matches('/');
    json!({
        "resource": "/{proxy+}",
        "path": request.path,
        "httpMethod": request.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": if proxy.is_empty() { Value::Null } else { json!({"proxy": proxy}) },
        "stageVariables": null,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": request.domain_name,
            "domainPrefix": request.domain_prefix,
            "extendedRequestId": request.request_id,
            "httpMethod": request.method,
            "identity": {
                "accessKey": null, "accountId": null, "caller": null, "cognitoAuthenticationProvider": null,
                "cognitoAuthenticationType": null, "cognitoIdentityId": null, "cognitoIdentityPoolId": null,
                "principalOrgId": null, "sourceIp": request.source_ip, "user": null,
                "userAgent": request.user_agent(), "userArn": null, "clientCert": null,
            },
            "path": request.path,
            "protocol": "HTTP/1.1",
            "requestId": request.request_id,
            "requestTime": request_time(request.time_epoch_ms),
            "requestTimeEpoch": request.time_epoch_ms,
            "resourceId": "proxy",
            "resourcePath": "/{proxy+}",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": base64,
    })
}

/// The HTTP API (payload 2.0) event, as a `$default` route (as Function URLs send it).
pub fn event_v2(request: &IncomingRequest) -> Value {
    let cookies: Vec<String> = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, value)| {
            value
                .split(';')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    let headers = comma_joined(
        request
            .headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("cookie"))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone())),
    );
    let query = comma_joined(request.query_pairs().into_iter());
    let (body, base64) = request.body();
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": request.path,
        "rawQueryString": request.raw_query,
        "headers": headers.unwrap_or_default(),
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": request.domain_name,
            "domainPrefix": request.domain_prefix,
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.source_ip,
                "userAgent": request.user_agent(),
            },
            "requestId": request.request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": request_time(request.time_epoch_ms),
            "timeEpoch": request.time_epoch_ms,
        },
        "isBase64Encoded": base64,
    });
    let fields = event.as_object_mut().unwrap_or_else(|| unreachable!());
    if !cookies.is_empty() {
        fields.insert("cookies".into(), json!(cookies));
    }
    if let Some(query) = query {
        fields.insert("queryStringParameters".into(), Value::Object(query));
    }
    if !body.is_null() {
        fields.insert("body".into(), body);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = event_v1(&request());
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
        let e = event_v1(&r);
        assert_eq!(e["queryStringParameters"], Value::Null);
        assert_eq!(e["multiValueQueryStringParameters"], Value::Null);
        assert_eq!(e["pathParameters"], Value::Null);
    }

    #[test]
    fn v2_joins_repeats_with_commas_and_moves_cookies() {
        let e = event_v2(&request());
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
        let e = event_v1(&r);
        assert_eq!(
            (e["body"].as_str(), e["isBase64Encoded"].as_bool()),
            (Some(r#"{"text":"hi"}"#), Some(false))
        );

        r.headers.push(("content-type".into(), "image/png".into()));
        r.body = vec![0x89, b'P', b'N', b'G', 0, 0xff];
        for e in [event_v1(&r), event_v2(&r)] {
            assert_eq!(e["isBase64Encoded"], true);
            assert_eq!(e["body"], "iVBORwD/");
        }
        // Textual type but not UTF-8: still base64.
        r.headers.push(("content-type".into(), "text/plain".into()));
        r.body = vec![0xff, 0xfe];
        assert_eq!(event_v1(&r)["isBase64Encoded"], true);
    }
}
