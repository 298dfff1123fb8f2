//! A lean HTTP/1.1 client: one keep-alive connection per worker, nothing pooled or shared,
//! so that the load generator spends as little of the machine's CPU as it can.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A connection that reconnects on the next request after a failure.
pub struct Connection {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header"),
            sender: None,
        }
    }

    async fn ready(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("just connected");
        sender.ready().await?;
        Ok(sender)
    }

    /// Sends one request and reads the whole answer. A transport error drops the connection.
    pub async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        bearer: &HeaderValue,
        json_body: Option<String>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let result = self
            .try_send(method, path_and_query, bearer, json_body)
            .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_send(
        &mut self,
        method: Method,
        path_and_query: &str,
        bearer: &HeaderValue,
        json_body: Option<String>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let host = self.host.clone();
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, host)
            .header(AUTHORIZATION, bearer);
        let body = match json_body {
            Some(text) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(text))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body)?;
        let response = self.ready().await?.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// `Bearer <credential>` as a header value.
pub fn bearer(credential: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {credential}")).context("credential is not a header")
}
