//! SQLite on a full disk or a file made read-only: the same clear failure as a PostgreSQL
//! outage (503 `SERVICE_UNAVAILABLE`, retryable, promptly; `/ready` 503 while `/health` is
//! 200), recovery without a restart once the condition clears, no acknowledged write lost
//! and an intact database file.
//!
//! The faults are real: a small tmpfs filled to the last byte, and `chattr +i` on the
//! database and its WAL (which makes writes through already-open descriptors fail even for
//! root). Both need root; without it the tests are skipped, or fail when `CI=true`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, SqliteConnection};

use crate::helpers::{
    spawn_app_on, token_body, TestApp, TestDatabase, CLIENT_SECRET, ENCRYPTION_KEY, READER_KEY,
};
use crate::keys::BIN;

const SHOP: &str = "faults-shop.myshopify.com";
/// A 503 must come within the database timeouts (5 s busy, 5 s acquire), not hang.
const PROMPT: Duration = Duration::from_secs(10);

/// Runs a privileged command. `None` when it is not permitted here: the test is skipped,
/// unless `CI=true`, where it must be able to run.
fn privileged(program: &str, args: &[&str]) -> Option<()> {
    let output = Command::new(program).args(args).output();
    let failure = match &output {
        Ok(out) if out.status.success() => return Some(()),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => e.to_string(),
    };
    let what = format!("`{program} {}` is not permitted: {failure}", args.join(" "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} (CI=true: this test must run; run it as root)");
    }
    eprintln!("skipping a storage fault test: {what}");
    None
}

/// A small tmpfs mounted for one test; lazily unmounted when dropped (the service may still
/// hold its files open until the test's runtime stops).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_owned();
        privileged(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path],
        )?;
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Files made immutable (`chattr +i`) until dropped.
struct Immutable {
    files: Vec<PathBuf>,
}

impl Immutable {
    fn set(files: &[PathBuf]) -> Option<Self> {
        let mut done = Self { files: Vec::new() };
        for file in files {
            privileged("chattr", &["+i", file.to_str().unwrap()])?;
            done.files.push(file.clone());
        }
        Some(done)
    }

    fn clear(mut self) {
        for file in std::mem::take(&mut self.files) {
            let status = Command::new("chattr")
                .args(["-i", file.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chattr -i");
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = Command::new("chattr").arg("-i").arg(file).status();
        }
    }
}

/// Fills the filesystem holding `dir` to the last byte; the filler file's path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    let err = loop {
        if let Err(e) = file.write_all(&chunk) {
            break e;
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    path
}

/// Stores a token for each merchant and returns what each one holds (all acknowledged).
async fn acknowledged_writes(app: &TestApp, prefix: &str, n: usize) -> BTreeMap<String, Value> {
    let mut written = BTreeMap::new();
    for i in 0..n {
        let merchant = format!("m-{prefix}-{i}");
        let data = json!({"access_token": format!("shpat_{prefix}_{i}"), "n": i});
        let response = app
            .store(SHOP, &token_body(&merchant, "shopify", SHOP, data.clone()))
            .await;
        assert_eq!(response.status(), 201);
        written.insert(merchant, data);
    }
    written
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap()
}

/// Asserts a 503 `SERVICE_UNAVAILABLE`, retryable, in the error envelope, in good time.
async fn assert_unavailable(what: &str, started: Instant, response: reqwest::Response) {
    assert!(
        started.elapsed() < PROMPT,
        "{what} answered after {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 503, "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "SERVICE_UNAVAILABLE",
        "{what}: {body}"
    );
    assert_eq!(
        body["error"]["details"]["retryable"], true,
        "{what}: {body}"
    );
    assert!(body["meta"]["request_id"].is_string(), "{what}: {body}");
}

/// While the fault lasts: writes and reads (which write their audit row) fail clearly,
/// `/ready` says not ready, `/health` says the process is up.
async fn assert_fails_clearly(app: &TestApp, known_merchant: &str) {
    let started = Instant::now();
    let body = token_body("m-during-fault", "shopify", SHOP, json!({"k": "lost?"}));
    assert_unavailable("a store", started, app.store(SHOP, &body).await).await;

    let started = Instant::now();
    let read = app.read(READER_KEY, known_merchant, "").await;
    assert_unavailable("a read", started, read).await;

    let started = Instant::now();
    let delete = app.delete(SHOP, known_merchant, "shopify").await;
    assert_unavailable("a delete", started, delete).await;

    let started = Instant::now();
    assert_unavailable("/ready", started, get(app, "/ready").await).await;
    assert_eq!(get(app, "/health").await.status(), 200);
}

/// Once the fault is gone, without a restart: ready, writes and reads work, every
/// acknowledged write is there as written, the refused write is not, the file is intact.
async fn assert_recovered(app: &TestApp, acknowledged: &BTreeMap<String, Value>) {
    assert_eq!(get(app, "/ready").await.status(), 200);
    let body = token_body("m-after-fault", "shopify", SHOP, json!({"k": "after"}));
    assert_eq!(app.store(SHOP, &body).await.status(), 201);
    for (merchant, data) in acknowledged {
        let read = app.read_data(merchant).await;
        assert_eq!(read["tokens"][0]["token_data"], *data, "{merchant}");
    }
    assert_eq!(
        app.read_data("m-after-fault").await["tokens"][0]["token_data"]["k"],
        "after"
    );
    let refused = "SELECT COUNT(*) FROM platform_tokens WHERE merchant_id = 'm-during-fault'";
    assert_eq!(
        app.count(refused).await,
        0,
        "a write answered 503 was applied"
    );
    assert_eq!(integrity_check(&app.database.url).await, "ok");
}

/// `PRAGMA integrity_check` on a connection of its own.
async fn integrity_check(url: &str) -> String {
    let mut conn = SqliteConnection::connect(url).await.unwrap();
    let result: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    result
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/token-service.db", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_answers_503_and_recovers_when_space_is_freed() {
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        return;
    };
    let app = spawn_app_on(TestDatabase::sqlite_at(&sqlite_url(tmpfs.path())), &[]).await;
    let acknowledged = acknowledged_writes(&app, "full", 5).await;

    let filler = fill(tmpfs.path());
    assert_fails_clearly(&app, "m-full-0").await;
    // Still full: the service keeps answering, and keeps answering clearly.
    assert_fails_clearly(&app, "m-full-1").await;

    std::fs::remove_file(filler).unwrap();
    assert_recovered(&app, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_database_answers_503_and_recovers_when_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let app = spawn_app_on(TestDatabase::sqlite_at(&url), &[]).await;
    let acknowledged = acknowledged_writes(&app, "ro", 5).await;

    let db = dir.path().join("token-service.db");
    let wal = dir.path().join("token-service.db-wal");
    assert!(wal.exists(), "the service runs in WAL mode");
    // Not the -shm file: it is memory-mapped, and SQLite rebuilds it anyway.
    let Some(immutable) = Immutable::set(&[db, wal]) else {
        return;
    };
    assert_fails_clearly(&app, "m-ro-0").await;

    immutable.clear();
    assert_recovered(&app, &acknowledged).await;
}

/// `serve` with a valid configuration; its output once it exits (killed after 30 s).
fn serve(url: &str) -> Output {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", url)
        .env("CLIENT_JWT_SECRET", CLIENT_SECRET)
        .env(
            "INTERNAL_JWT_SECRET",
            format!("platform-connector:{READER_KEY}"),
        )
        .env("TOKEN_ENCRYPTION_KEY", ENCRYPTION_KEY)
        .env("API_HOST", "127.0.0.1")
        .env("TOKEN_API_EXTERNAL_PORT", "0")
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_on_a_read_only_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let migrated = Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", &url)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let db = dir.path().join("token-service.db");
    let before = std::fs::read(&db).unwrap();
    let Some(immutable) = Immutable::set(std::slice::from_ref(&db)) else {
        return;
    };

    let out = tokio::task::spawn_blocking(move || serve(&url))
        .await
        .unwrap();
    immutable.clear();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "serve must exit with an error, not run or be killed: {:?} {stderr}",
        out.status
    );
    assert!(
        stderr.contains("read-only") && stderr.contains(db.to_str().unwrap()),
        "a clear reason, naming the file: {stderr}"
    );
    for secret in [CLIENT_SECRET, READER_KEY, ENCRYPTION_KEY] {
        assert!(!stderr.contains(secret), "a secret in the error output");
    }
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the file was changed"
    );
}
