//! Tier details from DynamoDB, as the ARC SaaS orchestrator sandbox reads
//! them: `Query` on `TIER_DETAILS_TABLE` with `tier = :tier` (a string
//! partition key); the item's attributes become the details, `jobName`
//! standing in for `jobIdentifier`. Answers are cached for a short time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use serde_json::{Map, Number, Value};

use super::{TierDetails, TierError, TierSource, JOB_IDENTIFIER};

/// The ARC SaaS sandbox's name for the provisioning job.
const JOB_NAME: &str = "jobName";

pub struct DynamoDbTiers {
    client: aws_sdk_dynamodb::Client,
    table: String,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, TierDetails)>>,
}

impl DynamoDbTiers {
    pub fn new(config: &aws_config::SdkConfig, table: String, ttl: Duration) -> Self {
        Self {
            client: aws_sdk_dynamodb::Client::new(config),
            table,
            ttl,
            cache: Mutex::default(),
        }
    }

    fn cached(&self, tier: &str) -> Option<TierDetails> {
        let cache = self.cache.lock().ok()?;
        let (at, details) = cache.get(tier)?;
        (at.elapsed() < self.ttl).then(|| details.clone())
    }

    fn remember(&self, details: &TierDetails) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (at, _)| at.elapsed() < self.ttl);
            cache.insert(details.tier.clone(), (Instant::now(), details.clone()));
        }
    }
}

#[async_trait]
impl TierSource for DynamoDbTiers {
    fn name(&self) -> &'static str {
        "dynamodb"
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tier = %tier, table = %self.table), err(level = "debug"))]
    async fn get(&self, tier: &str) -> Result<TierDetails, TierError> {
        if let Some(details) = self.cached(tier) {
            return Ok(details);
        }
        let answer = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#tier = :tier")
            .expression_attribute_names("#tier", "tier")
            .expression_attribute_values(":tier", AttributeValue::S(tier.to_owned()))
            .limit(1)
            .send()
            .await
            .map_err(|err| self.error(err))?;
        let item = answer.items().first().ok_or_else(|| {
            TierError::NotFound(format!(
                "unknown tier '{tier}': no item with tier = '{tier}' in DynamoDB table '{}'",
                self.table
            ))
        })?;
        let details = TierDetails {
            tier: tier.to_owned(),
            values: item_values(item),
        };
        self.remember(&details);
        Ok(details)
    }
}

impl DynamoDbTiers {
    fn error<
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    >(
        &self,
        err: SdkError<E, R>,
    ) -> TierError {
        match &err {
            SdkError::ServiceError(service) => {
                let (code, message) = (service.err().code(), service.err().message());
                match code {
                    Some("ResourceNotFoundException") => TierError::NotFound(format!(
                        "DynamoDB table '{}' does not exist (tier_details.table / TIER_DETAILS_TABLE)",
                        self.table
                    )),
                    Some("ValidationException") => TierError::NotFound(format!(
                        "DynamoDB table '{}' cannot be queried by tier: {}",
                        self.table,
                        message.unwrap_or_default()
                    )),
                    _ => TierError::Unavailable {
                        message: format!(
                            "DynamoDB {}: {}",
                            code.unwrap_or("error"),
                            message.unwrap_or_default()
                        ),
                        cause: None,
                    },
                }
            }
            _ => TierError::Unavailable {
                message: "DynamoDB unreachable".into(),
                cause: Some(err.into()),
            },
        }
    }
}

/// The item as tier details: `tier` itself dropped, `jobName` accepted for `jobIdentifier`.
fn item_values(item: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    let mut values: Map<String, Value> = item
        .iter()
        .filter(|(key, _)| key.as_str() != "tier")
        .map(|(key, value)| (key.clone(), to_json(value)))
        .collect();
    if !values.contains_key(JOB_IDENTIFIER) {
        if let Some(job) = values.get(JOB_NAME).cloned() {
            values.insert(JOB_IDENTIFIER.to_owned(), job);
        }
    }
    values
}

/// A DynamoDB attribute as JSON (numbers stay numbers, binary becomes base64).
fn to_json(value: &AttributeValue) -> Value {
    let number = |n: &str| {
        n.parse::<i64>()
            .map(Number::from)
            .ok()
            .or_else(|| n.parse::<f64>().ok().and_then(Number::from_f64))
            .map_or_else(|| Value::String(n.to_owned()), Value::Number)
    };
    let binary = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    match value {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => number(n),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::M(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
        AttributeValue::L(items) => Value::Array(items.iter().map(to_json).collect()),
        AttributeValue::Ss(items) => items.iter().cloned().map(Value::String).collect(),
        AttributeValue::Ns(items) => items.iter().map(|n| number(n)).collect(),
        AttributeValue::B(blob) => binary(blob.as_ref()),
        AttributeValue::Bs(blobs) => blobs.iter().map(|b| binary(b.as_ref())).collect(),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_details_with_job_name_as_job_identifier() {
        let item = HashMap::from([
            ("tier".to_owned(), AttributeValue::S("basic".into())),
            (
                "jobName".to_owned(),
                AttributeValue::S("provision-basic".into()),
            ),
            ("size".to_owned(), AttributeValue::N("3".into())),
            ("ratio".to_owned(), AttributeValue::N("0.5".into())),
            ("ha".to_owned(), AttributeValue::Bool(true)),
            (
                "db".to_owned(),
                AttributeValue::M(HashMap::from([(
                    "engine".to_owned(),
                    AttributeValue::S("postgres".into()),
                )])),
            ),
        ]);
        let values = item_values(&item);
        assert_eq!(
            Value::Object(values),
            serde_json::json!({
                "jobName": "provision-basic", "jobIdentifier": "provision-basic",
                "size": 3, "ratio": 0.5, "ha": true, "db": {"engine": "postgres"}
            })
        );
    }
}
