//! token-bench: drives a running token-service over HTTP and measures its storage engine's
//! ceiling. `bench/run.sh` starts the service and calls these commands; each measuring
//! command prints one JSON line per run (see `record.rs`), which `report` turns into results.

mod ceiling;
mod http;
mod load;
mod population;
mod record;
mod report;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::load::{Pace, Scenario, Target, Window};
use crate::record::{Kind, RunRecord};

#[derive(Debug, Parser)]
#[command(name = "token-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store every merchant's tokens through the API (all must answer 201).
    Seed {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 16)]
        connections: usize,
    },
    /// Run scenarios against the service; one JSON line per (scenario, concurrency).
    Load {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        window: WindowArgs,
        /// `sqlite` or `postgres`, recorded with each run.
        #[arg(long)]
        backend: String,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "read-one,read-six,upsert,mixed"
        )]
        scenarios: Vec<Scenario>,
        /// Connections, each sending its next request when it has its answer.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// Open loop: this many requests per second in total, whatever the answers' pace.
        #[arg(long)]
        rate: Option<f64>,
        /// The service's process id, to report its peak RSS (VmHWM) and CPU per run.
        #[arg(long)]
        pid: Option<u32>,
        /// Names a non-default service configuration, e.g. `one-commit-per-request`.
        #[arg(long)]
        variant: Option<String>,
    },
    /// The read transaction in-process on a SQLite file, without the service.
    SqliteCeiling {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        merchants: usize,
        #[command(flatten)]
        window: WindowArgs,
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// Reads per transaction (1: one commit per read).
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Write the results JSON and print the markdown report from collected run lines.
    Report {
        /// JSON lines written by `load`, `sqlite-ceiling` and run.sh's pgbench step.
        #[arg(long)]
        runs: PathBuf,
        /// A JSON object describing the run (date, commit, machine load, sizes).
        #[arg(long)]
        meta: PathBuf,
        #[arg(long)]
        json_out: PathBuf,
        #[arg(long)]
        markdown_out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// The service's address, e.g. 127.0.0.1:8007.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value_t = 10_000)]
    merchants: usize,
}

impl TargetArgs {
    /// The credentials come from the environment, not the command line (which `ps` shows):
    /// `BENCH_SERVICE_KEY`, an allow-listed internal service's key, and
    /// `BENCH_CLIENT_SECRET`, the service's `CLIENT_JWT_SECRET`, to sign the shops' JWTs.
    fn target(&self) -> anyhow::Result<Arc<Target>> {
        let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
        Target::new(
            self.addr,
            self.merchants,
            &var("BENCH_SERVICE_KEY")?,
            &var("BENCH_CLIENT_SECRET")?,
        )
        .map(Arc::new)
    }
}

#[derive(Debug, Args)]
struct WindowArgs {
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
}

impl WindowArgs {
    fn window(&self) -> Window {
        Window {
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
        }
    }
}

/// Connections used by an open-loop run: enough that answers never wait for a free one
/// at half of the closed-loop maximum.
const OPEN_LOOP_CONNECTIONS: usize = 64;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread: the generator should take as little of the 2-core machine as it can.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Seed {
            target,
            connections,
        } => {
            let started = Instant::now();
            let rows = load::seed(target.target()?, connections).await?;
            eprintln!(
                "token-bench: seeded {} merchants, {rows} tokens in {:.1} s",
                target.merchants,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Load {
            target,
            window,
            backend,
            scenarios,
            concurrency,
            rate,
            pid,
            variant,
        } => {
            let target = target.target()?;
            for &scenario in &scenarios {
                let levels = match rate {
                    Some(_) => vec![OPEN_LOOP_CONNECTIONS],
                    None => concurrency.clone(),
                };
                for connections in levels {
                    let reset = pid.map(reset_peak_rss);
                    let pace = rate.map_or(Pace::Closed, Pace::Open);
                    let (summary, cpu) = load::run(
                        target.clone(),
                        scenario,
                        connections,
                        pace,
                        window.window(),
                        pid,
                    )
                    .await?;
                    let mut record = RunRecord::new(
                        Kind::Service,
                        &backend,
                        scenario.name(),
                        connections,
                        summary,
                    );
                    record.variant = variant.clone();
                    if let Some(rate) = rate {
                        record.mode = "open".into();
                        record.target_rate = Some(rate);
                    }
                    record.peak_rss_kib = pid.and_then(peak_rss_kib);
                    record.service_cpu_s = cpu.service;
                    record.generator_cpu_s = cpu.generator;
                    record.peak_rss_reset = reset;
                    record.print();
                    eprintln!(
                        "token-bench: {backend} {} c={connections}: {:.0} req/s, p99 {:.2} ms, \
                         {} errors, service CPU {:.0} µs/request",
                        scenario.name(),
                        record.rps,
                        record.p99_ms.unwrap_or_default(),
                        record.errors,
                        record.service_cpu_us_per_request().unwrap_or_default(),
                    );
                }
            }
        }
        Command::SqliteCeiling {
            db,
            merchants,
            window,
            concurrency,
            batch,
        } => {
            anyhow::ensure!(
                batch > 0 && merchants > 0,
                "batch and merchants must be positive"
            );
            let conn = Arc::new(Mutex::new(ceiling::open(&db)?));
            for clients in concurrency {
                let summary =
                    ceiling::run(conn.clone(), merchants, clients, batch, window.window())?;
                let mut record =
                    RunRecord::new(Kind::Ceiling, "sqlite", "read-one", clients, summary);
                record.batch = Some(batch);
                record.print();
                eprintln!(
                    "token-bench: sqlite ceiling c={clients} batch={batch}: {:.0} reads/s",
                    record.rps
                );
            }
        }
        Command::Report {
            runs,
            meta,
            json_out,
            markdown_out,
        } => {
            let text = std::fs::read_to_string(&runs)
                .with_context(|| format!("reading {}", runs.display()))?;
            let records = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).with_context(|| format!("parsing run line {l}")))
                .collect::<anyhow::Result<Vec<RunRecord>>>()?;
            let meta: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&meta)
                    .with_context(|| format!("reading {}", meta.display()))?,
            )?;
            let json = report::json(&records, &meta);
            std::fs::write(&json_out, serde_json::to_string_pretty(&json)? + "\n")?;
            let markdown = report::markdown(&records, &meta);
            std::fs::write(&markdown_out, &markdown)?;
            print!("{markdown}");
        }
    }
    Ok(())
}

/// Resets the process's peak RSS (Linux: writing 5 to clear_refs); false if refused.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// VmHWM of the process, KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
