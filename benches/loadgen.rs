//! Load generator for the decision API: builds a synthetic tenant straight
//! through the store, starts the real server binary on it, drives Ping,
//! CheckAccess, ExplainEligibility, ListRequestablePackages and durable
//! self-service USER_ADD over gRPC on loopback at 1 and 64 calls in
//! flight, and prints Markdown tables (see docs/BENCHMARKS.md).
//!
//! `cargo bench --bench loadgen -- --scale 0.1 --data-dir /tmp/loadgen-0.1
//! [--seconds 5] [--warmup 1] [--store postgres://... [--replicas 2]]
//! [--only user-add,check-access] [--check]` (`--help` lists the options;
//! `--check` exits non-zero when a target is missed)
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
#[path = "shared/schema.rs"]
mod schema;
#[path = "loadgen/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use drive::{ALL, Outcome, Rpc, Timing};
use server::{Memory, Server};

const CONCURRENCY: [usize; 2] = [1, 64];
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// `cargo bench --bench loadgen -- [OPTIONS]`
#[derive(clap::Parser)]
#[command(about = "Load generator for the decision API against the real server binary")]
struct Args {
    /// Size of the synthetic tenant (1.0 = 100k users, 10k packages, 1M assignments).
    #[arg(long, default_value_t = 0.1, value_parser = positive)]
    scale: f64,
    /// Where the dataset is built and kept for later runs at the same scale
    /// [default: <temp dir>/loadgen-<scale>].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Measured seconds per RPC and concurrency.
    #[arg(long, default_value_t = 5.0, value_parser = positive)]
    seconds: f64,
    /// Warm-up seconds per RPC and concurrency.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// A postgres:// URL: copy the dataset into a fresh schema there and
    /// serve it from PostgreSQL.
    #[arg(long)]
    store: Option<String>,
    /// Servers over the one PostgreSQL store; calls are spread over them.
    #[arg(long, default_value_t = 1, requires = "store", value_parser = clap::value_parser!(u16).range(1..))]
    replicas: u16,
    /// Drive only these RPCs (Ping, the ceiling, always runs), e.g.
    /// `--only user-add` while profiling one of them.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Rpc>,
    /// Exit non-zero when a performance target is missed (the verdict of
    /// the table printed last).
    #[arg(long)]
    check: bool,
    /// cargo bench passes --bench to every bench target.
    #[arg(long, hide = true)]
    bench: bool,
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 => Ok(value),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

impl Args {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("loadgen-{}", self.scale)))
    }

    fn timing(&self) -> Timing {
        Timing {
            warmup: Duration::from_secs_f64(self.warmup),
            measured: Duration::from_secs_f64(self.seconds),
        }
    }

    /// The RPCs to drive, Ping first.
    fn rpcs(&self) -> Vec<Rpc> {
        ALL.into_iter()
            .filter(|rpc| self.only.is_empty() || *rpc == Rpc::Ping || self.only.contains(rpc))
            .collect()
    }
}

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let data_dir = args.data_dir();
    let rpcs = args.rpcs();
    let runtime = tokio::runtime::Runtime::new()?;
    let world = Arc::new(runtime.block_on(dataset::prepare(&data_dir, args.scale))?);

    let schema = match &args.store {
        Some(url) => Some(runtime.block_on(postgres::copy_into_fresh_schema(&data_dir, url))?),
        None => None,
    };
    let store = schema.as_ref().map(|(url, _)| url.as_str());
    let mut servers = Vec::new();
    for _ in 0..args.replicas {
        let server = Server::start(&data_dir, store)?;
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
            &rpcs,
            in_flight,
            &args.timing(),
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
    let missed = print_targets(&runs, startup, after_run);
    if args.check && missed > 0 {
        anyhow::bail!("{missed} performance target(s) missed");
    }
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
    for (rpc, o) in outcomes {
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

/// The performance targets, each met or missed (those of RPCs not driven
/// are left out); returns how many were missed.
fn print_targets(
    runs: &[(usize, BTreeMap<Rpc, Outcome>)],
    startup: Duration,
    memory: Memory,
) -> usize {
    let missed = std::cell::Cell::new(0);
    let at = |n: usize| &runs.iter().find(|(i, _)| *i == n).expect("measured").1;
    let ratio = |n: usize, rpc: Rpc| {
        let ping = at(n)[&Rpc::Ping].throughput();
        at(n).get(&rpc).map(|o| o.throughput() / ping)
    };
    let p99_ratio = |n: usize, rpc: Rpc| {
        let ping = millis(&at(n)[&Rpc::Ping], 0.99);
        at(n).get(&rpc).map(|o| millis(o, 0.99) / ping)
    };
    println!("\n| Target | measured | |\n|---|---:|---|");
    let row = |target: &str, measured: String, met: bool| {
        missed.set(missed.get() + usize::from(!met));
        println!(
            "| {target} | {measured} | {} |",
            if met { "met" } else { "**missed**" }
        );
    };
    for n in CONCURRENCY {
        if let Some(r) = ratio(n, Rpc::CheckAccess) {
            let target = format!("CheckAccess ≥ 0.9× Ping req/s ({n} in flight)");
            row(&target, format!("{r:.2}×"), r >= 0.9);
        }
        if let Some(r) = p99_ratio(n, Rpc::CheckAccess) {
            let target = format!("CheckAccess p99 ≤ 1.3× Ping p99 ({n} in flight)");
            row(&target, format!("{r:.2}×"), r <= 1.3);
        }
        if let Some(r) = ratio(n, Rpc::ExplainEligibility) {
            let target = format!("CanRequest ≥ 0.5× Ping req/s ({n} in flight)");
            row(&target, format!("{r:.2}×"), r >= 0.5);
        }
    }
    if let Some(o) = at(1).get(&Rpc::ListRequestablePackages) {
        let p99 = millis(o, 0.99);
        let target = "ListRequestablePackages p99 ≤ 5 ms (1 in flight)";
        row(target, format!("{p99:.2} ms"), p99 <= 5.0);
    }
    if let Some(o) = at(64).get(&Rpc::UserAdd) {
        let adds = o.throughput();
        row(
            "USER_ADD ≥ 8,000/s (64 in flight)",
            format!("{adds:.0}/s"),
            adds >= 8000.0,
        );
    }
    let s = startup.as_secs_f64();
    row("start-up ≤ 5 s", format!("{s:.2} s"), s <= 5.0);
    let gib = memory.peak_kib as f64 * 1024.0 / GIB;
    row("RSS ≤ 1 GiB (peak)", format!("{gib:.2} GiB"), gib <= 1.0);
    missed.get()
}
