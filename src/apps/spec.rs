//! A deploy request, validated: name, runtime, handler, limits, environment.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::function_config::{
    runtime_kind, runtime_names, AppName, CodeLocation, FunctionConfig, ImageConfig, RuntimeKind,
    RuntimeName, S3Location,
};
use crate::proxy::PayloadFormat;

/// Names Lambda reserves for itself.
fn reserved(name: &str) -> bool {
    name.starts_with("AWS_")
        || matches!(
            name,
            "_HANDLER" | "_X_AMZN_TRACE_ID" | "LAMBDA_TASK_ROOT" | "LAMBDA_RUNTIME_DIR" | "TZ"
        )
}

/// `POST /apps/deploy` as clients send it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployRequest {
    /// The app's name: a lowercase DNS label, served at `<name>.<base_domain>`.
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
    )]
    pub name: String,
    /// The code: a zip archive, base64-encoded. Give exactly one of
    /// `archive`, `s3` and `imageUri`.
    #[schema(min_length = 1, format = Byte)]
    pub archive: Option<String>,
    /// The code as a zip in S3: the AWS backend hands the location to
    /// Lambda; the local backend downloads it (same limits as `archive`).
    pub s3: Option<S3Location>,
    /// A container image (`PackageType: Image`, AWS backend only; no
    /// `runtime` nor `handler`: the image holds them).
    #[schema(max_length = 1024)]
    pub image_uri: Option<String>,
    /// How the image runs (with `imageUri`).
    pub image_config: Option<ImageConfig>,
    /// Default: the serving version's (a redeploy), else `nodejs20.x`.
    #[schema(value_type = Option<RuntimeName>)]
    pub runtime: Option<String>,
    /// `path/module.function`; default: the serving version's, else `index.handler`.
    #[schema(min_length = 1, max_length = 128)]
    pub handler: Option<String>,
    /// Environment variables (string values); omitted, the serving version's; `{}` clears them.
    #[schema(value_type = Option<Object>)]
    pub environment: Option<Value>,
    /// MB, 128 to 10240 (default: the serving version's, else 128).
    #[schema(minimum = 128, maximum = 10240)]
    pub memory_size: Option<u32>,
    /// Seconds, 1 to 900 (default: the serving version's, else 30).
    #[schema(minimum = 1, maximum = 900)]
    pub timeout: Option<u32>,
    /// `1.0` (REST API event) or `2.0` (HTTP API event); default: the serving version's, else `1.0`.
    #[schema(value_type = Option<crate::proxy::PayloadFormat>)]
    pub payload_format: Option<String>,
    /// Whether the new version takes the app's traffic (moves its `live`
    /// alias); default `true`. With `false` it is reachable only as
    /// `v<N>--<name>.<base_domain>` until promoted (an app's first version
    /// is always live).
    pub promote: Option<bool>,
}

/// A field of a deploy request that cannot be used, and why (the reason names the field too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidField {
    /// The field as clients spell it (`name`, `runtime`, `memorySize`, …).
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str) -> impl FnOnce(String) -> InvalidField {
    move |reason| InvalidField { field, reason }
}

/// Validates everything but the archive's content. A setting the request
/// omits is `previous`'s (the app's current version, as Lambda's
/// `UpdateFunctionCode` keeps it), else the default; `"environment": {}`
/// clears the environment.
pub fn validate(
    request: &DeployRequest,
    previous: Option<&FunctionConfig>,
) -> Result<(AppName, FunctionConfig), InvalidField> {
    let name = AppName::parse(&request.name).map_err(invalid("name"))?;
    if request.name.contains("--") {
        return Err(invalid("name")(format!(
            "invalid app name '{}': '--' cannot appear in an app name (hosts read <alias>--<name>)",
            request.name
        )));
    }
    let code = check_source(request)?;
    // An image's settings are not a zip's: a zip after an image starts from the defaults.
    let previous_zip = previous.filter(|p| !matches!(p.code, Some(CodeLocation::Image { .. })));
    let image = matches!(code, Some(CodeLocation::Image { .. }));
    let was_image = previous.is_some_and(|p| matches!(p.code, Some(CodeLocation::Image { .. })));
    if previous.is_some() && image != was_image {
        return Err(invalid("imageUri")(
            "an app's package type cannot change (Lambda keeps it): an image app takes images, a zip app zips; remove the app first".into(),
        ));
    }
    if image && (request.runtime.is_some() || request.handler.is_some()) {
        return Err(invalid("imageUri")(
            "an image function has no runtime or handler: the image holds them".into(),
        ));
    }
    let runtime = request
        .runtime
        .clone()
        .or_else(|| previous_zip.map(|p| p.runtime.clone()))
        .unwrap_or_else(|| "nodejs20.x".into());
    let kind = runtime_kind(&runtime)
        .ok_or_else(|| {
            format!(
                "unsupported runtime '{runtime}': use one of {}",
                runtime_names().collect::<Vec<_>>().join(", ")
            )
        })
        .map_err(invalid("runtime"))?;
    let handler = request
        .handler
        .clone()
        .or_else(|| previous_zip.map(|p| p.handler.clone()))
        .unwrap_or_else(|| "index.handler".into());
    check_handler(&handler, kind).map_err(invalid("handler"))?;
    let memory_size = request
        .memory_size
        .or(previous.map(|p| p.memory_size))
        .unwrap_or(128);
    if !(128..=10240).contains(&memory_size) {
        return Err(invalid("memorySize")(format!(
            "memorySize must be between 128 and 10240 MB, not {memory_size}"
        )));
    }
    let timeout = request
        .timeout
        .or(previous.map(|p| p.timeout))
        .unwrap_or(30);
    if !(1..=900).contains(&timeout) {
        return Err(invalid("timeout")(format!(
            "timeout must be between 1 and 900 seconds, not {timeout}"
        )));
    }
    let payload_format = match request.payload_format.as_deref() {
        None => previous.map_or(PayloadFormat::V1, |p| p.payload_format),
        Some("1.0") => PayloadFormat::V1,
        Some("2.0") => PayloadFormat::V2,
        Some(other) => {
            return Err(invalid("payloadFormat")(format!(
                "payloadFormat must be \"1.0\" or \"2.0\", not \"{other}\""
            )))
        }
    };
    let environment = match (&request.environment, previous) {
        (None | Some(Value::Null), Some(previous)) => previous.environment.clone(),
        (given, _) => check_environment(given.as_ref()).map_err(invalid("environment"))?,
    };
    Ok((
        name,
        FunctionConfig {
            runtime: if image { String::new() } else { runtime },
            handler: if image { String::new() } else { handler },
            environment,
            memory_size,
            timeout,
            payload_format,
            code,
        },
    ))
}

/// Exactly one source of code: the archive (kept in the store), an S3
/// object or an image (a location the platform fetches).
fn check_source(request: &DeployRequest) -> Result<Option<CodeLocation>, InvalidField> {
    let given = [
        request.archive.is_some(),
        request.s3.is_some(),
        request.image_uri.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(invalid("archive")(
            "give the code as exactly one of archive (a base64 zip), s3 ({bucket, key}) or imageUri"
                .into(),
        ));
    }
    if request.image_config.is_some() && request.image_uri.is_none() {
        return Err(invalid("imageConfig")(
            "imageConfig goes with imageUri".into(),
        ));
    }
    let text_ok = |text: &str, max: usize| {
        !text.is_empty()
            && text.len() <= max
            && !text.chars().any(|c| c.is_control() || c.is_whitespace())
    };
    if let Some(s3) = &request.s3 {
        if !text_ok(&s3.bucket, 63) || !text_ok(&s3.key, 1024) {
            return Err(invalid("s3")(
                "s3 needs a bucket (up to 63 characters) and a key (up to 1024), without spaces"
                    .into(),
            ));
        }
        if s3.version_id.as_deref().is_some_and(|v| !text_ok(v, 1024)) {
            return Err(invalid("s3")("s3.versionId must be a version id".into()));
        }
        return Ok(Some(CodeLocation::S3(s3.clone())));
    }
    if let Some(uri) = &request.image_uri {
        if !text_ok(uri, 1024) {
            return Err(invalid("imageUri")(
                "imageUri must be an image reference such as 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1".into(),
            ));
        }
        return Ok(Some(CodeLocation::Image {
            uri: uri.clone(),
            config: request.image_config.clone(),
        }));
    }
    Ok(None)
}

fn check_handler(handler: &str, kind: RuntimeKind) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid handler '{}': {why}",
            handler.escape_debug()
        ))
    };
    if handler.is_empty()
        || handler.chars().count() > 128
        || handler.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return bad("1 to 128 characters without spaces");
    }
    if kind == RuntimeKind::Provided {
        return Ok(());
    }
    let Some((module, function)) = handler.rsplit_once('.') else {
        return bad("expected MODULE.FUNCTION, e.g. index.handler");
    };
    let ident = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    if module.is_empty() || !ident(function) {
        return bad("expected MODULE.FUNCTION, e.g. index.handler");
    }
    if module.starts_with('/')
        || module
            .split('/')
            .any(|part| part.is_empty() || part == "..")
    {
        return bad("the module path must stay inside the archive");
    }
    Ok(())
}

fn check_environment(value: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(map) = value else {
        return Err("environment must be an object of strings".into());
    };
    let mut env = BTreeMap::new();
    let mut size = 0;
    for (key, value) in map {
        crate::envvars::check_name(key).map_err(|e| e.to_string())?;
        if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
            // Lambda's own rule is narrower: a letter first.
            return Err(format!(
                "environment variable name '{key}' is invalid: Lambda needs a letter first"
            ));
        }
        if reserved(key) {
            return Err(format!(
                "environment variable '{key}' is reserved by Lambda"
            ));
        }
        let Value::String(text) = value else {
            return Err(format!("environment variable '{key}' must be a string"));
        };
        size += key.len() + text.len();
        env.insert(key.clone(), text.clone());
    }
    if size > 4096 {
        return Err("environment variables exceed Lambda's 4 KB limit".into());
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(extra: Value) -> DeployRequest {
        let mut base = json!({"name": "shop", "archive": ""});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn names_are_dns_labels() {
        for ok in [
            "a",
            "shop",
            "my-app-2",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
        ] {
            assert!(AppName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Shop",
            "a_b",
            "a.b",
            "a b",
            &"x".repeat(64),
            "ü",
        ] {
            assert!(AppName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults() {
        let (name, config) = validate(&request(json!({})), None).unwrap();
        assert_eq!(name.as_str(), "shop");
        assert_eq!(
            (config.runtime.as_str(), config.handler.as_str()),
            ("nodejs20.x", "index.handler")
        );
        assert_eq!(
            (config.memory_size, config.timeout, config.payload_format),
            (128, 30, PayloadFormat::V1)
        );
        assert_eq!(
            config.handler_files(),
            ["index.js", "index.mjs", "index.cjs"]
        );
    }

    #[test]
    fn a_redeploy_keeps_what_it_omits_and_an_empty_environment_clears() {
        let (_, previous) = validate(
            &request(json!({
                "runtime": "python3.12", "handler": "app.main", "memorySize": 512,
                "timeout": 60, "payloadFormat": "2.0", "environment": {"MODE": "prod"}
            })),
            None,
        )
        .unwrap();
        let (_, kept) = validate(&request(json!({})), Some(&previous)).unwrap();
        assert_eq!(kept, previous);
        let (_, changed) = validate(
            &request(json!({"timeout": 5, "environment": {}})),
            Some(&previous),
        )
        .unwrap();
        assert_eq!((changed.timeout, changed.memory_size), (5, 512));
        assert!(changed.environment.is_empty(), "{{}} clears it");
        let (_, null_keeps) =
            validate(&request(json!({"environment": null})), Some(&previous)).unwrap();
        assert_eq!(null_keeps.environment, previous.environment);
    }

    #[test]
    fn handler_files_per_runtime() {
        let (_, c) = validate(&request(json!({"handler": "src/api/main.handler"})), None).unwrap();
        assert_eq!(c.handler_files()[0], "src/api/main.js");
        let (_, c) = validate(
            &request(json!({"runtime": "python3.12", "handler": "pkg.app.handler"})),
            None,
        )
        .unwrap();
        assert_eq!(c.handler_files(), ["pkg/app.py"]);
        let (_, c) = validate(
            &request(json!({"runtime": "provided.al2023", "handler": "anything"})),
            None,
        )
        .unwrap();
        assert_eq!(c.handler_files(), ["bootstrap"]);
    }

    #[test]
    fn rejects_bad_settings() {
        for bad in [
            json!({"runtime": "java21"}),
            json!({"handler": "nodot"}),
            json!({"handler": "../up.handler"}),
            json!({"handler": "/abs.handler"}),
            json!({"handler": "index.1bad"}),
            json!({"timeout": 0}),
            json!({"timeout": 901}),
            json!({"memorySize": 64}),
            json!({"payloadFormat": "3.0"}),
            json!({"environment": {"A": 1}}),
            json!({"environment": {"AWS_REGION": "x"}}),
            json!({"environment": {"_HANDLER": "x"}}),
            json!({"environment": {"1A": "x"}}),
            json!({"environment": ["A"]}),
            json!({"environment": {"BIG": "x".repeat(5000)}}),
        ] {
            assert!(
                validate(&request(bad.clone()), None).is_err(),
                "{bad} must be rejected"
            );
        }
    }

    #[test]
    fn a_refusal_names_its_field() {
        for (bad, field) in [
            (json!({"name": "Shop"}), "name"),
            (json!({"runtime": "java21"}), "runtime"),
            (json!({"handler": "index"}), "handler"),
            (json!({"memorySize": 64}), "memorySize"),
            (json!({"timeout": 0}), "timeout"),
            (json!({"payloadFormat": "3.0"}), "payloadFormat"),
            (json!({"environment": {"LD_PRELOAD": "x"}}), "environment"),
        ] {
            let err = validate(&request(bad.clone()), None).unwrap_err();
            assert_eq!(err.field, field, "{bad}: {err}");
            assert!(!err.reason.is_empty());
        }
    }
}
