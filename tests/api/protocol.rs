//! The wire: envelope, headers, unknown routes and methods, probes, database outages.

use serde_json::Value;

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

on_both_backends!(envelope_and_headers_on_every_response, probes_answer);

fn assert_common_headers(response: &reqwest::Response) {
    let headers = response.headers();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-service-name"], "token-service");
    let request_id = headers["x-request-id"].to_str().unwrap();
    assert!(
        request_id.starts_with("req_") && request_id.len() == 16,
        "{request_id}"
    );
    assert!(headers.contains_key("x-correlation-id"));
}

async fn envelope_and_headers_on_every_response(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        ("GET", "/health", 200, None),
        ("GET", "/no/such/route", 404, Some("NOT_FOUND")),
        ("PUT", "/api/v1/tokens", 405, Some("METHOD_NOT_ALLOWED")),
        ("GET", "/api/v1/tokens", 405, Some("METHOD_NOT_ALLOWED")),
        ("POST", "/api/v1/tokens", 401, Some("UNAUTHORIZED")),
        ("GET", "/api/v1/tokens/m-1", 401, Some("UNAUTHORIZED")),
    ];
    for (method, path, status, code) in cases {
        let response = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .header("x-correlation-id", "corr-proto")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_common_headers(&response);
        assert_eq!(response.headers()["x-correlation-id"], "corr-proto");
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["meta"]["request_id"], request_id.as_str());
        assert_eq!(body["meta"]["correlation_id"], "corr-proto");
        assert!(
            chrono::DateTime::parse_from_rfc3339(body["meta"]["timestamp"].as_str().unwrap())
                .is_ok()
        );
        match code {
            None => assert!(body["data"].is_object()),
            Some(code) => {
                assert_eq!(body["error"]["code"], code, "{method} {path}");
                assert!(body["error"]["message"].is_string());
            }
        }
    }
}

async fn probes_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let health: Value = app
        .client
        .get(format!("{}/health", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["data"]["status"], "healthy");
    assert_eq!(health["data"]["service"], "token-service");
    let ready = app
        .client
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
