//! What a function is, as both the app service (`apps/`) and the function
//! backends (`functions/`) see it: the app's name, its runtime and its
//! validated configuration. It sits below both, so neither imports the other
//! for these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::proxy::PayloadFormat;

/// A validated app name: a lowercase DNS label (so it can be a subdomain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

impl AppName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok_chars = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if name.is_empty()
            || name.len() > 63
            || !ok_chars
            || name.starts_with('-')
            || name.ends_with('-')
        {
            return Err(format!(
                "invalid app name '{}': use 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
                name.escape_debug()
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Reading the store's column (see `AppRecord`'s `FromRow`).
impl TryFrom<String> for AppName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        Self::parse(&name)
    }
}

impl std::fmt::Display for AppName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a runtime runs code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Node,
    Python,
    /// The zip's own `bootstrap`.
    Provided,
}

const RUNTIMES: [(&str, RuntimeKind); 11] = [
    ("nodejs18.x", RuntimeKind::Node),
    ("nodejs20.x", RuntimeKind::Node),
    ("nodejs22.x", RuntimeKind::Node),
    ("nodejs24.x", RuntimeKind::Node),
    ("python3.9", RuntimeKind::Python),
    ("python3.10", RuntimeKind::Python),
    ("python3.11", RuntimeKind::Python),
    ("python3.12", RuntimeKind::Python),
    ("python3.13", RuntimeKind::Python),
    ("provided.al2", RuntimeKind::Provided),
    ("provided.al2023", RuntimeKind::Provided),
];

/// A runtime we run, as the OpenAPI document lists them.
pub struct RuntimeName;

impl utoipa::PartialSchema for RuntimeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(runtime_names()))
            .description(Some("A Lambda runtime identifier this service runs."))
            .into()
    }
}

impl ToSchema for RuntimeName {}

/// The runtime identifiers we run, in the order the API lists them.
pub fn runtime_names() -> impl Iterator<Item = &'static str> {
    RUNTIMES.iter().map(|(name, _)| *name)
}

/// The kind of a runtime name, if it is one we run.
pub fn runtime_kind(runtime: &str) -> Option<RuntimeKind> {
    RUNTIMES
        .iter()
        .find(|(name, _)| *name == runtime)
        .map(|(_, kind)| *kind)
}

/// A function's configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionConfig {
    pub runtime: String,
    pub handler: String,
    pub environment: BTreeMap<String, String>,
    pub memory_size: u32,
    pub timeout: u32,
    pub payload_format: PayloadFormat,
    /// Where the platform takes the code from when it is not the stored zip
    /// (the AWS backend: an S3 object, a container image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeLocation>,
}

/// An object in S3 holding a zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Location {
    pub bucket: String,
    pub key: String,
    /// A version of the object (versioned buckets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// How a container image is run (Lambda's `ImageConfig`); each unset part is the image's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
}

/// Code the platform fetches itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CodeLocation {
    /// A zip in S3 (Lambda's `S3Bucket`/`S3Key`/`S3ObjectVersion`).
    S3(S3Location),
    /// A container image (Lambda's `PackageType: Image`).
    #[serde(rename_all = "camelCase")]
    Image {
        uri: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<ImageConfig>,
    },
}

/// Reading the store's column (see `AppRecord`'s `FromRow`).
impl TryFrom<String> for FunctionConfig {
    type Error = serde_json::Error;
    fn try_from(text: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str(&text)
    }
}

impl FunctionConfig {
    pub fn kind(&self) -> RuntimeKind {
        runtime_kind(&self.runtime).unwrap_or(RuntimeKind::Provided)
    }

    /// Files one of which must exist for the handler to load.
    pub fn handler_files(&self) -> Vec<String> {
        match self.kind() {
            RuntimeKind::Provided => vec!["bootstrap".into()],
            kind => {
                let module = self.handler.rsplit_once('.').map_or("", |(m, _)| m);
                match kind {
                    RuntimeKind::Node => [".js", ".mjs", ".cjs"]
                        .iter()
                        .map(|ext| format!("{module}{ext}"))
                        .collect(),
                    _ => {
                        let path = if module.contains('/') {
                            module.to_owned()
                        } else {
                            module.replace('.', "/")
                        };
                        vec![format!("{path}.py")]
                    }
                }
            }
        }
    }
}

/// The alias every app's traffic goes to.
pub const LIVE: &str = "live";

/// A second version taking a share of an alias's requests (Lambda's
/// `RoutingConfig.AdditionalVersionWeights`, one version).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Routing {
    pub version: i64,
    /// The share of requests it takes, 0.0 to 1.0.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub weight: f64,
}

/// Where an alias sends requests: a version, and maybe a share of them to a
/// second one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AliasTarget {
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
}

impl AliasTarget {
    pub fn to(version: i64) -> Self {
        Self {
            version,
            routing: None,
        }
    }

    /// The version one request goes to, `draw` being uniform in `[0, 1)`.
    pub fn pick(&self, draw: f64) -> i64 {
        match self.routing {
            Some(routing) if draw < routing.weight => routing.version,
            _ => self.version,
        }
    }

    /// The versions it may send a request to.
    pub fn versions(&self) -> impl Iterator<Item = i64> {
        std::iter::once(self.version).chain(self.routing.map(|r| r.version))
    }
}

/// An app's aliases: `live` (what its host serves) and the others, with the
/// version `live` pointed at before its last move (where a rollback goes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aliases {
    pub live: AliasTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<i64>,
    #[serde(default)]
    pub others: BTreeMap<String, AliasTarget>,
}

impl Aliases {
    /// An app's first aliases: `live` at `version`.
    pub fn live_at(version: i64) -> Self {
        Self {
            live: AliasTarget::to(version),
            previous: None,
            others: BTreeMap::new(),
        }
    }

    /// The alias named `name` (`live` included).
    pub fn get(&self, name: &str) -> Option<&AliasTarget> {
        if name == LIVE {
            Some(&self.live)
        } else {
            self.others.get(name)
        }
    }

    /// Every alias, `live` first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AliasTarget)> {
        std::iter::once((LIVE, &self.live)).chain(self.others.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// Every version some alias may send a request to.
    pub fn versions(&self) -> std::collections::BTreeSet<i64> {
        self.iter()
            .flat_map(|(_, target)| target.versions())
            .collect()
    }

    /// `live` moved to `target`, remembering where it was (unless it stays).
    pub fn with_live(&self, target: AliasTarget) -> Self {
        let previous = if target.version == self.live.version {
            self.previous
        } else {
            Some(self.live.version)
        };
        Self {
            live: target,
            previous,
            others: self.others.clone(),
        }
    }

    /// As the store keeps them (JSON).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// As the store keeps them; a row written before aliases existed (`{}`)
    /// is `live` at its current version.
    pub fn from_text(text: &str, current_version: i64) -> Self {
        serde_json::from_str(text).unwrap_or_else(|_| Self::live_at(current_version))
    }
}

/// Checks an alias name: a DNS label without `--` (the proxy reads
/// `<alias>--<app>`), not `v<digits>` (which names a version).
pub fn check_alias_name(name: &str) -> Result<(), String> {
    let label = AppName::parse(name).is_ok();
    let version_like = name
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    // Lambda refuses alias names of digits alone.
    let digits = name.bytes().all(|b| b.is_ascii_digit());
    if !label || name.contains("--") || version_like || digits {
        return Err(format!(
            "invalid alias name '{}': use 1 to 63 characters of a-z, 0-9 and '-', without '--', not starting or ending with '-', not digits alone, and not v<number> (which names a version)",
            name.escape_debug()
        ));
    }
    Ok(())
}
