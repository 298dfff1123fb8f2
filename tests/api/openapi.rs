//! `/openapi.json`: an OpenAPI 3.1 document listing exactly the routes the service serves,
//! whose schemas and examples hold for what the service really answers.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};

/// The document as the running service serves it.
pub(crate) async fn fetch_document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// (METHOD, path template) of every documented operation.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.insert((method.to_uppercase(), path.clone()));
        }
    }
    found
}

/// What the service serves, per the specification (SPEC §2) and the API page's files.
fn expected_routes(with_metrics: bool) -> BTreeSet<(String, String)> {
    let mut routes: BTreeSet<(String, String)> = [
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/tokens/{merchant_id}"),
        ("DELETE", "/api/v1/tokens/{merchant_id}/{platform}"),
        ("POST", "/api/v1/tokens/{merchant_id}/{platform}/refresh"),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/{asset}"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    if with_metrics {
        routes.insert(("GET".into(), "/metrics".into()));
    }
    routes
}

/// A concrete path for a template (values that route; whether they are valid is not the point).
fn concrete(template: &str) -> String {
    template
        .replace("{merchant_id}", "m-route")
        .replace("{platform}", "shopify")
        .replace("{asset}", "init.js")
}

async fn send(app: &TestApp, method: &str, path: &str) -> reqwest::Response {
    app.client
        .request(method.parse().unwrap(), format!("{}{path}", app.address))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_1_with_both_security_schemes() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = fetch_document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "token-service");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));

    let schemes = &document["components"]["securitySchemes"];
    for name in ["client_jwt", "service_key"] {
        assert_eq!(schemes[name]["type"], "http", "{name}");
        assert_eq!(schemes[name]["scheme"], "bearer", "{name}");
    }
    assert_eq!(schemes["client_jwt"]["bearerFormat"], "JWT");

    // Every token operation names its credential; nothing else asks for one.
    let security = |method: &str, path: &str| {
        document["paths"][path][method.to_lowercase()]["security"].clone()
    };
    let client = json!([{"client_jwt": []}]);
    let service = json!([{"service_key": []}]);
    assert_eq!(security("POST", "/api/v1/tokens"), client);
    assert_eq!(
        security("DELETE", "/api/v1/tokens/{merchant_id}/{platform}"),
        client
    );
    assert_eq!(security("GET", "/api/v1/tokens/{merchant_id}"), service);
    assert_eq!(
        security("POST", "/api/v1/tokens/{merchant_id}/{platform}/refresh"),
        service
    );
    for (method, path) in operations(&document) {
        let op = &document["paths"][&path][method.to_lowercase()];
        if !path.starts_with("/api/") {
            assert!(
                op["security"].is_null(),
                "{method} {path} needs no credential"
            );
        }
        assert!(op["summary"].is_string(), "{method} {path} has a summary");
        assert!(op["tags"][0].is_string(), "{method} {path} has a tag");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
    }
    // Every error code the API can answer is an enumerated value.
    let codes = document["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap();
    for code in [
        "UNAUTHORIZED",
        "RATE_LIMITED",
        "SERVICE_UNAVAILABLE",
        "VALIDATION_ERROR",
    ] {
        assert!(codes.contains(&json!(code)), "{code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_route_is_documented_and_nothing_else() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = fetch_document(&app).await;
    let documented = operations(&document);
    assert_eq!(documented, expected_routes(true));

    // Each documented operation is served: whatever it answers, it is not "no such route"
    // nor "method not allowed".
    for (method, template) in &documented {
        let status = send(&app, method, &concrete(template)).await.status();
        assert!(
            ![404, 405].contains(&status.as_u16()),
            "{method} {template} is documented but answers {status}"
        );
    }
    // Other methods on documented paths are refused, and undocumented paths do not exist.
    for template in documented.iter().map(|(_, p)| p).collect::<BTreeSet<_>>() {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.contains(&(method.to_owned(), template.clone())) {
                continue;
            }
            let response = send(&app, method, &concrete(template)).await;
            assert_eq!(response.status(), 405, "{method} {template}");
            assert_eq!(
                crate::helpers::error_code(response).await,
                "METHOD_NOT_ALLOWED"
            );
        }
    }
    for path in [
        "/",
        "/api",
        "/api/v1",
        "/api/v2/tokens",
        "/api/v1/tokens/m/shopify/refresh/now",
        "/docs/",
        "/docs/swagger-ui-bundle.js.map",
        "/openapi.yaml",
        "/metrics/extra",
    ] {
        let response = send(&app, "GET", path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(crate::helpers::error_code(response).await, "NOT_FOUND");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_port_takes_metrics_off_the_api_and_its_document() {
    let app = spawn_app_with(Backend::Sqlite, &[("METRICS_PORT", "0")]).await;
    let document = fetch_document(&app).await;
    assert_eq!(operations(&document), expected_routes(false));
    assert_eq!(send(&app, "GET", "/metrics").await.status(), 404);

    let port = app.metrics_port.expect("a metrics port");
    let metrics = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("token_service_http_requests_total"));
    let elsewhere = app
        .client
        .get(format!("http://127.0.0.1:{port}/api/v1/tokens/m"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        elsewhere.status(),
        404,
        "the metrics port serves nothing else"
    );
}

/// Every example in the document is an instance of the schema it illustrates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_examples_fit_their_schemas() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = fetch_document(&app).await;
    let mut checked = 0;
    let components = &document["components"];
    for (name, schema) in components["schemas"].as_object().unwrap() {
        if let Some(example) = schema.get("example") {
            let reference = json!({"$ref": format!("#/components/schemas/{name}")});
            assert_valid(&document, &reference, example, &format!("schema {name}"));
            checked += 1;
        }
    }
    for (name, response) in components["responses"].as_object().unwrap() {
        let content = &response["content"]["application/json"];
        let mut examples: Vec<Value> = content.get("example").cloned().into_iter().collect();
        if let Some(named) = content.get("examples").and_then(Value::as_object) {
            examples.extend(named.values().map(|e| e["value"].clone()));
        }
        assert!(!examples.is_empty(), "response {name} has an example");
        for example in examples {
            assert_valid(
                &document,
                &content["schema"],
                &example,
                &format!("response {name}"),
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} examples");
}

/// A validator for `schema` (usually a `$ref` into the document), with every object schema
/// closed: a property the document does not declare is an error, so undocumented fields in
/// an answer fail the check rather than slip through.
pub(crate) fn validator(document: &Value, schema: &Value) -> jsonschema::Validator {
    let mut schemas = document["components"]["schemas"].clone();
    close_objects(&mut schemas);
    let mut root = match schema {
        Value::Object(map) => map.clone(),
        other => panic!("not a schema: {other}"),
    };
    root.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    root.insert("components".into(), json!({ "schemas": schemas }));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&Value::Object(root))
        .unwrap_or_else(|e| panic!("the document's schema compiles: {e}"))
}

pub(crate) fn assert_valid(document: &Value, schema: &Value, instance: &Value, what: &str) {
    let validator = validator(document, schema);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{instance:#}");
}

fn close_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The schema and content type a documented response declares (following a `$ref` to a
/// shared response), and the name of that shared response, if any.
pub(crate) fn documented_response(
    document: &Value,
    method: &str,
    template: &str,
    status: u16,
) -> (Option<String>, Map<String, Value>) {
    let response =
        &document["paths"][template][method.to_lowercase()]["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {template} does not document {status}"
    );
    match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap().to_owned();
            let shared = &document["components"]["responses"][&name];
            (
                Some(name),
                shared["content"].as_object().cloned().unwrap_or_default(),
            )
        }
        None => (
            None,
            response["content"].as_object().cloned().unwrap_or_default(),
        ),
    }
}
