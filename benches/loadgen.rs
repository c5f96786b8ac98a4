//! Load generator for the decision API: builds a synthetic tenant straight
//! through the store, starts the real server binary on it, drives Ping,
//! CheckAccess, ExplainEligibility, ListRequestablePackages and durable
//! self-service USER_ADD over gRPC on loopback at 1 and 64 calls in
//! flight, and prints Markdown tables (see docs/BENCHMARKS.md).
//!
//! `cargo bench --bench loadgen -- --scale 0.1 --data-dir /tmp/loadgen-0.1
//! [--seconds 5] [--warmup 1] [--store postgres://... [--replicas 2]]`
//!
//! With `--store`, the dataset (built in sled in the data directory) is
//! copied into a fresh schema of that PostgreSQL database, `--replicas`
//! servers (default 1) run on it, and the calls are spread over them; the
//! schema is dropped afterwards.

// Kept under benches/loadgen/ so cargo does not take them for benches.
#[path = "loadgen/dataset.rs"]
mod dataset;
#[path = "loadgen/drive.rs"]
mod drive;
#[path = "loadgen/postgres.rs"]
mod postgres;
#[path = "loadgen/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use drive::{ALL, Outcome, Rpc, Timing};
use server::{Memory, Server};

const CONCURRENCY: [usize; 2] = [1, 64];
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

struct Args {
    scale: f64,
    data_dir: PathBuf,
    timing: Timing,
    store: Option<String>,
    replicas: usize,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut scale = 0.1;
        let mut data_dir = None;
        let mut seconds = 5.0;
        let mut warmup = 1.0;
        let mut store = None;
        let mut replicas = 1;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--scale" => scale = value()?.parse()?,
                "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
                "--seconds" => seconds = value()?.parse()?,
                "--warmup" => warmup = value()?.parse()?,
                "--store" => store = Some(value()?),
                "--replicas" => replicas = value()?.parse()?,
                // cargo bench passes --bench to every bench target.
                "--bench" => {}
                other => anyhow::bail!(
                    "unknown argument {other:?}; use --scale, --data-dir, --seconds, --warmup, \
                     --store, --replicas"
                ),
            }
        }
        anyhow::ensure!(scale > 0.0, "--scale must be positive");
        anyhow::ensure!(replicas >= 1, "--replicas must be at least 1");
        anyhow::ensure!(
            replicas == 1 || store.is_some(),
            "--replicas needs --store postgres://..."
        );
        Ok(Self {
            scale,
            data_dir: data_dir
                .unwrap_or_else(|| std::env::temp_dir().join(format!("loadgen-{scale}"))),
            timing: Timing {
                warmup: Duration::from_secs_f64(warmup),
                measured: Duration::from_secs_f64(seconds),
            },
            store,
            replicas,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let world = Arc::new(runtime.block_on(dataset::prepare(&args.data_dir, args.scale))?);

    let schema = match &args.store {
        Some(url) => Some(runtime.block_on(postgres::copy_into_fresh_schema(&args.data_dir, url))?),
        None => None,
    };
    let store = schema.as_ref().map(|(url, _)| url.as_str());
    let mut servers = Vec::new();
    for _ in 0..args.replicas {
        let server = Server::start(&args.data_dir, store)?;
        println!(
            "server on {} after {:.2} s",
            server.address,
            server.startup.as_secs_f64()
        );
        servers.push(server);
    }
    let after_start = servers[0].memory()?;
    let addresses: Vec<_> = servers.iter().map(|s| s.address).collect();
    let mut runs = Vec::new();
    for in_flight in CONCURRENCY {
        println!("measuring at {in_flight} in flight ...");
        let outcomes = runtime.block_on(drive::measure(
            &addresses,
            Arc::clone(&world),
            in_flight,
            &args.timing,
        ))?;
        runs.push((in_flight, outcomes));
    }
    let after_run = servers[0].memory()?;
    let startup = servers[0].startup;
    for server in servers {
        server.stop()?;
    }
    if let (Some(url), Some((_, name))) = (&args.store, &schema) {
        runtime.block_on(postgres::drop_schema(url, name))?;
    }

    println!();
    match &args.store {
        Some(_) => println!("PostgreSQL store, {} replica(s)", args.replicas),
        None => println!("sled store"),
    }
    println!("{:?}", world.shape);
    for (in_flight, outcomes) in &runs {
        print_table(*in_flight, outcomes);
    }
    print_process(startup, after_start, after_run);
    print_targets(&runs, startup, after_run);
    Ok(())
}

fn millis(outcome: &Outcome, quantile: f64) -> f64 {
    outcome.latency.value_at_quantile(quantile) as f64 / 1000.0
}

fn print_table(in_flight: usize, outcomes: &BTreeMap<Rpc, Outcome>) {
    let ping = &outcomes[&Rpc::Ping];
    println!("\n#### {in_flight} in flight\n");
    println!(
        "| RPC | req/s | p50 ms | p99 ms | × Ping req/s | p99 ÷ Ping p99 | calls | errors | positive |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for rpc in ALL {
        let o = &outcomes[&rpc];
        let calls = o.latency.len();
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.2} | {:.2} | {} | {} | {:.0}%{} |",
            rpc.name(),
            o.throughput(),
            millis(o, 0.5),
            millis(o, 0.99),
            o.throughput() / ping.throughput(),
            millis(o, 0.99) / millis(ping, 0.99),
            calls,
            o.errors,
            100.0 * o.positive as f64 / calls.max(1) as f64,
            if o.exhausted {
                " (ran out of adds)"
            } else {
                ""
            },
        );
    }
}

fn print_process(startup: Duration, after_start: Memory, after_run: Memory) {
    println!("\n| Server process | value |\n|---|---:|");
    println!(
        "| start-up (spawn → listening) | {:.2} s |",
        startup.as_secs_f64()
    );
    println!(
        "| RSS after start-up | {:.0} MiB |",
        after_start.rss_kib as f64 / 1024.0
    );
    println!(
        "| RSS after the run | {:.0} MiB |",
        after_run.rss_kib as f64 / 1024.0
    );
    println!(
        "| peak RSS (VmHWM) | {:.0} MiB |",
        after_run.peak_kib as f64 / 1024.0
    );
}

/// The targets from the issue, each met or missed.
fn print_targets(runs: &[(usize, BTreeMap<Rpc, Outcome>)], startup: Duration, memory: Memory) {
    let at = |n: usize| &runs.iter().find(|(i, _)| *i == n).expect("measured").1;
    let ratio = |n: usize, rpc: Rpc| at(n)[&rpc].throughput() / at(n)[&Rpc::Ping].throughput();
    let p99_ratio =
        |n: usize, rpc: Rpc| millis(&at(n)[&rpc], 0.99) / millis(&at(n)[&Rpc::Ping], 0.99);
    println!("\n| Target | measured | |\n|---|---:|---|");
    let row = |target: &str, measured: String, met: bool| {
        println!(
            "| {target} | {measured} | {} |",
            if met { "met" } else { "**missed**" }
        );
    };
    for n in CONCURRENCY {
        let r = ratio(n, Rpc::CheckAccess);
        row(
            &format!("CheckAccess ≥ 0.8× Ping req/s ({n} in flight)"),
            format!("{r:.2}×"),
            r >= 0.8,
        );
        let r = p99_ratio(n, Rpc::CheckAccess);
        row(
            &format!("CheckAccess p99 ≤ 1.5× Ping p99 ({n} in flight)"),
            format!("{r:.2}×"),
            r <= 1.5,
        );
        let r = ratio(n, Rpc::ExplainEligibility);
        row(
            &format!("CanRequest ≥ 0.5× Ping req/s ({n} in flight)"),
            format!("{r:.2}×"),
            r >= 0.5,
        );
    }
    let p99 = millis(&at(1)[&Rpc::ListRequestablePackages], 0.99);
    row(
        "ListRequestablePackages p99 ≤ 5 ms (1 in flight)",
        format!("{p99:.2} ms"),
        p99 <= 5.0,
    );
    let adds = at(64)[&Rpc::UserAdd].throughput();
    row(
        "USER_ADD ≥ 8,000/s (64 in flight)",
        format!("{adds:.0}/s"),
        adds >= 8000.0,
    );
    let s = startup.as_secs_f64();
    row("start-up ≤ 10 s", format!("{s:.2} s"), s <= 10.0);
    let gib = memory.peak_kib as f64 * 1024.0 / GIB;
    row("RSS ≤ 1.5 GiB (peak)", format!("{gib:.2} GiB"), gib <= 1.5);
}
