//! Apps as AWS Lambda functions: one function per app (named after it),
//! created or updated on deploy, waited for until `Active` / `Successful`,
//! a version published per deploy, invoked with `RequestResponse`. A
//! function that already exists (created out of band) is adopted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    AliasRoutingConfiguration, Architecture, Environment, FunctionCode, InvocationType,
    PackageType, Runtime,
};

use super::{Cause, Deployment, FunctionBackend, FunctionError, FunctionInfo, Invoked, Target};
use crate::aws::{describe, error_code};
use crate::function_config::{AliasTarget, AppName, CodeLocation, FunctionConfig, LIVE};
use crate::telemetry::metrics::{FunctionMetrics, InvocationOutcome};

/// The longest a deploy waits for Lambda to settle a change.
const SETTLE: Duration = Duration::from_secs(120);

pub struct AwsLambda {
    client: aws_sdk_lambda::Client,
    role_arn: String,
    architecture: Option<Architecture>,
    metrics: Arc<FunctionMetrics>,
    /// Our version of each Lambda version met (app, Lambda version → ours),
    /// to say which version an alias's invocation ran.
    versions: std::sync::RwLock<HashMap<(String, String), i64>>,
}

impl AwsLambda {
    pub fn new(
        config: &aws_config::SdkConfig,
        role_arn: String,
        architecture: Option<&str>,
    ) -> Self {
        Self {
            client: aws_sdk_lambda::Client::new(config),
            role_arn,
            architecture: architecture.map(Architecture::from),
            metrics: Arc::default(),
            versions: Default::default(),
        }
    }

    /// Counts invocations in `metrics` (by outcome, with their round-trip
    /// time: Lambda reports cold starts and init durations in its own logs).
    pub fn with_metrics(mut self, metrics: Arc<FunctionMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn environment(config: &FunctionConfig) -> Environment {
        Environment::builder()
            .set_variables(Some(config.environment.clone().into_iter().collect()))
            .build()
    }

    /// Creates the function and publishes its first version; the version.
    async fn create(&self, name: &str, d: &Deployment<'_>) -> Result<String, FunctionError> {
        let config = d.config;
        let code = FunctionCode::builder();
        let code = match &config.code {
            None => code.zip_file(Blob::new(d.zip)),
            Some(CodeLocation::S3(s3)) => code
                .s3_bucket(&s3.bucket)
                .s3_key(&s3.key)
                .set_s3_object_version(s3.version_id.clone()),
            Some(CodeLocation::Image { uri, .. }) => code.image_uri(uri),
        };
        let image = image_settings(config);
        let created = self
            .client
            .create_function()
            .function_name(name)
            .set_runtime(
                image
                    .is_none()
                    .then(|| Runtime::from(config.runtime.as_str())),
            )
            .set_handler(image.is_none().then(|| config.handler.clone()))
            .set_package_type(image.is_some().then_some(PackageType::Image))
            .set_image_config(image)
            .role(&self.role_arn)
            .timeout(i32::try_from(config.timeout).unwrap_or(i32::MAX))
            .memory_size(i32::try_from(config.memory_size).unwrap_or(i32::MAX))
            .environment(Self::environment(config))
            .set_architectures(self.architecture.clone().map(|a| vec![a]))
            .code(code.build())
            .publish(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let published = created.version().map(str::to_owned);
        self.client
            .wait_until_function_active_v2()
            .function_name(name)
            .wait(SETTLE)
            .await
            .map_err(|err| {
                FunctionError::unavailable_because(
                    format!("waiting for '{name}' to become Active: {}", describe(&err)),
                    err,
                )
            })?;
        published.ok_or_else(|| FunctionError::Failed("Lambda published no version".into()))
    }

    /// Updates the function and publishes a version of it; the version.
    async fn update(&self, name: &str, d: &Deployment<'_>) -> Result<String, FunctionError> {
        let config = d.config;
        let image = image_settings(config);
        self.client
            .update_function_configuration()
            .function_name(name)
            .set_runtime(
                image
                    .is_none()
                    .then(|| Runtime::from(config.runtime.as_str())),
            )
            .set_handler(image.is_none().then(|| config.handler.clone()))
            .set_image_config(image)
            .role(&self.role_arn)
            .timeout(i32::try_from(config.timeout).unwrap_or(i32::MAX))
            .memory_size(i32::try_from(config.memory_size).unwrap_or(i32::MAX))
            .environment(Self::environment(config))
            .send()
            .await
            .map_err(sdk_error)?;
        self.settle(name).await?;
        let updated = self.client.update_function_code().function_name(name);
        let updated = match &config.code {
            None => updated.zip_file(Blob::new(d.zip)),
            Some(CodeLocation::S3(s3)) => updated
                .s3_bucket(&s3.bucket)
                .s3_key(&s3.key)
                .set_s3_object_version(s3.version_id.clone()),
            Some(CodeLocation::Image { uri, .. }) => updated.image_uri(uri),
        };
        let updated = updated
            .set_architectures(self.architecture.clone().map(|a| vec![a]))
            .publish(true)
            .send()
            .await
            .map_err(sdk_error)?;
        self.settle(name).await?;
        updated
            .version()
            .map(str::to_owned)
            .ok_or_else(|| FunctionError::Failed("Lambda published no version".into()))
    }

    /// Points alias `alias` at Lambda version `version` (creating it), with
    /// `routing` (a Lambda version and its weight).
    async fn put_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
        routing: Option<(String, f64)>,
    ) -> Result<(), FunctionError> {
        let routing = AliasRoutingConfiguration::builder()
            .set_additional_version_weights(routing.map(|(v, w)| HashMap::from([(v, w)])))
            .build();
        let update = || {
            self.client
                .update_alias()
                .function_name(name)
                .name(alias)
                .function_version(version)
                .routing_config(routing.clone())
                .send()
        };
        match update().await.map_err(sdk_error) {
            Err(FunctionError::NotFound) => {}
            other => return other.map(drop),
        }
        let created = self
            .client
            .create_alias()
            .function_name(name)
            .name(alias)
            .function_version(version)
            .routing_config(routing.clone())
            .send()
            .await;
        match created.map_err(sdk_error) {
            // Created meanwhile (another replica): ours is the newer word.
            Err(FunctionError::Conflict(_)) => update().await.map(drop).map_err(sdk_error),
            other => other.map(drop),
        }
    }

    /// A function without a `live` alias (deployed before aliases, or
    /// created outside the service) is invoked at `$LATEST`: before its code
    /// changes, its current code is published and `live` pointed at it, so
    /// what it serves moves only when the app's `live` does.
    async fn keep_serving(&self, name: &str) -> Result<(), FunctionError> {
        let live = self
            .client
            .get_alias()
            .function_name(name)
            .name(LIVE)
            .send()
            .await;
        match live.map_err(sdk_error) {
            Ok(_) => return Ok(()),
            Err(FunctionError::NotFound) => {}
            Err(err) => return Err(err),
        }
        let published = self
            .client
            .publish_version()
            .function_name(name)
            .send()
            .await
            .map_err(sdk_error)?;
        let version = published
            .version()
            .ok_or_else(|| FunctionError::Failed("Lambda published no version".into()))?;
        tracing::info!(
            function = name,
            version,
            "function without a live alias: live now points at its current code"
        );
        self.put_alias(name, LIVE, version, None).await
    }

    /// The Lambda version our `version` of the app was published as (its
    /// alias `v<N>` points at it).
    async fn lambda_version(&self, app: &AppName, version: i64) -> Result<String, FunctionError> {
        let alias = self
            .client
            .get_alias()
            .function_name(app.as_str())
            .name(version_alias(version))
            .send()
            .await
            .map_err(sdk_error)?;
        let published = alias
            .function_version()
            .map(str::to_owned)
            .ok_or_else(|| FunctionError::Failed(format!("alias v{version} names no version")))?;
        self.remember(app, &published, version);
        Ok(published)
    }

    /// Notes that Lambda version `published` is our `version` (0: none of ours).
    fn remember(&self, app: &AppName, published: &str, version: i64) {
        if let Ok(mut versions) = self.versions.write() {
            let known = versions
                .entry((app.to_string(), published.to_owned()))
                .or_insert(version);
            *known = (*known).max(version);
        }
    }

    /// Our version of a Lambda version of the app, looking at its `v<N>`
    /// aliases (every page) when it is not known here yet; a Lambda version
    /// none of them names is remembered as such, so invocations do not list
    /// aliases again.
    async fn our_version(&self, app: &AppName, published: &str) -> Option<i64> {
        let key = (app.to_string(), published.to_owned());
        if let Some(known) = self.versions.read().ok()?.get(&key) {
            return (*known > 0).then_some(*known);
        }
        let mut found = None;
        let mut marker = None;
        loop {
            let listed = self
                .client
                .list_aliases()
                .function_name(app.as_str())
                .set_marker(marker)
                .send()
                .await
                .ok()?;
            for alias in listed.aliases() {
                let (Some(name), Some(target)) = (alias.name(), alias.function_version()) else {
                    continue;
                };
                let Some(version) = name.strip_prefix('v').and_then(|n| n.parse::<i64>().ok())
                else {
                    continue;
                };
                self.remember(app, target, version);
                if target == published {
                    // The newest of ours published as that Lambda version.
                    found = found.max(Some(version));
                }
            }
            marker = listed.next_marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        if found.is_none() {
            self.remember(app, published, 0);
        }
        found
    }

    /// Forgets what was learnt of a deleted function's versions.
    fn forget(&self, app: &AppName) {
        if let Ok(mut versions) = self.versions.write() {
            versions.retain(|(name, _), _| name != app.as_str());
        }
    }

    /// Waits until the last update is `Successful` (bounded).
    async fn settle(&self, name: &str) -> Result<(), FunctionError> {
        self.client
            .wait_until_function_updated_v2()
            .function_name(name)
            .wait(SETTLE)
            .await
            .map_err(|err| {
                FunctionError::unavailable_because(
                    format!(
                        "waiting for '{name}' to finish updating: {}",
                        describe(&err)
                    ),
                    err,
                )
            })?;
        Ok(())
    }
}

impl AwsLambda {
    /// One `RequestResponse` invocation of `qualifier` (`None`: `$LATEST`),
    /// counted by the version that ran.
    async fn call(
        &self,
        app: &AppName,
        qualifier: Option<&str>,
        event: Vec<u8>,
    ) -> Result<Invoked, FunctionError> {
        let started = std::time::Instant::now();
        let answer = match self
            .client
            .invoke()
            .function_name(app.as_str())
            .set_qualifier(qualifier.map(str::to_owned))
            .invocation_type(InvocationType::RequestResponse)
            .set_log_type(
                crate::functions::logs::tail().map(|_| aws_sdk_lambda::types::LogType::Tail),
            )
            .payload(Blob::new(event))
            .send()
            .await
        {
            Ok(answer) => answer,
            Err(err) => {
                // Lambda refusing for want of concurrency: what its Throttles metric counts.
                if error_code(&err) == Some("TooManyRequestsException") {
                    self.metrics
                        .app(app.as_str(), None)
                        .invoked(InvocationOutcome::Throttled, None);
                }
                return Err(sdk_error(err));
            }
        };
        if let (Some(tail), Some(log)) = (crate::functions::logs::tail(), answer.log_result()) {
            use base64::Engine;
            if let Ok(text) = base64::engine::general_purpose::STANDARD.decode(log) {
                tail.push(&text);
            }
        }
        let version = match answer.executed_version() {
            Some(published) if published != "$LATEST" => self.our_version(app, published).await,
            _ => None,
        };
        let metrics = self.metrics.app(app.as_str(), version);
        let payload = answer
            .payload()
            .map(|p| p.as_ref().to_vec())
            .unwrap_or_default();
        if let Some(kind) = answer.function_error() {
            let text = String::from_utf8_lossy(&payload);
            metrics.invoked(failure_outcome(&text), Some(started.elapsed()));
            // Handled / Unhandled: API Gateway answers 502 either way.
            return Err(FunctionError::Failed(format!("{kind}: {text}")));
        }
        metrics.invoked(InvocationOutcome::Success, Some(started.elapsed()));
        Ok(Invoked { payload, version })
    }
}

/// Lambda's `ImageConfig` of an image function (`None` for a zip).
fn image_settings(config: &FunctionConfig) -> Option<aws_sdk_lambda::types::ImageConfig> {
    let Some(CodeLocation::Image { config: image, .. }) = &config.code else {
        return None;
    };
    let image = image.clone().unwrap_or_default();
    Some(
        aws_sdk_lambda::types::ImageConfig::builder()
            .set_command(image.command)
            .set_entry_point(image.entry_point)
            .set_working_directory(image.working_directory)
            .build(),
    )
}

/// The alias that names our version `version` of an app on Lambda.
fn version_alias(version: i64) -> String {
    format!("v{version}")
}

/// What a function error's payload says happened, by its `errorType`:
/// Lambda reports a timeout as `Sandbox.Timedout` and a runtime that died as
/// `Runtime.ExitError`, `Runtime.OutOfMemory` and the like.
fn failure_outcome(payload: &str) -> InvocationOutcome {
    let error_type = serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("errorType")?.as_str().map(str::to_owned));
    match error_type.as_deref() {
        Some("Sandbox.Timedout") => InvocationOutcome::Timeout,
        Some(t) if t.starts_with("Runtime.") && t != "Runtime.HandlerNotFound" => {
            InvocationOutcome::Crash
        }
        _ => InvocationOutcome::Error,
    }
}

/// A failed Lambda call as ours (see [`lambda_error`]).
fn sdk_error<E, R>(err: aws_sdk_lambda::error::SdkError<E, R>) -> FunctionError
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = error_code(&err).map(str::to_owned);
    let message = describe(&err);
    lambda_error(code.as_deref(), message, Some(Arc::new(err)))
}

/// An AWS Lambda error as ours: conflicts 409, missing 404, throttling and
/// outages 503 (retry), anything else a failed deploy or invoke.
fn lambda_error(code: Option<&str>, message: String, cause: Option<Cause>) -> FunctionError {
    match code {
        Some("ResourceNotFoundException") => FunctionError::NotFound,
        Some("ResourceConflictException" | "ConflictException" | "ResourceInUseException") => {
            FunctionError::Conflict(message)
        }
        Some(
            "TooManyRequestsException"
            | "ServiceException"
            | "ThrottlingException"
            | "EC2ThrottledException"
            | "ResourceNotReadyException",
        )
        | None => FunctionError::Unavailable { message, cause },
        Some("RequestTooLargeException") => FunctionError::PayloadTooLarge(message),
        Some(_) => FunctionError::Failed(message),
    }
}

#[async_trait]
impl FunctionBackend for AwsLambda {
    fn name(&self) -> &'static str {
        "aws"
    }

    /// Publishes a Lambda version and points alias `v<N>` at it, so our
    /// version can be named as a qualifier and aliases can be moved to it.
    async fn deploy(&self, deployment: Deployment<'_>) -> Result<(), FunctionError> {
        let name = deployment.app.as_str();
        let published = match self.describe(deployment.app).await? {
            Some(_) => {
                self.keep_serving(name).await?;
                self.update(name, &deployment).await?
            }
            None => match self.create(name, &deployment).await {
                // Created meanwhile (another replica, or out of band): adopt it.
                Err(FunctionError::Conflict(_)) => self.update(name, &deployment).await?,
                other => other?,
            },
        };
        self.put_alias(name, &version_alias(deployment.version), &published, None)
            .await?;
        self.remember(deployment.app, &published, deployment.version);
        Ok(())
    }

    fn routes_aliases(&self) -> bool {
        true
    }

    fn fetches_code(&self) -> bool {
        true
    }

    async fn set_alias(
        &self,
        app: &AppName,
        alias: &str,
        target: &AliasTarget,
    ) -> Result<(), FunctionError> {
        let version = self.lambda_version(app, target.version).await?;
        let routing = match target.routing {
            Some(routing) => Some((
                self.lambda_version(app, routing.version).await?,
                routing.weight,
            )),
            None => None,
        };
        // Two of ours published as one Lambda version (the same code and
        // settings): Lambda routes nothing to itself, and nothing differs.
        let routing = routing.filter(|(second, _)| *second != version);
        self.put_alias(app.as_str(), alias, &version, routing).await
    }

    async fn remove_alias(&self, app: &AppName, alias: &str) -> Result<(), FunctionError> {
        let deleted = self
            .client
            .delete_alias()
            .function_name(app.as_str())
            .name(alias)
            .send()
            .await;
        match deleted.map_err(sdk_error) {
            Ok(_) | Err(FunctionError::NotFound) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn remove(&self, app: &AppName) -> Result<(), FunctionError> {
        self.forget(app);
        self.client
            .delete_function()
            .function_name(app.as_str())
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn invoke(&self, app: &AppName, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        Ok(self.call(app, None, event).await?.payload)
    }

    /// An alias by its name, a version by its alias `v<N>`. A function
    /// deployed before aliases existed has no `live` alias: it runs `$LATEST`
    /// until its next deploy or alias change.
    async fn invoke_target(
        &self,
        app: &AppName,
        target: Target<'_>,
        event: Vec<u8>,
    ) -> Result<Invoked, FunctionError> {
        match target {
            Target::Version(version) => {
                let mut invoked = self.call(app, Some(&version_alias(version)), event).await?;
                invoked.version = Some(version);
                Ok(invoked)
            }
            Target::Alias(alias) => match self.call(app, Some(alias), event.clone()).await {
                Err(FunctionError::NotFound) if alias == LIVE => self.call(app, None, event).await,
                other => other,
            },
        }
    }

    /// Deactivating leaves the function on Lambda (deleting it is `remove`'s).
    async fn release(&self, _app: &AppName) -> Result<(), FunctionError> {
        Ok(())
    }

    /// Deleted outside the service, or in a state that cannot serve.
    async fn problem(&self, app: &AppName) -> Result<Option<String>, FunctionError> {
        Ok(match self.describe(app).await? {
            None => Some("the function was deleted outside the service".to_owned()),
            Some(info) => info.problem(),
        })
    }

    async fn describe(&self, app: &AppName) -> Result<Option<FunctionInfo>, FunctionError> {
        match self
            .client
            .get_function_configuration()
            .function_name(app.as_str())
            .send()
            .await
        {
            Ok(config) => Ok(Some(FunctionInfo {
                arn: config.function_arn().map(str::to_owned),
                state: config.state().map(|s| s.as_str().to_owned()),
                state_reason: config.state_reason().map(str::to_owned),
                last_update_status: config.last_update_status().map(|s| s.as_str().to_owned()),
                version: config.version().map(str::to_owned),
                code_sha256: config.code_sha256().map(str::to_owned),
            })),
            Err(err) => match sdk_error(err) {
                FunctionError::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_errors_map_to_ours() {
        let map = |code: &str| lambda_error(Some(code), code.to_owned(), None);
        assert_eq!(map("ResourceNotFoundException"), FunctionError::NotFound);
        assert!(matches!(
            map("ResourceConflictException"),
            FunctionError::Conflict(_)
        ));
        assert!(matches!(
            map("TooManyRequestsException"),
            FunctionError::Unavailable { .. }
        ));
        assert!(matches!(
            map("RequestTooLargeException"),
            FunctionError::PayloadTooLarge(_)
        ));
        assert!(matches!(
            map("InvalidParameterValueException"),
            FunctionError::Failed(_)
        ));
        assert!(matches!(
            lambda_error(None, "timeout".into(), None),
            FunctionError::Unavailable { .. }
        ));
    }

    #[test]
    fn function_errors_are_told_apart_as_lambda_reports_them() {
        let timed_out = r#"{"errorType":"Sandbox.Timedout","errorMessage":"Task timed out after 3.00 seconds"}"#;
        assert_eq!(failure_outcome(timed_out), InvocationOutcome::Timeout);
        let exited = r#"{"errorType":"Runtime.ExitError","errorMessage":"RequestId: x Error: Runtime exited with error: exit status 1"}"#;
        assert_eq!(failure_outcome(exited), InvocationOutcome::Crash);
        let thrown = r#"{"errorType":"Error","errorMessage":"boom"}"#;
        assert_eq!(failure_outcome(thrown), InvocationOutcome::Error);
        let wrapped =
            r#"{"errorType":"Error","errorMessage":"upstream: Task timed out after 3.00 seconds"}"#;
        assert_eq!(
            failure_outcome(wrapped),
            InvocationOutcome::Error,
            "by type, not by words"
        );
        let oom = r#"{"errorType":"Runtime.OutOfMemory","errorMessage":"RequestId: x Error: Runtime exited with error: signal: killed"}"#;
        assert_eq!(failure_outcome(oom), InvocationOutcome::Crash);
    }
}
