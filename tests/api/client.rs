//! The suite's HTTP client: reqwest, with the secret-leak sweep on every exchange.
//!
//! It offers the builder methods the tests use. `send()` reads the whole response, scans its
//! headers and body (and the logs written meanwhile) for registered secrets, fails the test
//! on a hit, and hands back an equivalent `reqwest::Response` built from what it read.

use std::fmt::Display;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{IntoUrl, Method, RequestBuilder};
use serde::Serialize;

use crate::sweep;

#[derive(Debug, Clone, Default)]
pub struct TestClient {
    inner: reqwest::Client,
}

impl TestClient {
    pub fn get(&self, url: impl IntoUrl) -> TestRequest {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: impl IntoUrl) -> TestRequest {
        self.request(Method::POST, url)
    }

    pub fn delete(&self, url: impl IntoUrl) -> TestRequest {
        self.request(Method::DELETE, url)
    }

    pub fn request(&self, method: Method, url: impl IntoUrl) -> TestRequest {
        TestRequest {
            inner: self.inner.request(method, url),
        }
    }
}

/// A request being built; see [`TestClient`].
#[derive(Debug)]
#[must_use]
pub struct TestRequest {
    inner: RequestBuilder,
}

impl TestRequest {
    fn map(self, f: impl FnOnce(RequestBuilder) -> RequestBuilder) -> Self {
        Self {
            inner: f(self.inner),
        }
    }

    pub fn bearer_auth(self, token: impl Display) -> Self {
        self.map(|r| r.bearer_auth(token))
    }

    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.map(|r| r.header(key, value))
    }

    pub fn json<T: Serialize + ?Sized>(self, json: &T) -> Self {
        self.map(|r| r.json(json))
    }

    pub fn body(self, body: impl Into<reqwest::Body>) -> Self {
        self.map(|r| r.body(body))
    }

    /// Sends the request and reads the whole response; fails the test if the response or
    /// the logs written meanwhile hold a registered secret.
    pub async fn send(self) -> reqwest::Result<reqwest::Response> {
        let (client, request) = self.inner.build_split();
        let request = request?;
        let target = format!(
            "{} {}",
            request.method(),
            sweep::redacted(request.url().path())
        );
        if let Some(body) = request.body().and_then(reqwest::Body::as_bytes) {
            sweep::register_request_body(body);
        }
        let response = client.execute(request).await?;
        let (status, version) = (response.status(), response.version());
        let headers = response.headers().clone();
        let body = response.bytes().await?;

        let mut leaks = sweep::response_leaks(status, &headers, &body);
        leaks.extend(sweep::take_log_leaks());
        assert!(
            leaks.is_empty(),
            "secret-leak sweep, after {target}: {}",
            leaks.join("; ")
        );

        let mut rebuilt = http::Response::new(body);
        *rebuilt.status_mut() = status;
        *rebuilt.version_mut() = version;
        *rebuilt.headers_mut() = headers;
        Ok(reqwest::Response::from(rebuilt))
    }
}
