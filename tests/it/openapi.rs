//! The OpenAPI document: served, checked in, and complete.

use serde_json::Value;

use crate::common::{binary, TestApp};

fn checked_in() -> Value {
    let path = crate::common::checkout().join("openapi/openapi.json");
    serde_json::from_str(
        &std::fs::read_to_string(path).expect("openapi/openapi.json is checked in"),
    )
    .unwrap()
}

#[test]
fn checked_in_spec_equals_the_openapi_command() {
    let output = std::process::Command::new(binary())
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        printed,
        checked_in(),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn served_spec_documents_every_route_with_errors() {
    let app = TestApp::start(|_, _| {}).await;
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(spec, checked_in());
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = [
        ("/events/{event}", "post"),
        ("/events/{event}", "get"),
        ("/events", "post"),
        ("/events", "get"),
        ("/events/{event}/retry", "post"),
        ("/tenants", "get"),
        ("/tenants/{id}", "get"),
        ("/jobs/{id}", "get"),
        ("/apps/{name}/code", "put"),
        ("/apps/{name}/aliases", "get"),
        ("/apps/{name}/aliases/{alias}", "put"),
        ("/apps/{name}/rollback", "post"),
        ("/apps/{name}/domains/{domain}", "put"),
        ("/operations/{id}", "get"),
        ("/runtimes", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in routes {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        assert!(
            op["responses"]["200"].is_object(),
            "{method} {path} has a 200"
        );
    }
    let post = &spec["paths"]["/events/{event}"]["post"]["responses"];
    for code in ["400", "401", "413", "415", "503"] {
        assert_eq!(
            post[code]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{code}"
        );
    }
}

/// Every enum in the spec lists the spellings the API sends and reads.
#[test]
fn the_spec_enums_are_the_wire_spellings() {
    use orchestrator::store::{AppStatus, EventStatus, JobKind, JobStatus, OperationStatus};
    fn check<T>(spec: &Value, schema: &str, expected: usize)
    where
        T: std::str::FromStr + serde::Serialize,
    {
        let values = spec["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} is an enum in the spec"));
        assert_eq!(values.len(), expected, "{schema}: {values:?}");
        for value in values {
            let text = value.as_str().unwrap();
            let parsed: T = text
                .parse()
                .unwrap_or_else(|_| panic!("{schema}: '{text}' is not a wire spelling"));
            assert_eq!(serde_json::to_value(parsed).unwrap(), *value, "{schema}");
        }
    }
    let spec = checked_in();
    check::<AppStatus>(&spec, "AppStatus", 5);
    check::<EventStatus>(&spec, "EventStatus", 5);
    check::<JobKind>(&spec, "JobKind", JobKind::ALL.len());
    check::<JobStatus>(&spec, "JobStatus", 4);
    check::<OperationStatus>(&spec, "OperationStatus", 3);
    let runtimes = spec["components"]["schemas"]["RuntimeName"]["enum"]
        .as_array()
        .expect("RuntimeName is an enum in the spec");
    assert!(runtimes.len() >= 11, "{runtimes:?}");
    for runtime in runtimes {
        let name = runtime.as_str().unwrap();
        assert!(
            orchestrator::function_config::runtime_kind(name).is_some(),
            "{name} is a runtime the service runs"
        );
    }
}

/// Every `$ref` in the spec names a schema it defines.
#[test]
fn every_reference_resolves() {
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    out.push(target);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let spec = checked_in();
    let mut found = Vec::new();
    refs(&spec, &mut found);
    assert!(found.len() > 20, "the spec uses references: {found:?}");
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{target} points into the components' schemas"));
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "{target} is defined"
        );
    }
}
