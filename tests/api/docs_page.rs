//! `/docs` in a real browser: the page renders every operation from the service's own
//! document, loads nothing from anywhere else, and leaves a screenshot for CI.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

use crate::chromium::{self, Browser};
use crate::helpers::{spawn_app, Backend};

/// Where the screenshot is kept for CI: `target/` of the checkout, wherever cargo builds.
fn screenshot_path() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("docs-screenshot.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_every_operation_in_headless_chromium() {
    let Some(binary) = chromium::find() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("Chromium is not installed and CI=true (apt-get install -y chromium)");
        }
        eprintln!("skipping the /docs browser test: no chromium on the PATH");
        return;
    };
    let app = spawn_app(Backend::Sqlite).await;
    let origin = app.address.clone();
    let shot = screenshot_path();
    let report = tokio::task::spawn_blocking(move || visit_docs(&binary, &origin, &shot))
        .await
        .unwrap();

    for operation in [
        "POST /api/v1/tokens",
        "GET /api/v1/tokens/{merchant_id}",
        "DELETE /api/v1/tokens/{merchant_id}/{platform}",
        "POST /api/v1/tokens/{merchant_id}/{platform}/refresh",
        "GET /health",
        "GET /metrics",
    ] {
        assert!(
            report.operations.iter().any(|o| o == operation),
            "{operation} not shown: {:?}",
            report.operations
        );
    }
    assert!(
        report.store_body_example.contains("merchant_id"),
        "the store operation shows its request body: {}",
        report.store_body_example
    );
    assert!(
        report.failures.is_empty(),
        "failed requests: {:#?}",
        report.failures
    );
    assert!(
        report.errors.is_empty(),
        "page errors: {:#?}",
        report.errors
    );
    let local = format!("{}/", app.address);
    assert!(
        report.requested.iter().all(|url| url.starts_with(&local)),
        "every request goes to the service: {:?}",
        report.requested
    );
    for asset in [
        "/docs",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/init.js",
        "/openapi.json",
    ] {
        assert!(
            report
                .requested
                .contains(&format!("{}{asset}", app.address)),
            "{asset} was loaded: {:?}",
            report.requested
        );
    }
    let png = std::fs::read(screenshot_path()).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot"
    );
}

/// What the browser saw.
struct Report {
    /// "METHOD /path" of every operation block on the page.
    operations: Vec<String>,
    /// The text of the store operation once expanded.
    store_body_example: String,
    /// Every URL requested.
    requested: Vec<String>,
    /// Requests that failed or answered an error status.
    failures: Vec<String>,
    /// Console errors, CSP violations and uncaught exceptions.
    errors: Vec<String>,
}

fn visit_docs(binary: &std::path::Path, origin: &str, screenshot: &std::path::Path) -> Report {
    let mut browser = Browser::launch(binary);
    let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}));
    let attached = browser.call(
        None,
        "Target.attachToTarget",
        json!({"targetId": target["targetId"], "flatten": true}),
    );
    let session = attached["sessionId"].as_str().unwrap().to_owned();
    let s = Some(session.as_str());
    for domain in [
        "Network.enable",
        "Page.enable",
        "Runtime.enable",
        "Log.enable",
    ] {
        browser.call(s, domain, json!({}));
    }
    browser.call(s, "Page.navigate", json!({"url": format!("{origin}/docs")}));

    // Swagger UI renders after fetching the document; wait for every operation block.
    let deadline = Instant::now() + Duration::from_secs(30);
    let operations_js = "Array.from(document.querySelectorAll('.opblock-summary')).map(s => \
         s.querySelector('.opblock-summary-method').textContent.trim() + ' ' + \
         s.querySelector('.opblock-summary-path').getAttribute('data-path'))";
    let operations = loop {
        let found = browser.evaluate(&session, operations_js);
        let found: Vec<String> = serde_json::from_value(found).unwrap_or_default();
        if found.len() >= 10 || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Open the store operation: its request body and example render from the schemas.
    browser.evaluate(
        &session,
        "document.querySelector('#operations-tokens-store_token .opblock-summary-control').click()",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let store_body_example = loop {
        let text = browser.evaluate(
            &session,
            "(document.querySelector('#operations-tokens-store_token .opblock-body') || {}).innerText || ''",
        );
        let text = text.as_str().unwrap_or_default().to_owned();
        if text.contains("merchant_id") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    browser.settle(Duration::from_millis(500));

    let shot = browser.call(
        s,
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true}),
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    std::fs::write(screenshot, png).unwrap();
    eprintln!("/docs screenshot: {}", screenshot.display());

    let mut report = Report {
        operations,
        store_body_example,
        requested: Vec::new(),
        failures: Vec::new(),
        errors: Vec::new(),
    };
    for event in &browser.events {
        let params = &event["params"];
        match event["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => {
                let url = params["request"]["url"].as_str().unwrap_or_default();
                if !url.starts_with("data:") {
                    report.requested.push(url.to_owned());
                }
            }
            "Network.loadingFailed" => report.failures.push(params.to_string()),
            "Network.responseReceived" if params["response"]["status"].as_u64() >= Some(400) => {
                report.failures.push(format!(
                    "{} {}",
                    params["response"]["status"], params["response"]["url"]
                ));
            }
            "Log.entryAdded" if params["entry"]["level"] == "error" => {
                report.errors.push(params["entry"].to_string());
            }
            "Runtime.exceptionThrown" => report.errors.push(params.to_string()),
            "Runtime.consoleAPICalled" if params["type"] == "error" => {
                report.errors.push(params.to_string());
            }
            _ => {}
        }
    }
    report
}
