//! Hostile clients: slow or oversized requests get a clear 4xx/5xx or are cut off, and the
//! service keeps answering everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{client_jwt, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    slow_headers_are_cut_off,
    idle_connections_cannot_exhaust_the_server,
    oversized_headers_are_refused,
    a_stalled_body_times_out_in_the_envelope,
    hostile_json_is_refused,
);

const LIMITS: [(&str, &str); 3] = [
    ("HTTP_HEADER_READ_TIMEOUT_SECS", "1"),
    ("HTTP_MAX_CONNECTIONS", "20"),
    ("REQUEST_TIMEOUT_SECS", "2"),
];

fn connect(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// The service still answers a normal request promptly.
async fn still_serving(app: &TestApp) {
    let started = Instant::now();
    let request = app.client.get(format!("{}/health", app.address)).send();
    let response = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the service stopped answering")
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "health took {:?}",
        started.elapsed()
    );
}

async fn slow_headers_are_cut_off(backend: Backend) {
    let app = spawn_app_with(backend, &LIMITS).await;
    let mut stream = connect(&app);
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        // One header byte at a time, never finishing the head.
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(100));
            if stream.write_all(b"X").is_err() {
                return true;
            }
            let mut buf = [0u8; 64];
            stream.set_nonblocking(true).unwrap();
            let read = stream.read(&mut buf);
            stream.set_nonblocking(false).unwrap();
            if matches!(read, Ok(0)) || matches!(read, Ok(n) if n > 0) {
                return true;
            }
        }
        false
    });
    still_serving(&app).await;
    assert!(closed.await.unwrap(), "the slow client was never cut off");
    assert!(started.elapsed() < Duration::from_secs(4));
}

async fn idle_connections_cannot_exhaust_the_server(backend: Backend) {
    let app = spawn_app_with(backend, &LIMITS).await;
    // More idle connections than the server serves at once.
    let idle: Vec<TcpStream> = (0..30).map(|_| connect(&app)).collect();
    // They are dropped once the header timeout passes, and others get served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    still_serving(&app).await;
    drop(idle);
}

async fn oversized_headers_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, &LIMITS).await;
    let response = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-padding", "p".repeat(64 * 1024))
        .send()
        .await;
    match response {
        Ok(r) => assert_eq!(r.status(), 431),
        // The server may close the connection as soon as the limit is hit.
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    still_serving(&app).await;
}

async fn a_stalled_body_times_out_in_the_envelope(backend: Backend) {
    let app = spawn_app_with(backend, &LIMITS).await;
    let mut stream = connect(&app);
    let head = format!(
        "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"merchant_id\":",
        client_jwt("shop-a.myshopify.com")
    );
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(5));
    still_serving(&app).await;
}

async fn hostile_json_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, &LIMITS).await;
    let shop = "shop-a.myshopify.com";
    let post = |body: String| {
        app.client
            .post(format!("{}/api/v1/tokens", app.address))
            .bearer_auth(client_jwt(shop))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let body = format!(r#"{{"merchant_id":"m","token_data":{{"x":{deep}}}}}"#);
    assert_eq!(
        post(body).await.unwrap().status(),
        413,
        "50 KB of brackets is over the body limit"
    );
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let body = format!(r#"{{"merchant_id":"m","token_data":{{"x":{deep}}}}}"#);
    assert_eq!(post(body).await.unwrap().status(), 422);
    let huge_number = format!(
        r#"{{"merchant_id":"m-num","platform_name":"custom","platform_shop_id":"1","domain":"{shop}","token_type":"api_key","token_data":{{"n":1e999999,"i":{}}}}}"#,
        "9".repeat(400)
    );
    let status = post(huge_number).await.unwrap().status();
    assert!(status == 422 || status == 201, "{status}");
    still_serving(&app).await;
}
