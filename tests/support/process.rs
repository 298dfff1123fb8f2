//! Running the real binary as a server process in tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_token-service");

pub const CLIENT_SECRET: &str = "process-test-client-secret-0123456789ab";
pub const SERVICE_KEY: &str = "process-test-reader-key-0123456789";
pub const ENCRYPTION_KEY: &str = "process-test-encryption-key-0123456789ab";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `token-service serve` child process; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
}

impl ServerProcess {
    /// Starts `serve` on `database_url` with the test secrets and waits until it listens.
    pub fn start(database_url: &str, port: u16, extra: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("CLIENT_JWT_SECRET", CLIENT_SECRET)
            .env(
                "INTERNAL_JWT_SECRET",
                format!("platform-connector:{SERVICE_KEY}"),
            )
            .env("TOKEN_ENCRYPTION_KEY", ENCRYPTION_KEY)
            .env("API_HOST", "127.0.0.1")
            .env("TOKEN_API_EXTERNAL_PORT", port.to_string())
            .env("LOGGING_LEVEL", "warn")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().expect("the binary starts");
        let server = Self { child, port };
        server.wait_until_up();
        server
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no flush, as a power cut or OOM kill would do.
    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client JWT for `shop` signed with the test secret.
pub fn client_jwt(shop: &str) -> String {
    let claims = serde_json::json!({"sub": shop, "exp": chrono::Utc::now().timestamp() + 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(CLIENT_SECRET.as_bytes()),
    )
    .unwrap()
}
