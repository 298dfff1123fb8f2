//! The binary itself: start-up refusals, `serve --dev`, `keygen`, graceful shutdown.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_token-service");

/// The binary with an empty environment (plus PATH) in `dir`.
fn command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the binary runs")
}

fn valid_env<'a>(cmd: &'a mut Command, db: &str) -> &'a mut Command {
    cmd.env("DATABASE_URL", db)
        .env(
            "CLIENT_JWT_SECRET",
            "cli-test-client-secret-0123456789abcdef",
        )
        .env(
            "INTERNAL_JWT_SECRET",
            "platform-connector:cli-key-0123456789",
        )
        .env(
            "TOKEN_ENCRYPTION_KEY",
            "cli-test-encryption-key-0123456789abcdef",
        )
        .env("API_HOST", "127.0.0.1")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(command(dir.path()).arg("serve"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CLIENT_JWT_SECRET"), "{stderr}");

    let db = format!("sqlite://{}/t.db", dir.path().display());
    let out = run(valid_env(&mut command(dir.path()), &db)
        .env("TOKEN_ENCRYPTION_KEY", "tiny-xyz")
        .arg("serve"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TOKEN_ENCRYPTION_KEY") && stderr.contains("32"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("tiny-xyz"),
        "the value itself is not echoed: {stderr}"
    );
    assert!(
        !dir.path().join("t.db").exists(),
        "nothing started before the check"
    );

    let out = run(valid_env(&mut command(dir.path()), &db)
        .env(
            "TOKEN_ENCRYPTION_OLD_KEYS",
            "key_v1:another-secret-0123456789abcdefgh",
        )
        .arg("serve"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than once"));
}

#[test]
fn a_dot_env_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "CLIENT_JWT_SECRET=from-dot-env-0123456789abcdef0123\n",
    )
    .unwrap();
    let out = run(command(dir.path()).arg("serve"));
    assert_eq!(out.status.code(), Some(2));
    // CLIENT_JWT_SECRET came from .env, so the next missing variable is reported.
    assert!(String::from_utf8_lossy(&out.stderr).contains("INTERNAL_JWT_SECRET"));
}

#[test]
fn dev_mode_refuses_production() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(command(dir.path())
        .env("APP_ENV", "production")
        .args(["serve", "--dev"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("APP_ENV"));
    assert!(!dir.path().join("data").exists());
}

#[test]
fn keygen_prints_a_usable_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(command(dir.path()).arg("keygen"));
    assert!(out.status.success());
    let secret = String::from_utf8(out.stdout).unwrap();
    assert!(secret.trim().len() >= 32);
}

#[test]
fn migrate_creates_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/m.db", dir.path().display());
    let out = run(command(dir.path()).env("DATABASE_URL", &db).arg("migrate"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = run(command(dir.path()).env("DATABASE_URL", &db).arg("migrate"));
    assert!(again.status.success(), "migrations are idempotent");
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dev_mode_works_without_settings_and_keeps_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let start = || {
        let child = command(dir.path())
            .env("TOKEN_API_EXTERNAL_PORT", port.to_string())
            .args(["serve", "--dev"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until_up(port);
        Server(child)
    };

    let mut server = start();
    let secrets = dir.path().join("data/dev-secrets.env");
    let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(dir.path().join("data/token-service.db").exists());
    let first = std::fs::read_to_string(&secrets).unwrap();
    sigterm(&server.0);
    assert!(wait_exit(&mut server.0).success());
    let mut printed = String::new();
    std::io::Read::read_to_string(server.0.stdout.as_mut().unwrap(), &mut printed).unwrap();
    assert!(printed.contains("curl -sS -X POST"), "{printed}");
    assert!(printed.contains("/api/v1/tokens/merchant-1?platform=shopify"));
    assert!(printed.contains("-X DELETE"));
    assert!(
        printed.contains(&format!("http://127.0.0.1:{port}/docs")),
        "{printed}"
    );

    let _again = start();
    assert_eq!(
        std::fs::read_to_string(&secrets).unwrap(),
        first,
        "secrets are reused"
    );
}

/// SIGTERM while requests are in flight: each of them is answered in full, then the process
/// exits cleanly. The requests are held open by sending their bodies in two halves.
#[test]
fn sigterm_finishes_in_flight_requests() {
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = format!("sqlite://{}/s.db", dir.path().display());
    let child = valid_env(&mut command(dir.path()), &db)
        .env("TOKEN_API_EXTERNAL_PORT", port.to_string())
        .arg("serve")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    wait_until_up(port);

    let shop = "shutdown.myshopify.com";
    let claims = serde_json::json!({"sub": shop, "exp": chrono::Utc::now().timestamp() + 600});
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"cli-test-client-secret-0123456789abcdef"),
    )
    .unwrap();
    let mut in_flight: Vec<(std::net::TcpStream, Vec<u8>)> = (0..4)
        .map(|i| {
            let body = serde_json::json!({
                "merchant_id": format!("m-{i}"), "platform_name": "shopify",
                "platform_shop_id": "1", "domain": shop,
                "token_data": {"access_token": "x"}, "token_type": "oauth"
            })
            .to_string()
            .into_bytes();
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let head = format!(
                "POST /api/v1/tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {jwt}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body[..body.len() / 2]).unwrap();
            (stream, body)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&server.0);
    std::thread::sleep(Duration::from_millis(300));

    for (stream, body) in &mut in_flight {
        stream.write_all(&body[body.len() / 2..]).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        assert!(answer.contains("\"status\":\"stored\""), "{answer}");
    }
    assert!(wait_exit(&mut server.0).success());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no new connections after shutdown"
    );
}

/// `rewrap` and `import-legacy` check the keyring as `serve` does, before touching anything.
#[test]
fn maintenance_commands_refuse_a_bad_keyring_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/k.db", dir.path().display());
    let commands: [&[&str]; 2] = [
        &["rewrap"],
        &["import-legacy", "--from", "postgres://127.0.0.1:1/legacy"],
    ];
    let primary = "maintenance-primary-secret-0123456789abcdef";
    for args in commands {
        let cases = [
            (
                format!("key_v1:{primary}-other"),
                [
                    "TOKEN_ENCRYPTION_OLD_KEYS",
                    "\"key_v1\" appears more than once",
                ],
            ),
            (
                "old:short-old-secret".to_owned(),
                ["TOKEN_ENCRYPTION_OLD_KEYS", "shorter than 32 characters"],
            ),
        ];
        for (old_keys, expected) in cases {
            let out = run(command(dir.path())
                .env("DATABASE_URL", &db)
                .env("TOKEN_ENCRYPTION_KEY", primary)
                .env("TOKEN_ENCRYPTION_OLD_KEYS", &old_keys)
                .args(args));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            for part in expected {
                assert!(stderr.contains(part), "{args:?}: {stderr}");
            }
            assert!(!stderr.contains("short-old-secret") && !stderr.contains(primary));
        }
    }
    assert!(!dir.path().join("k.db").exists(), "nothing was opened");
}

/// How one request of the load fared.
enum Fate {
    /// Answered 201 in full.
    Stored(String),
    /// The server never took it: not one byte came back (it had stopped accepting).
    NotTaken(String),
}

/// One store request on its own connection, read to the end.
fn store_once(port: u16, jwt: &str, shop: &str, merchant: &str) -> Option<Fate> {
    use std::io::{Read, Write};

    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = serde_json::json!({
        "merchant_id": merchant, "platform_name": "shopify", "platform_shop_id": "1",
        "domain": shop, "token_data": {"access_token": "x"}, "token_type": "oauth"
    })
    .to_string();
    let request = format!(
        "POST /api/v1/tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {jwt}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let sent = stream.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    if answer.is_empty() {
        return Some(Fate::NotTaken(merchant.to_owned()));
    }
    assert!(
        sent.is_ok(),
        "the request was cut off, yet answered: {answer}"
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("a full head");
    assert!(head.starts_with("HTTP/1.1 201"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(body).expect("a full body");
    assert_eq!(body["data"]["status"], "stored");
    Some(Fate::Stored(merchant.to_owned()))
}

/// SIGTERM in the middle of steady load: every request the server took is answered in full
/// and is durable, a request it did not take gets no bytes at all (never half an answer),
/// and the process exits cleanly.
#[test]
fn sigterm_during_load_answers_every_request_it_took() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db_path = dir.path().join("load.db");
    let db = format!("sqlite://{}", db_path.display());
    let child = valid_env(&mut command(dir.path()), &db)
        .env("TOKEN_API_EXTERNAL_PORT", port.to_string())
        // The load comes from one address and few shops; limits are not what is tested.
        .env("RATE_LIMIT_IP_PER_SEC", "0")
        .env("RATE_LIMIT_SHOP_PER_SEC", "0")
        .arg("serve")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    wait_until_up(port);

    let stop_at = Instant::now() + Duration::from_secs(30);
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            std::thread::spawn(move || {
                let shop = format!("load-{worker}.myshopify.com");
                let claims =
                    serde_json::json!({"sub": shop, "exp": chrono::Utc::now().timestamp() + 600});
                let jwt = jsonwebtoken::encode(
                    &jsonwebtoken::Header::default(),
                    &claims,
                    &jsonwebtoken::EncodingKey::from_secret(
                        b"cli-test-client-secret-0123456789abcdef",
                    ),
                )
                .unwrap();
                let mut fates = Vec::new();
                for i in 0.. {
                    let merchant = format!("load-{worker}-{i}");
                    match store_once(port, &jwt, &shop, &merchant) {
                        Some(fate) => fates.push(fate),
                        None => break, // refused: the server stopped accepting
                    }
                    if Instant::now() > stop_at {
                        break;
                    }
                }
                fates
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(800));
    sigterm(&server.0);
    let fates: Vec<Fate> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("every answer was whole"))
        .collect();
    assert!(wait_exit(&mut server.0).success());

    let stored: std::collections::BTreeSet<String> = fates
        .iter()
        .filter_map(|f| match f {
            Fate::Stored(m) => Some(m.clone()),
            Fate::NotTaken(_) => None,
        })
        .collect();
    eprintln!(
        "load across SIGTERM: {} answered 201, {} never taken",
        stored.len(),
        fates.len() - stored.len()
    );
    assert!(stored.len() >= 20, "the load ran: {} stored", stored.len());

    // What was answered 201 is in the database, and nothing else is.
    let in_database: std::collections::BTreeSet<String> =
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
            let rows: Vec<(String,)> = sqlx::query_as("SELECT merchant_id FROM platform_tokens")
                .fetch_all(&pool)
                .await
                .unwrap();
            pool.close().await;
            rows.into_iter().map(|(m,)| m).collect()
        });
    assert_eq!(in_database, stored);
    for fate in &fates {
        if let Fate::NotTaken(merchant) = fate {
            assert!(
                !in_database.contains(merchant),
                "{merchant} was stored unanswered"
            );
        }
    }
}
