//! SigV4 for the Lambda Invoke API: a request signed by an AWS client
//! (the CLI, boto3, an SDK) is checked against `auth.lambda_access_keys` by
//! signing it again with the key it names (the `aws-sigv4` crate, over the
//! headers the client signed, its time and scope) and comparing signatures.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::LambdaAccessKey;

/// The scheme an AWS client's `Authorization` header starts with.
pub const SCHEME: &str = "AWS4-HMAC-SHA256 ";

/// How far a request's `X-Amz-Date` may be from now (AWS: 15 minutes).
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a signed request was refused, as Lambda names it (all are `403`).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: &'static str,
    pub message: String,
}

fn refuse(kind: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

/// The access keys requests may be signed with, by key id.
#[derive(Debug, Clone, Default)]
pub struct AccessKeys(HashMap<String, String>);

impl AccessKeys {
    pub fn new(keys: &[LambdaAccessKey]) -> Self {
        Self(
            keys.iter()
                .map(|k| (k.access_key_id.clone(), k.secret_access_key.0.clone()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What can be checked before the body is read: the header's form, a
    /// key we know, the service, the time, and that `host`, `x-amz-date`
    /// and every `x-amz-*` header the request carries are signed (an
    /// unsigned one could be changed by whoever replays the request).
    pub fn check(&self, headers: &HeaderMap, now: SystemTime) -> Result<Checked, Refusal> {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix(SCHEME))
            .ok_or_else(|| {
                refuse(
                    "IncompleteSignatureException",
                    "not a SigV4 Authorization header",
                )
            })?;
        let claimed = Authorization::parse(authorization)?;
        let secret = self.0.get(claimed.key_id).ok_or_else(|| {
            refuse(
                "UnrecognizedClientException",
                format!(
                    "The security token included in the request is invalid: access key '{}' is not in auth.lambda_access_keys",
                    claimed.key_id
                ),
            )
        })?;
        if claimed.service != "lambda" {
            return Err(refuse(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to correct service: 'lambda', not '{}'",
                    claimed.service
                ),
            ));
        }
        let signed: Vec<&str> = claimed.signed_headers.split(';').collect();
        for required in ["host", "x-amz-date"] {
            if !signed.contains(&required) {
                return Err(refuse(
                    "IncompleteSignatureException",
                    format!("SignedHeaders must include '{required}'"),
                ));
            }
        }
        for name in headers.keys() {
            if name.as_str().starts_with("x-amz-") && !signed.contains(&name.as_str()) {
                return Err(refuse(
                    "IncompleteSignatureException",
                    format!("header '{name}' is not signed"),
                ));
            }
        }
        let date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| refuse("IncompleteSignatureException", "X-Amz-Date is missing"))?;
        let time = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
            .map_err(|_| {
                refuse(
                    "IncompleteSignatureException",
                    format!("X-Amz-Date '{date}' is not a date"),
                )
            })?
            .and_utc();
        if date.get(..8) != Some(claimed.date) {
            return Err(refuse(
                "InvalidSignatureException",
                "the credential's date is not the request's",
            ));
        }
        let time = SystemTime::from(time);
        let skew = now
            .duration_since(time)
            .or_else(|_| time.duration_since(now))
            .unwrap_or_default();
        if skew > MAX_SKEW {
            return Err(refuse(
                "InvalidSignatureException",
                "Signature expired: the request's X-Amz-Date is more than 15 minutes from the server's time",
            ));
        }
        let mut values = Vec::new();
        let mut token = None;
        for name in &signed {
            let value = headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    refuse(
                        "IncompleteSignatureException",
                        format!("signed header '{name}' is missing"),
                    )
                })?;
            match *name {
                // The signer adds the date and the token itself.
                "x-amz-date" => {}
                "x-amz-security-token" => token = Some(value.to_owned()),
                _ => values.push(((*name).to_owned(), value.to_owned())),
            }
        }
        Ok(Checked {
            key_id: claimed.key_id.to_owned(),
            secret: secret.clone(),
            token,
            region: claimed.region.to_owned(),
            time,
            headers: values,
            signature: claimed.signature.to_owned(),
        })
    }

    /// Checks the signature of a request (`uri`: its path and query).
    #[cfg(test)]
    pub fn verify(
        &self,
        method: &str,
        uri: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), Refusal> {
        self.check(headers, now)?.verify(method, uri, body)
    }
}

/// A request whose signature's claims hold, waiting for its body.
pub struct Checked {
    key_id: String,
    secret: String,
    token: Option<String>,
    region: String,
    time: SystemTime,
    headers: Vec<(String, String)>,
    signature: String,
}

impl Checked {
    /// Signs the request again with the key it names, over what the client
    /// signed, and compares the signatures.
    pub fn verify(&self, method: &str, uri: &str, body: &[u8]) -> Result<(), Refusal> {
        let identity = Credentials::new(
            &self.key_id,
            &self.secret,
            self.token.clone(),
            None,
            "lambda_access_keys",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("lambda")
            .time(self.time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| refuse("IncompleteSignatureException", e.to_string()))?
            .into();
        let headers = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        let request = SignableRequest::new(method, uri, headers, SignableBody::Bytes(body))
            .map_err(|e| refuse("IncompleteSignatureException", e.to_string()))?;
        let expected = sign(request, &params)
            .map_err(|e| refuse("IncompleteSignatureException", e.to_string()))?;
        if bool::from(
            expected
                .signature()
                .as_bytes()
                .ct_eq(self.signature.as_bytes()),
        ) {
            Ok(())
        } else {
            Err(refuse(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            ))
        }
    }
}

/// `Credential=KEY/DATE/REGION/SERVICE/aws4_request, SignedHeaders=…, Signature=…`.
struct Authorization<'a> {
    key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

impl<'a> Authorization<'a> {
    fn parse(text: &'a str) -> Result<Self, Refusal> {
        let mut fields = HashMap::new();
        for part in text.split(',') {
            if let Some((key, value)) = part.trim().split_once('=') {
                fields.insert(key, value);
            }
        }
        let field = |name: &str| {
            fields.get(name).copied().ok_or_else(|| {
                refuse(
                    "IncompleteSignatureException",
                    format!("Authorization header requires '{name}' parameter"),
                )
            })
        };
        let credential = field("Credential")?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [key_id, date, region, service, "aws4_request"] = scope[..] else {
            return Err(refuse(
                "IncompleteSignatureException",
                format!("malformed Credential '{credential}'"),
            ));
        };
        Ok(Self {
            key_id,
            date,
            region,
            service,
            signed_headers: field("SignedHeaders")?,
            signature: field("Signature")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn keys() -> AccessKeys {
        AccessKeys::new(&[LambdaAccessKey {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
        }])
    }

    /// Signs a request the way a client does, with the crate's own signer.
    fn signed(secret: &str, at: SystemTime, body: &[u8]) -> HeaderMap {
        let identity = Credentials::new("AKIDEXAMPLE", secret, None, None, "test").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("lambda")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .expect("params")
            .into();
        let headers = [
            ("host", "127.0.0.1:8080"),
            ("content-type", "application/json"),
        ];
        let request = SignableRequest::new(
            "POST",
            "/2015-03-31/functions/echo/invocations?Qualifier=live",
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .expect("request");
        let (instructions, _) = sign(request, &params).expect("signed").into_parts();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name, value.parse().expect("value"));
        }
        for (name, value) in instructions.headers() {
            let name = axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name");
            map.insert(name, value.parse().expect("value"));
        }
        map
    }

    const URI: &str = "/2015-03-31/functions/echo/invocations?Qualifier=live";

    #[test]
    fn accepts_the_right_key_and_refuses_the_rest() {
        let now = SystemTime::now();
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let headers = signed(secret, now, b"{}");
        assert_eq!(keys().verify("POST", URI, &headers, b"{}", now), Ok(()));
        // Another body, method, path or secret: the signature does not match.
        let kind = |r: Result<(), Refusal>| r.err().map(|r| r.kind);
        assert_eq!(
            kind(keys().verify("POST", URI, &headers, b"{\"x\":1}", now)),
            Some("InvalidSignatureException")
        );
        assert_eq!(
            kind(keys().verify("PUT", URI, &headers, b"{}", now)),
            Some("InvalidSignatureException")
        );
        assert_eq!(
            kind(keys().verify(
                "POST",
                "/2015-03-31/functions/other/invocations",
                &headers,
                b"{}",
                now
            )),
            Some("InvalidSignatureException")
        );
        let wrong = signed("not-the-secret", now, b"{}");
        assert_eq!(
            kind(keys().verify("POST", URI, &wrong, b"{}", now)),
            Some("InvalidSignatureException")
        );
        // Too old.
        let later = now + Duration::from_secs(16 * 60);
        assert_eq!(
            kind(keys().verify("POST", URI, &headers, b"{}", later)),
            Some("InvalidSignatureException")
        );
        // An unknown key, a malformed header.
        assert_eq!(
            kind(AccessKeys::default().verify("POST", URI, &headers, b"{}", now)),
            Some("UnrecognizedClientException")
        );
        // `host` not signed (the signer would take it from a URI that has none).
        let mut unsigned_host = headers.clone();
        let auth = unsigned_host["authorization"]
            .to_str()
            .expect("text")
            .replace(
                "SignedHeaders=content-type;host;x-amz-date",
                "SignedHeaders=content-type;x-amz-date",
            );
        unsigned_host.insert("authorization", auth.parse().expect("value"));
        assert_eq!(
            kind(keys().verify("POST", URI, &unsigned_host, b"{}", now)),
            Some("IncompleteSignatureException")
        );
        // An x-amz-* header added after signing.
        let mut added = headers.clone();
        added.insert("x-amz-invocation-type", "Event".parse().expect("value"));
        assert_eq!(
            kind(keys().verify("POST", URI, &added, b"{}", now)),
            Some("IncompleteSignatureException")
        );
        let mut broken = headers.clone();
        broken.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=x".parse().expect("value"),
        );
        assert_eq!(
            kind(keys().verify("POST", URI, &broken, b"{}", now)),
            Some("IncompleteSignatureException")
        );
    }
}
