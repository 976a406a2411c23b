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

    /// Checks the signature of a request (`uri`: its path and query).
    pub fn verify(
        &self,
        method: &str,
        uri: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), Refusal> {
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
        if !date.starts_with(claimed.date) {
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
        // Exactly the headers the client signed (the signer adds the date itself).
        let mut signed: Vec<(&str, &str)> = Vec::new();
        for name in claimed.signed_headers.split(';') {
            if name == "x-amz-date" {
                continue;
            }
            let value = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    refuse(
                        "IncompleteSignatureException",
                        format!("signed header '{name}' is missing"),
                    )
                })?;
            signed.push((name, value));
        }
        let token = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .filter(|_| {
                claimed
                    .signed_headers
                    .split(';')
                    .any(|h| h == "x-amz-security-token")
            })
            .map(str::to_owned);
        // The signer adds the token itself when the credentials carry one.
        signed.retain(|(name, _)| *name != "x-amz-security-token");
        let identity =
            Credentials::new(claimed.key_id, secret, token, None, "lambda_access_keys").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(claimed.region)
            .name(claimed.service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| refuse("IncompleteSignatureException", e.to_string()))?
            .into();
        let request =
            SignableRequest::new(method, uri, signed.into_iter(), SignableBody::Bytes(body))
                .map_err(|e| refuse("IncompleteSignatureException", e.to_string()))?;
        let expected = sign(request, &params)
            .map_err(|e| refuse("IncompleteSignatureException", e.to_string()))?;
        if bool::from(
            expected
                .signature()
                .as_bytes()
                .ct_eq(claimed.signature.as_bytes()),
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
