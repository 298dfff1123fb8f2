//! The HTTP scenarios: closed loop (each connection sends as soon as it has its answer) or
//! open loop (requests scheduled at a fixed rate; latency counted from the scheduled time,
//! so a slow answer also delays, and is charged for, the requests queued behind it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use tokio::task::JoinSet;

use crate::http::{bearer, Connection};
use crate::population::{self, Rng, FIRST_PLATFORM};
use crate::stats::{self, Summary};

/// What each request of a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Read one merchant's one platform token.
    ReadOne,
    /// Read all six tokens of a merchant that has six platforms.
    ReadSix,
    /// Replace a merchant's shopify token (the update path of the upsert).
    Upsert,
    /// 90% read-one, 10% upsert.
    Mixed,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::ReadOne => "read-one",
            Scenario::ReadSix => "read-six",
            Scenario::Upsert => "upsert",
            Scenario::Mixed => "mixed",
        }
    }
}

/// The service under test and the credentials and data set the requests need.
pub struct Target {
    pub addr: SocketAddr,
    pub merchants: usize,
    service_bearer: HeaderValue,
    client_bearers: Vec<HeaderValue>,
    six_platform: Vec<usize>,
    versions: AtomicU64,
}

impl Target {
    pub fn new(
        addr: SocketAddr,
        merchants: usize,
        service_key: &str,
        client_secret: &str,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(merchants > 0, "at least one merchant is needed");
        let client_bearers = population::client_jwts(client_secret, merchants)?
            .iter()
            .map(|jwt| bearer(jwt))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            addr,
            merchants,
            service_bearer: bearer(service_key)?,
            client_bearers,
            six_platform: population::six_platform_merchants(merchants),
            versions: AtomicU64::new(1),
        })
    }

    /// Sends one request of `scenario`; `Ok(Err(why))` is an answer that is not the expected one.
    async fn one(
        &self,
        conn: &mut Connection,
        scenario: Scenario,
        rng: &mut Rng,
    ) -> anyhow::Result<Result<(), String>> {
        let scenario = match scenario {
            Scenario::Mixed if rng.below(10) == 0 => Scenario::Upsert,
            Scenario::Mixed => Scenario::ReadOne,
            other => other,
        };
        match scenario {
            Scenario::ReadOne | Scenario::Mixed => {
                let i = rng.below(self.merchants);
                let path = format!(
                    "/api/v1/tokens/{}?platform={FIRST_PLATFORM}",
                    population::merchant_id(i)
                );
                let (status, body) = conn
                    .send(Method::GET, &path, &self.service_bearer, None)
                    .await?;
                Ok(expect_tokens(status, &body, 1))
            }
            Scenario::ReadSix => {
                anyhow::ensure!(
                    !self.six_platform.is_empty(),
                    "read-six needs at least 6 merchants"
                );
                let i = self.six_platform[rng.below(self.six_platform.len())];
                let path = format!("/api/v1/tokens/{}", population::merchant_id(i));
                let (status, body) = conn
                    .send(Method::GET, &path, &self.service_bearer, None)
                    .await?;
                Ok(expect_tokens(status, &body, 6))
            }
            Scenario::Upsert => {
                let i = rng.below(self.merchants);
                let version = self.versions.fetch_add(1, Ordering::Relaxed);
                let body = population::store_body(i, FIRST_PLATFORM, version);
                self.store(conn, i, body).await
            }
        }
    }

    /// Stores one token as merchant `i`'s shop; success is 201.
    pub async fn store(
        &self,
        conn: &mut Connection,
        i: usize,
        body: String,
    ) -> anyhow::Result<Result<(), String>> {
        let (status, answer) = conn
            .send(
                Method::POST,
                "/api/v1/tokens",
                &self.client_bearers[i],
                Some(body),
            )
            .await?;
        Ok(if status == StatusCode::CREATED {
            Ok(())
        } else {
            Err(describe(status, &answer))
        })
    }
}

/// A 200 whose body lists exactly `count` tokens and no failures.
fn expect_tokens(status: StatusCode, body: &[u8], count: usize) -> Result<(), String> {
    if status != StatusCode::OK {
        return Err(describe(status, body));
    }
    let listed = occurrences(body, br#""platform_name":"#);
    if listed != count || occurrences(body, br#""failed":[]"#) != 1 {
        return Err(format!(
            "expected {count} tokens, got {listed}: {}",
            describe(status, body)
        ));
    }
    Ok(())
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| w == &needle)
        .count()
}

fn describe(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    format!("HTTP {status}: {text}")
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    Closed,
    /// Requests per second, spread evenly across the run.
    Open(f64),
}

/// Warm-up, then a measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub duration: Duration,
}

struct WorkerResult {
    histogram: hdrhistogram::Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

/// CPU time (user + system) used during the measured window, seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// The service process (all its threads), when its pid is known.
    pub service: Option<f64>,
    /// This load generator.
    pub generator: Option<f64>,
}

/// User + system CPU seconds of a process so far (`/proc/<pid>/stat`, USER_HZ = 100).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Runs `scenario` over `connections` keep-alive connections and summarises the window.
pub async fn run(
    target: Arc<Target>,
    scenario: Scenario,
    connections: usize,
    pace: Pace,
    window: Window,
    pid: Option<u32>,
) -> anyhow::Result<(Summary, CpuUse)> {
    let begin = Instant::now();
    let measure_from = begin + window.warmup;
    let end = measure_from + window.duration;
    let cpu = tokio::spawn(async move {
        let sample = || {
            (
                pid.and_then(|p| cpu_seconds(&p.to_string())),
                cpu_seconds("self"),
            )
        };
        tokio::time::sleep_until(measure_from.into()).await;
        let (service, generator) = sample();
        tokio::time::sleep_until(end.into()).await;
        let (service_after, generator_after) = sample();
        CpuUse {
            service: service.zip(service_after).map(|(a, b)| b - a),
            generator: generator.zip(generator_after).map(|(a, b)| b - a),
        }
    });
    let next_slot = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for id in 0..connections {
        let target = target.clone();
        let next_slot = next_slot.clone();
        workers.spawn(async move {
            let mut rng =
                Rng::new(population::mix(id as u64 + 1) ^ begin.elapsed().as_nanos() as u64);
            let mut conn = Connection::new(target.addr);
            let mut out = WorkerResult {
                histogram: stats::histogram(),
                ok: 0,
                errors: 0,
                first_error: None,
            };
            loop {
                let started = match pace {
                    Pace::Closed => Instant::now(),
                    Pace::Open(rate) => {
                        let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                        begin + Duration::from_secs_f64(slot as f64 / rate)
                    }
                };
                if started >= end {
                    break;
                }
                if let Pace::Open(_) = pace {
                    tokio::time::sleep_until(started.into()).await;
                }
                let result = match target.one(&mut conn, scenario, &mut rng).await {
                    Ok(answer) => answer,
                    Err(e) => Err(format!("{e:#}")),
                };
                let done = Instant::now();
                // Closed loop: what completed inside the window. Open loop: what was
                // scheduled inside it, however late it finished.
                let in_window =
                    started >= measure_from && (matches!(pace, Pace::Open(_)) || done <= end);
                if in_window {
                    stats::record(&mut out.histogram, done - started);
                }
                match result {
                    Ok(()) if in_window => out.ok += 1,
                    Ok(()) => {}
                    Err(why) => {
                        if started >= measure_from {
                            out.errors += 1;
                        }
                        out.first_error.get_or_insert(why);
                    }
                }
            }
            out
        });
    }
    let mut histogram = stats::histogram();
    let (mut ok, mut errors) = (0, 0);
    while let Some(joined) = workers.join_next().await {
        let worker = joined?;
        histogram.add(&worker.histogram)?;
        ok += worker.ok;
        errors += worker.errors;
        if let Some(why) = worker.first_error {
            eprintln!("token-bench: {} error: {why}", scenario.name());
        }
    }
    let summary = Summary::new(&histogram, ok, errors, window.duration);
    Ok((summary, cpu.await?))
}

/// Stores every seeded row through the API; fails unless all of them answer 201.
pub async fn seed(target: Arc<Target>, connections: usize) -> anyhow::Result<usize> {
    let rows = Arc::new(population::all_rows(target.merchants));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..connections {
        let (target, rows, next) = (target.clone(), rows.clone(), next.clone());
        workers.spawn(async move {
            let mut conn = Connection::new(target.addr);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&(i, platform)) = rows.get(n) else {
                    return anyhow::Ok(());
                };
                let body = population::store_body(i, platform, 0);
                if let Err(why) = target.store(&mut conn, i, body).await? {
                    anyhow::bail!("seeding merchant {i} {platform}: {why}");
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined??;
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lists_are_checked_by_count_and_failures() {
        let one = br#"{"data":{"tokens":[{"platform_name":"shopify"}],"failed":[]}}"#;
        assert!(expect_tokens(StatusCode::OK, one, 1).is_ok());
        assert!(expect_tokens(StatusCode::OK, one, 6).is_err());
        assert!(expect_tokens(StatusCode::SERVICE_UNAVAILABLE, one, 1).is_err());
        let failed = br#"{"data":{"tokens":[],"failed":[{"platform_name":"shopify","code":"X"}]}}"#;
        assert!(expect_tokens(StatusCode::OK, failed, 1).is_err());
    }
}
