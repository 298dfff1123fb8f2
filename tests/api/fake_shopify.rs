//! A loopback OAuth token endpoint that behaves like Shopify's, for refresh tests.
//!
//! Refresh tokens rotate; the previous refresh token stays usable until its replacement is
//! used. The server can be told to delay, fail, swallow an answer after processing it, or
//! answer `invalid_grant`, and it counts calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;

use crate::sweep::{self, SecretKind};

#[derive(Default)]
struct Lineage {
    current: String,
    previous: Option<String>,
}

#[derive(Default)]
pub struct Behaviour {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Answer 500 to this many next calls.
    pub fail_next: usize,
    /// Process this many next calls (rotating tokens) but never answer them.
    pub swallow_next: usize,
    /// Answer invalid_grant to every refresh.
    pub invalid_grant: bool,
    /// Refuse (400) the first exchange of these subject tokens.
    pub fail_exchange_once: Vec<String>,
}

#[derive(Default)]
struct Inner {
    behaviour: Behaviour,
    lineages: Vec<Lineage>,
    exchanges: HashMap<String, (String, String)>,
    refresh_calls: usize,
    exchange_calls: usize,
    exchanged_subjects: Vec<String>,
    shops: Vec<String>,
    issued: usize,
}

#[derive(Clone)]
pub struct FakeShopify {
    pub port: u16,
    pub prefix: String,
    inner: Arc<Mutex<Inner>>,
}

pub const CLIENT_ID: &str = "fake-client-id";
pub const CLIENT_SECRET: &str = "fake-client-secret-do-not-log-0123456789";

impl FakeShopify {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fake = FakeShopify {
            port,
            prefix: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            inner: Arc::default(),
        };
        let app = Router::new()
            .route("/{shop}/admin/oauth/access_token", post(token))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// Settings pointing the service at this server.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SHOPIFY_CLIENT_ID", CLIENT_ID.into()),
            ("SHOPIFY_CLIENT_SECRET", CLIENT_SECRET.into()),
            (
                "SHOPIFY_TOKEN_URL_TEMPLATE",
                format!(
                    "http://127.0.0.1:{}/{{shop}}/admin/oauth/access_token",
                    self.port
                ),
            ),
            ("OAUTH_HTTP_TIMEOUT", "1s".into()),
        ]
    }

    /// A refresh token this server will honour.
    pub fn issue_refresh_token(&self) -> String {
        let mut inner = self.inner.lock().unwrap();
        inner.issued += 1;
        let token = format!("shprt_{}_{}", self.prefix, inner.issued);
        sweep::register(SecretKind::TokenValue, &token);
        inner.lineages.push(Lineage {
            current: token.clone(),
            previous: None,
        });
        token
    }

    pub fn behave(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.inner.lock().unwrap().behaviour);
    }

    pub fn refresh_calls(&self) -> usize {
        self.inner.lock().unwrap().refresh_calls
    }

    pub fn exchange_calls(&self) -> usize {
        self.inner.lock().unwrap().exchange_calls
    }

    /// Subject tokens in the order they were successfully exchanged for the first time.
    pub fn exchanged_subjects(&self) -> Vec<String> {
        self.inner.lock().unwrap().exchanged_subjects.clone()
    }

    /// The shop domains the server was called for.
    pub fn shops(&self) -> Vec<String> {
        self.inner.lock().unwrap().shops.clone()
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Stands in for axum's `Json` (the service builds axum without that feature).
struct Reply(serde_json::Value);

fn reply_json(value: serde_json::Value) -> Reply {
    Reply(value)
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.0.to_string(),
        )
            .into_response()
    }
}

fn invalid_grant() -> Response {
    (
        StatusCode::BAD_REQUEST,
        reply_json(json!({"error": "invalid_grant"})),
    )
        .into_response()
}

async fn token(State(fake): State<FakeShopify>, Path(shop): Path<String>, body: Bytes) -> Response {
    let params = form(&body);
    if params.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || params.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return (
            StatusCode::UNAUTHORIZED,
            reply_json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let (delay, swallow, answer) = {
        let mut inner = fake.inner.lock().unwrap();
        inner.shops.push(shop);
        let grant_type = params.get("grant_type").cloned().unwrap_or_default();
        let answer = match grant_type.as_str() {
            "refresh_token" => refresh(&fake, &mut inner, &params),
            "urn:ietf:params:oauth:grant-type:token-exchange" => {
                exchange(&fake, &mut inner, &params)
            }
            _ => (
                StatusCode::BAD_REQUEST,
                reply_json(json!({"error": "unsupported_grant_type"})),
            )
                .into_response(),
        };
        let swallow = inner.behaviour.swallow_next > 0;
        if swallow {
            inner.behaviour.swallow_next -= 1;
        }
        (inner.behaviour.delay, swallow, answer)
    };
    tokio::time::sleep(delay).await;
    if swallow {
        // Processed, but the answer never arrives: the client times out.
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    answer
}

fn refresh(fake: &FakeShopify, inner: &mut Inner, params: &HashMap<String, String>) -> Response {
    inner.refresh_calls += 1;
    if inner.behaviour.fail_next > 0 {
        inner.behaviour.fail_next -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response();
    }
    if inner.behaviour.invalid_grant {
        return invalid_grant();
    }
    let presented = params.get("refresh_token").cloned().unwrap_or_default();
    inner.issued += 1;
    let n = inner.issued;
    let new_refresh = format!("shprt_{}_{n}", fake.prefix);
    let Some(lineage) = inner
        .lineages
        .iter_mut()
        .find(|l| l.current == presented || l.previous.as_ref() == Some(&presented))
    else {
        return invalid_grant();
    };
    if lineage.current == presented {
        // The replacement is being used: the one before it is dead from now on.
        lineage.previous = Some(presented);
    }
    lineage.current = new_refresh.clone();
    let new_access = format!("shpat_{}_{n}", fake.prefix);
    sweep::register(SecretKind::TokenValue, &new_access);
    sweep::register(SecretKind::TokenValue, &new_refresh);
    (
        StatusCode::OK,
        reply_json(json!({
            "access_token": new_access,
            "expires_in": 3600,
            "refresh_token": new_refresh,
            "refresh_token_expires_in": 7776000,
            "scope": "read_products,write_orders",
        })),
    )
        .into_response()
}

fn exchange(fake: &FakeShopify, inner: &mut Inner, params: &HashMap<String, String>) -> Response {
    inner.exchange_calls += 1;
    let subject = params.get("subject_token").cloned().unwrap_or_default();
    let offline = "urn:shopify:params:oauth:token-type:offline-access-token";
    if params.get("expiring").map(String::as_str) != Some("1")
        || params.get("subject_token_type").map(String::as_str) != Some(offline)
        || params.get("requested_token_type").map(String::as_str) != Some(offline)
    {
        return (
            StatusCode::BAD_REQUEST,
            reply_json(json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    if let Some(i) = inner
        .behaviour
        .fail_exchange_once
        .iter()
        .position(|s| *s == subject)
    {
        inner.behaviour.fail_exchange_once.remove(i);
        return (
            StatusCode::BAD_REQUEST,
            reply_json(json!({"error": "temporarily_refused"})),
        )
            .into_response();
    }
    // The same exchange retried within seven days answers the same pair.
    let (access, refresh) = match inner.exchanges.get(&subject) {
        Some(pair) => pair.clone(),
        None => {
            inner.issued += 1;
            let n = inner.issued;
            let pair = (
                format!("shpat_{}_x{n}", fake.prefix),
                format!("shprt_{}_x{n}", fake.prefix),
            );
            sweep::register(SecretKind::TokenValue, &pair.0);
            sweep::register(SecretKind::TokenValue, &pair.1);
            inner.exchanges.insert(subject.clone(), pair.clone());
            inner.exchanged_subjects.push(subject);
            inner.lineages.push(Lineage {
                current: pair.1.clone(),
                previous: None,
            });
            pair
        }
    };
    (
        StatusCode::OK,
        reply_json(json!({
            "access_token": access,
            "expires_in": 3600,
            "refresh_token": refresh,
            "refresh_token_expires_in": 7776000,
            "scope": "read_products",
        })),
    )
        .into_response()
}
