//! The API's shapes of an app (`AppView`, `AppVersionView`, `AppStatusView`)
//! and how a stored record becomes one; imports nothing of the service.

use serde::Serialize;
use utoipa::ToSchema;

use crate::function_config::{AliasTarget, AppName, CodeLocation, Routing, S3Location};
use crate::functions::FunctionInfo;
use crate::proxy::PayloadFormat;
use crate::store::{AppRecord, AppStatus, AppVersionRecord};
use crate::support::timestamp;

/// `{name, status}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppStatusView {
    pub name: String,
    pub status: AppStatus,
}

/// One version of an app's code.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppVersionView {
    pub version: i64,
    pub runtime: String,
    pub handler: String,
    pub code_size: i64,
    pub code_sha256: String,
    pub created_at: String,
}

/// An app.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub name: String,
    pub status: AppStatus,
    /// Where the proxy serves it (any port of this service).
    pub host: String,
    pub version: i64,
    pub runtime: String,
    pub handler: String,
    pub memory_size: u32,
    pub timeout: u32,
    pub payload_format: PayloadFormat,
    /// The live version's container image (then `runtime` and `handler` are empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_uri: Option<String>,
    /// The S3 object the live version's code came from (AWS backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
    pub environment: std::collections::BTreeMap<String, String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The newest version deployed (`version` is the one `live` serves).
    pub latest_version: i64,
    /// Where `live` pointed before its last move (where a rollback goes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<i64>,
    /// Every alias, `live` first.
    pub aliases: Vec<AliasView>,
    /// Custom domains its `live` alias serves.
    pub domains: Vec<String>,
    /// Every deployed version, newest first (`GET /apps/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<AppVersionView>>,
    /// The function as AWS Lambda reports it (`GET /apps/{name}` with the `aws` backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionInfo>,
}

impl AppView {
    /// The app as its record says, served under `base_domain`; no function
    /// description.
    pub(super) fn of(
        record: AppRecord,
        base_domain: &str,
        domains: Vec<String>,
        versions: Option<Vec<AppVersionView>>,
    ) -> Self {
        let aliases = AliasView::all(&record, base_domain);
        let config = record.config;
        let (image_uri, s3) = match &config.code {
            Some(CodeLocation::Image { uri, .. }) => (Some(uri.clone()), None),
            Some(CodeLocation::S3(s3)) => (None, Some(s3.clone())),
            None => (None, None),
        };
        AppView {
            image_uri,
            s3,
            latest_version: record.latest_version,
            previous_version: record.aliases.previous,
            aliases,
            domains,
            host: format!("{}.{}", record.name, base_domain),
            name: record.name.into_string(),
            status: record.status,
            version: record.current_version,
            runtime: config.runtime,
            handler: config.handler,
            memory_size: config.memory_size,
            timeout: config.timeout,
            payload_format: config.payload_format,
            environment: config.environment,
            last_error: record.last_error,
            created_at: timestamp(record.created_at_ms),
            updated_at: timestamp(record.updated_at_ms),
            versions,
            function: None,
        }
    }
}

impl AppVersionView {
    /// A stored version.
    pub(super) fn of(version: AppVersionRecord) -> Self {
        let config = version.config;
        AppVersionView {
            version: version.version,
            runtime: config.runtime,
            handler: config.handler,
            code_size: version.code_size,
            code_sha256: version.code_sha256,
            created_at: timestamp(version.created_at_ms),
        }
    }
}

/// An alias of an app and the host that serves it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasView {
    pub name: String,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// `<name>.<base_domain>` for `live`, else `<alias>--<name>.<base_domain>`.
    pub host: String,
}

impl AliasView {
    pub(super) fn of(alias: &str, target: &AliasTarget, app: &AppName, base_domain: &str) -> Self {
        let host = if alias == crate::function_config::LIVE {
            format!("{app}.{base_domain}")
        } else {
            format!("{alias}--{app}.{base_domain}")
        };
        AliasView {
            name: alias.to_owned(),
            version: target.version,
            routing: target.routing,
            host,
        }
    }

    /// Every alias of an app, `live` first.
    pub(super) fn all(record: &AppRecord, base_domain: &str) -> Vec<Self> {
        record
            .aliases
            .iter()
            .map(|(alias, target)| Self::of(alias, target, &record.name, base_domain))
            .collect()
    }
}

/// A custom domain and the app it serves.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainView {
    pub domain: String,
    pub app: String,
}
