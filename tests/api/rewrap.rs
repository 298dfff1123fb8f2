//! `token-service rewrap`: batches, dry runs, failures it reports, a kill in the middle, and
//! writes that race with it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use token_service::lifecycle::rewrap::{BatchOutcome, Rewrapper};

use crate::helpers::{token_body, Backend, TestApp, READER_KEY};
use crate::keys::{
    all_ciphertexts, count_with_prefix, insert_legacy_row, keyring, keyring_env, legacy_secret,
    legacy_vectors, read_token, restart_with_keys, run_command, spawn_command, spawn_with_keys,
    text, K2_SECRET, K3_SECRET,
};
use crate::on_both_backends;

on_both_backends!(
    dry_run_counts_and_changes_nothing,
    undecryptable_rows_are_listed_and_fail_the_run,
    killed_midway_then_run_again_completes,
    a_row_changed_between_read_and_write_keeps_the_newer_data,
    writes_during_a_run_are_never_lost,
);

const SHOP: &str = "rewrap-shop.myshopify.com";
const NEW: &str = "tse1.key_v2.";

/// key_v2 primary, key_v1 (the original service's secret) kept for reading.
fn rotated() -> Vec<(String, String)> {
    keyring_env(("key_v2", K2_SECRET), &[("key_v1", &legacy_secret())])
}

/// A service with key_v2 primary over `api_rows` rows stored under key_v1 through the API
/// (merchants `m-api-<i>`) and `legacy_rows` rows as the original wrote them (`m-leg-<i>`).
/// Returns it with every merchant's expected token_data.
async fn app_with_old_rows(
    backend: Backend,
    api_rows: usize,
    legacy_rows: usize,
) -> (TestApp, HashMap<String, Value>) {
    let app = spawn_with_keys(backend, &keyring_env(("key_v1", &legacy_secret()), &[])).await;
    let mut expected = HashMap::new();
    for i in 0..api_rows {
        let merchant = format!("m-api-{i}");
        let data = json!({"access_token": format!("shpat_api_{i}")});
        let body = token_body(&merchant, "shopify", SHOP, data.clone());
        assert_eq!(app.store(SHOP, &body).await.status(), 201);
        expected.insert(merchant, data);
    }
    let vectors = legacy_vectors();
    for i in 0..legacy_rows {
        let merchant = format!("m-leg-{i}");
        let vector = &vectors[i % vectors.len()];
        insert_legacy_row(
            &app,
            &merchant,
            "shopify",
            SHOP,
            &vector.encrypted_token,
            "key_v1",
        )
        .await;
        expected.insert(merchant, vector.token_data.clone());
    }
    (restart_with_keys(app, &rotated()).await, expected)
}

async fn assert_all_read(app: &TestApp, expected: &HashMap<String, Value>) {
    for (merchant, data) in expected {
        let token = read_token(app, merchant).await.expect("the token is there");
        assert_eq!(&token["token_data"], data, "{merchant}");
    }
}

async fn dry_run_counts_and_changes_nothing(backend: Backend) {
    let (app, _) = app_with_old_rows(backend, 2, 3).await;
    let before = all_ciphertexts(&app.db).await;
    let out = run_command(&app.database, &rotated(), &["rewrap", "--dry-run"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("not in the current format: 5 (key key_v1: 2, legacy: 3)"),
        "{stdout}"
    );
    assert!(stdout.contains("would rewrap: 5"), "{stdout}");
    assert!(stdout.contains("dry run: nothing was written"), "{stdout}");
    assert_eq!(all_ciphertexts(&app.db).await, before);
    assert!(
        app.audit_rows("m-leg-0").await.is_empty(),
        "a dry run audits nothing"
    );
}

async fn undecryptable_rows_are_listed_and_fail_the_run(backend: Backend) {
    let (app, expected) = app_with_old_rows(backend, 2, 2).await;
    // One row under a secret the keyring does not hold, one naming a key it lacks.
    let foreign = keyring(&keyring_env(("key_v1", K3_SECRET), &[]));
    let row = token_service::crypto::RowIdentity {
        merchant_id: "m-bad-secret",
        platform_name: "shopify",
    };
    let (foreign_ciphertext, _) = foreign.seal(row, br#"{"access_token":"unreachable"}"#);
    let bad_secret = insert_legacy_row(
        &app,
        "m-bad-secret",
        "shopify",
        SHOP,
        &foreign_ciphertext,
        "key_v1",
    )
    .await;
    let vector = &legacy_vectors()[0];
    let bad_key = insert_legacy_row(
        &app,
        "m-bad-key",
        "bigcommerce",
        SHOP,
        &vector.encrypted_token,
        "gone",
    )
    .await;

    let out = run_command(&app.database, &rotated(), &["rewrap"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("rewrapped: 4"), "{stdout}");
    assert!(stdout.contains("failed: 2"), "{stdout}");
    assert!(stdout.contains(&format!(
        "failed: id={bad_secret} merchant_id=m-bad-secret platform=shopify code=DECRYPTION_FAILED"
    )));
    assert!(stdout.contains(&format!(
        "failed: id={bad_key} merchant_id=m-bad-key platform=bigcommerce code=UNKNOWN_KEY"
    )));
    assert!(
        stdout.contains("re-check: 2 row(s) not in the current format"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("remaining: id={bad_key}")),
        "{stdout}"
    );
    assert!(stderr.contains("could not be decrypted"), "{stderr}");
    for secret in [
        legacy_secret().as_str(),
        K2_SECRET,
        &foreign_ciphertext,
        &vector.encrypted_token,
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "output leaks a secret"
        );
    }
    let audit = app.audit_rows("m-bad-key").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].accessed_by.as_str(),
            audit[0].success,
            audit[0].error_code.as_deref()
        ),
        ("cli:rewrap", false, Some("UNKNOWN_KEY"))
    );
    assert_all_read(&app, &expected).await;
}

async fn killed_midway_then_run_again_completes(backend: Backend) {
    let (app, expected) = app_with_old_rows(backend, 10, 290).await;
    let total = expected.len();
    let args = ["rewrap", "--batch-size", "10", "--pause-ms", "40"];
    let mut child = spawn_command(&app.database, &rotated(), &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_with_prefix(&app.db, NEW).await < 30 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "rewrap ended before it was killed"
        );
        assert!(Instant::now() < deadline, "rewrap made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL: no clean-up of any kind.
    child.wait().unwrap();
    let converted = count_with_prefix(&app.db, NEW).await;
    assert!(
        converted >= 30 && converted < total,
        "killed mid-run: {converted}/{total}"
    );
    // A killed run loses nothing: every row still reads, in whichever format it is.
    assert_all_read(&app, &expected).await;

    let out = run_command(&app.database, &rotated(), &["rewrap", "--batch-size", "50"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("rewrapped: {}", total - converted)),
        "only what was left is converted: {stdout}"
    );
    assert_eq!(count_with_prefix(&app.db, NEW).await, total);
    assert_all_read(&app, &expected).await;
}

async fn a_row_changed_between_read_and_write_keeps_the_newer_data(backend: Backend) {
    let (app, mut expected) = app_with_old_rows(backend, 4, 0).await;
    let keyring = keyring(&rotated());
    let mut rewrapper = Rewrapper::new(&app.db, &keyring, 100);
    let batch = rewrapper.prepare_next().await.unwrap().expect("a batch");
    assert_eq!(batch.len(), 4);

    // Between rewrap's read and its write, the service stores over one row and deletes another.
    let newer = json!({"access_token": "shpat_newer"});
    let body = token_body("m-api-1", "shopify", SHOP, newer.clone());
    assert_eq!(app.store(SHOP, &body).await.status(), 201);
    assert_eq!(app.delete(SHOP, "m-api-2", "shopify").await.status(), 200);
    expected.insert("m-api-1".into(), newer);
    expected.remove("m-api-2");

    let outcome = rewrapper.apply(&batch).await.unwrap();
    assert_eq!(
        outcome,
        BatchOutcome {
            rewrapped: 2,
            changed_concurrently: 2
        }
    );
    assert!(
        rewrapper.prepare_next().await.unwrap().is_none(),
        "nothing left"
    );
    assert_all_read(&app, &expected).await;
    assert!(
        read_token(&app, "m-api-2").await.is_none(),
        "a deleted row stays deleted"
    );
    let audit = app.audit_rows("m-api-1").await;
    let rewrap = audit
        .iter()
        .find(|a| a.accessed_by == "cli:rewrap")
        .unwrap();
    assert_eq!(
        (rewrap.success, rewrap.error_code.as_deref()),
        (false, Some("CHANGED_CONCURRENTLY"))
    );
}

/// Writers overwrite (and read back) three quarters of the rows, over and over, from the
/// moment rewrap starts until it ends: every acknowledged write must survive. (Whether a write lands between a
/// batch's read and its write is up to timing here; the test above forces that case.)
async fn writes_during_a_run_are_never_lost(backend: Backend) {
    const ROWS: usize = 200;
    let (app, mut expected) = app_with_old_rows(backend, 0, ROWS).await;
    let app = Arc::new(app);
    let args = ["rewrap", "--batch-size", "10", "--pause-ms", "5"];
    let mut child = spawn_command(&app.database, &rotated(), &args);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let stderr = std::thread::spawn(move || {
        let mut started_tx = Some(started_tx);
        let mut all = String::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            if line.contains(r#""message":"started""#) {
                let _ = started_tx.take().map(|tx| tx.send(()));
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    tokio::time::timeout(Duration::from_secs(60), started)
        .await
        .expect("rewrap started")
        .unwrap();

    let running = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (app, running) = (app.clone(), running.clone());
            tokio::spawn(async move {
                // Writer w owns merchants 4k + w, k = 0, 1, 2…: its last write is final.
                let mut last = HashMap::new();
                let mut n = 0;
                while running.load(Ordering::Relaxed) {
                    let merchant = format!("m-leg-{}", (n * 4 + w) % ROWS);
                    let data = json!({"access_token": format!("shpat_w{w}_{n}")});
                    let body = token_body(&merchant, "shopify", SHOP, data.clone());
                    let response = app.store(SHOP, &body).await;
                    assert_eq!(response.status(), 201, "the service keeps serving");
                    // Reads during the run see the latest write, whatever its format.
                    let response = app.read(READER_KEY, &merchant, "").await;
                    assert_eq!(response.status(), 200, "the service keeps serving reads");
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body["data"]["tokens"][0]["token_data"], data);
                    last.insert(merchant, data);
                    n += 1;
                }
                (n, last)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "rewrap did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.store(false, Ordering::Relaxed);
    let mut writes = 0;
    for writer in writers {
        let (n, last) = writer.await.unwrap();
        writes += n;
        expected.extend(last);
    }
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let stderr = stderr.join().unwrap();
    assert!(child.wait().unwrap().success(), "{stdout}\n{stderr}");
    let rewrapped: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rewrapped: "))
        .and_then(|n| n.parse().ok())
        .expect("a count of rewrapped rows");
    // Rows no writer touches (merchant 4k + 3) are left to rewrap alone.
    assert!(
        rewrapped >= ROWS / 4,
        "rewrap converted rows itself: {stdout}"
    );
    assert!(writes >= 10, "the writes overlapped the run ({writes})");
    assert_eq!(count_with_prefix(&app.db, NEW).await, ROWS);
    assert_all_read(&app, &expected).await;
}
