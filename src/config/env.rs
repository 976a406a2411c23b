//! Settings from the environment, by one rule: every key of the file is
//! `ORCHESTRATOR_` followed by its path in capitals, with `__` between a
//! section and its key (`listen` is `ORCHESTRATOR_LISTEN`,
//! `functions.max_workers` is `ORCHESTRATOR_FUNCTIONS__MAX_WORKERS`). A value
//! is read as the key's type: numbers and `true`/`false` as such, lists
//! comma-separated. The names the service answered to before the rule (and
//! the usual AWS and database names) are kept as aliases; the rule's name
//! wins when both are set. The `[tiers.*]` tables are file-only.

use serde_json::{Map, Value};

/// Names kept from before the rule, with the key each sets.
pub const ALIASES: [(&str, &str); 14] = [
    ("DATABASE_URL", "database_url"),
    ("ORCHESTRATOR_FUNCTIONS_BACKEND", "functions.backend"),
    ("AWS_LAMBDA_ROLE_ARN", "functions.role_arn"),
    (
        "ORCHESTRATOR_FUNCTIONS_BATCH_SCHEDULING",
        "functions.batch_scheduling",
    ),
    ("ORCHESTRATOR_FUNCTIONS_ISOLATION", "functions.isolation"),
    ("ORCHESTRATOR_BUILDER_BACKEND", "builder.backend"),
    ("ORCHESTRATOR_JOBS_DIR", "builder.jobs_dir"),
    ("ORCHESTRATOR_JOB_TIMEOUT_SECS", "builder.job_timeout_secs"),
    ("ORCHESTRATOR_TIER_SOURCE", "tier_details.source"),
    ("TIER_DETAILS_TABLE", "tier_details.table"),
    ("ORCHESTRATOR_WEBHOOK_URL", "callbacks.webhook_url"),
    ("ORCHESTRATOR_API_TOKENS", "auth.api_tokens"),
    ("ORCHESTRATOR_EVENT_API_KEYS", "auth.event_api_keys"),
    ("ORCHESTRATOR_ALLOW_ANONYMOUS", "auth.allow_anonymous"),
];

/// The rule's variable for a key path (`functions.max_workers` →
/// `ORCHESTRATOR_FUNCTIONS__MAX_WORKERS`).
pub fn variable(path: &str) -> String {
    format!("ORCHESTRATOR_{}", path.replace('.', "__").to_uppercase())
}

/// A setting taken from the environment.
#[derive(Debug)]
pub struct Applied {
    /// The variable it came from.
    pub variable: String,
    /// The key it set (`functions.max_workers`).
    pub path: String,
}

/// Sets, in `settings` (the configuration in its file form), every key whose
/// variable `get` finds, typed as the same key in `template` (the defaults).
pub fn overlay(
    settings: &mut Value,
    template: &Value,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Applied>, String> {
    let mut applied = Vec::new();
    let mut keys = Vec::new();
    leaves(template, String::new(), &mut keys);
    for (path, shape) in keys {
        let rule = variable(&path);
        let alias = ALIASES
            .iter()
            .find(|(_, key)| *key == path)
            .map(|(name, _)| *name);
        let found = get(&rule)
            .map(|value| (rule.clone(), value))
            .or_else(|| alias.and_then(|name| get(name).map(|v| (name.to_owned(), v))));
        let Some((variable, text)) = found else {
            continue;
        };
        let value = typed(&text, shape).map_err(|why| format!("{variable}: {why}"))?;
        set(settings, &path, value);
        applied.push(Applied { variable, path });
    }
    Ok(applied)
}

/// Every settable key of the template with its default: sections are walked,
/// the `tiers` tables are not.
fn leaves<'a>(value: &'a Value, prefix: String, out: &mut Vec<(String, &'a Value)>) {
    let Value::Object(map) = value else { return };
    for (key, value) in map {
        let path = match prefix.is_empty() {
            true => key.clone(),
            false => format!("{prefix}.{key}"),
        };
        match value {
            Value::Object(_) if path == "tiers" => {}
            Value::Object(_) => leaves(value, path, out),
            _ => out.push((path, value)),
        }
    }
}

/// The variable's text as a value of the default's type.
fn typed(text: &str, shape: &Value) -> Result<Value, String> {
    let text = text.trim();
    match shape {
        Value::Bool(_) => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("'{text}' is not true or false")),
        },
        Value::Number(_) => text
            .parse::<u64>()
            .map(Value::from)
            .or_else(|_| text.parse::<i64>().map(Value::from))
            .map_err(|_| format!("'{text}' is not a whole number")),
        Value::Array(_) => Ok(Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_owned()))
                .collect(),
        )),
        _ => Ok(Value::String(text.to_owned())),
    }
}

fn set(settings: &mut Value, path: &str, value: Value) {
    let mut at = settings;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else { return };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        at = map.entry(part.to_owned()).or_insert(Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rule_names_every_key_and_types_its_value() {
        assert_eq!(
            variable("functions.max_workers"),
            "ORCHESTRATOR_FUNCTIONS__MAX_WORKERS"
        );
        assert_eq!(variable("listen"), "ORCHESTRATOR_LISTEN");
        let template = json!({"listen": "", "auth": {"api_tokens": [], "allow_anonymous": false},
                              "functions": {"max_workers": 4, "role_arn": null}, "tiers": {"x": {}}});
        let mut settings = json!({"functions": {"max_workers": 2}});
        let env = |name: &str| match name {
            "ORCHESTRATOR_FUNCTIONS__MAX_WORKERS" => Some("8".to_owned()),
            "ORCHESTRATOR_AUTH__API_TOKENS" => Some("a, b,".to_owned()),
            "AWS_LAMBDA_ROLE_ARN" => Some("arn:role".to_owned()),
            "ORCHESTRATOR_ALLOW_ANONYMOUS" => Some("true".to_owned()),
            _ => None,
        };
        let applied = overlay(&mut settings, &template, &env).unwrap();
        assert_eq!(
            settings,
            json!({"functions": {"max_workers": 8, "role_arn": "arn:role"},
                   "auth": {"api_tokens": ["a", "b"], "allow_anonymous": true}})
        );
        assert_eq!(applied.len(), 4);
        let bad = overlay(&mut settings, &template, &|name: &str| {
            (name == "ORCHESTRATOR_FUNCTIONS__MAX_WORKERS").then(|| "many".to_owned())
        });
        assert!(bad
            .unwrap_err()
            .starts_with("ORCHESTRATOR_FUNCTIONS__MAX_WORKERS:"));
    }

    #[test]
    fn the_rule_wins_over_an_alias() {
        let template = json!({"database_url": null});
        let mut settings = json!({});
        let env = |name: &str| match name {
            "DATABASE_URL" => Some("sqlite://a".to_owned()),
            "ORCHESTRATOR_DATABASE_URL" => Some("sqlite://b".to_owned()),
            _ => None,
        };
        overlay(&mut settings, &template, &env).unwrap();
        assert_eq!(settings["database_url"], "sqlite://b");
    }
}
