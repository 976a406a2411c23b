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
