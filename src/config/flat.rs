//! The file keeps its sections flat (`[functions] backend = "aws"`,
//! `role_arn = …`): a section's backend keys are taken out of it and turned
//! into the backend's enum ([`super::backends`]), the rest is read as the
//! section's own settings ([`super::sections`]). A backend's keys are ignored
//! while another backend is chosen (an `AWS_LAMBDA_ROLE_ARN` in the
//! environment does not stop a local run); a key no backend has is an error.
//! Writing a section back (for the environment's layering) is the inverse.

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

use super::backends::{
    Architecture, AwsLambdaSettings, BuilderBackend, FunctionsBackend, TierDetailsSource,
};
use super::sections::{BuilderConfig, FunctionsConfig, TierDetailsConfig};

/// Reads a section: takes `keys` (its backend's) out of the table, reads the
/// rest as `T`, and hands both to `choose`.
fn read_section<'de, D, T, B>(
    deserializer: D,
    section: &str,
    keys: &[&str],
    choose: impl FnOnce(&mut Map<String, Value>) -> Result<B, String>,
    attach: impl FnOnce(&mut T, B),
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let mut rest = Map::<String, Value>::deserialize(deserializer)?;
    let mut own: Map<String, Value> = keys
        .iter()
        .filter_map(|key| rest.remove(*key).map(|value| ((*key).to_owned(), value)))
        .collect();
    let mut settings: T = serde_json::from_value(Value::Object(rest))
        .map_err(|e| D::Error::custom(format!("[{section}] {e}")))?;
    let backend = choose(&mut own).map_err(|e| D::Error::custom(format!("[{section}] {e}")))?;
    attach(&mut settings, backend);
    Ok(settings)
}

/// Writes a section back in its file form: its own settings plus its backend's keys.
fn write_section<S: Serializer, T: Serialize>(
    settings: &T,
    backend: Map<String, Value>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let Value::Object(mut map) = serde_json::to_value(settings).map_err(S::Error::custom)? else {
        return Err(S::Error::custom("a section is a table"));
    };
    map.extend(backend);
    map.serialize(serializer)
}

/// A string key of a backend, if given.
fn text(own: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match own.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!("{key}: expected a string, found {other}")),
    }
}

/// A number key of a backend, or its default.
fn number(own: &mut Map<String, Value>, key: &str, default: u64) -> Result<u64, String> {
    match own.remove(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .ok_or_else(|| format!("{key}: expected a whole number, found {value}")),
    }
}

const FUNCTIONS_KEYS: [&str; 3] = ["backend", "role_arn", "architecture"];

pub(super) fn read_functions<'de, D: Deserializer<'de>>(d: D) -> Result<FunctionsConfig, D::Error> {
    read_section(
        d,
        "functions",
        &FUNCTIONS_KEYS,
        |own| {
            let kind = text(own, "backend")?;
            let role_arn = text(own, "role_arn")?;
            let architecture = match text(own, "architecture")? {
                None => None,
                Some(name) => Some(
                    serde_json::from_value::<Architecture>(Value::String(name.clone())).map_err(
                        |_| format!("architecture: '{name}' (expected x86_64 or arm64)"),
                    )?,
                ),
            };
            match kind.as_deref().unwrap_or("local") {
                "local" => Ok(FunctionsBackend::Local),
                "aws" => Ok(FunctionsBackend::Aws(AwsLambdaSettings {
                    role_arn: role_arn.ok_or(
                        "backend = \"aws\" needs role_arn (functions.role_arn, env AWS_LAMBDA_ROLE_ARN)",
                    )?,
                    architecture,
                })),
                other => Err(format!("backend: '{other}' (expected local or aws)")),
            }
        },
        |settings: &mut FunctionsConfig, backend| settings.backend = backend,
    )
}

pub(super) fn write_functions<S: Serializer>(
    settings: &FunctionsConfig,
    s: S,
) -> Result<S::Ok, S::Error> {
    let own = match &settings.backend {
        FunctionsBackend::Local => {
            json!({"backend": "local", "role_arn": null, "architecture": null})
        }
        FunctionsBackend::Aws(aws) => json!({
            "backend": "aws",
            "role_arn": aws.role_arn,
            "architecture": aws.architecture,
        }),
    };
    write_section(settings, as_map(own), s)
}

const BUILDER_KEYS: [&str; 2] = ["backend", "poll_secs"];
/// `builder.poll_secs` when not given.
const DEFAULT_POLL_SECS: u64 = 30;

pub(super) fn read_builder<'de, D: Deserializer<'de>>(d: D) -> Result<BuilderConfig, D::Error> {
    read_section(
        d,
        "builder",
        &BUILDER_KEYS,
        |own| {
            let poll_secs = number(own, "poll_secs", DEFAULT_POLL_SECS)?;
            match text(own, "backend")?.as_deref().unwrap_or("local") {
                "local" => Ok(BuilderBackend::Local),
                "codebuild" if poll_secs == 0 => Err("poll_secs: must be at least 1".to_owned()),
                "codebuild" => Ok(BuilderBackend::CodeBuild { poll_secs }),
                other => Err(format!("backend: '{other}' (expected local or codebuild)")),
            }
        },
        |settings: &mut BuilderConfig, backend| settings.backend = backend,
    )
}

pub(super) fn write_builder<S: Serializer>(
    settings: &BuilderConfig,
    s: S,
) -> Result<S::Ok, S::Error> {
    let own = match &settings.backend {
        BuilderBackend::Local => json!({"backend": "local", "poll_secs": DEFAULT_POLL_SECS}),
        BuilderBackend::CodeBuild { poll_secs } => {
            json!({"backend": "codebuild", "poll_secs": poll_secs})
        }
    };
    write_section(settings, as_map(own), s)
}

const TIER_KEYS: [&str; 3] = ["source", "table", "cache_ttl_secs"];
/// `tier_details.cache_ttl_secs` when not given.
const DEFAULT_CACHE_TTL_SECS: u64 = 60;

pub(super) fn read_tier_details<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<TierDetailsConfig, D::Error> {
    read_section(
        d,
        "tier_details",
        &TIER_KEYS,
        |own| {
            let table = text(own, "table")?;
            let cache_ttl_secs = number(own, "cache_ttl_secs", DEFAULT_CACHE_TTL_SECS)?;
            match text(own, "source")?.as_deref().unwrap_or("config") {
                "config" => Ok(TierDetailsSource::Config),
                "dynamodb" => Ok(TierDetailsSource::DynamoDb {
                    table: table.ok_or(
                        "source = \"dynamodb\" needs table (tier_details.table, env TIER_DETAILS_TABLE)",
                    )?,
                    cache_ttl_secs,
                }),
                other => Err(format!("source: '{other}' (expected config or dynamodb)")),
            }
        },
        |settings: &mut TierDetailsConfig, source| settings.source = source,
    )
}

pub(super) fn write_tier_details<S: Serializer>(
    settings: &TierDetailsConfig,
    s: S,
) -> Result<S::Ok, S::Error> {
    let own = match &settings.source {
        TierDetailsSource::Config => {
            json!({"source": "config", "table": null, "cache_ttl_secs": DEFAULT_CACHE_TTL_SECS})
        }
        TierDetailsSource::DynamoDb {
            table,
            cache_ttl_secs,
        } => json!({"source": "dynamodb", "table": table, "cache_ttl_secs": cache_ttl_secs}),
    };
    write_section(settings, as_map(own), s)
}

fn as_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
