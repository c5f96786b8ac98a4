//! The store's durable write path on its own, without gRPC or the service's
//! work per request: closed-loop writers each submit jobs that write
//! `--keys` keys of 200 bytes (28 is what one self-service USER_ADD
//! writes; 20 matches pgbench's reference insert, benches/pgbench/), and
//! each job is acknowledged only once durable, as every write is. Prints
//! jobs/s and latency per number of writers, beside which pgbench's rate
//! for the same transaction size is the ceiling (docs/BENCHMARKS.md).
//!
//! `cargo bench --bench store_commit -- [--store postgres://...] [--keys 28]
//! [--writers 1,8,64] [--seconds 5]` (`--help` lists the options)

#[path = "shared/schema.rs"]
mod schema;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use entitlements::store::{self, Location, Store, StoreError};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(about = "Durable write jobs per second through the store alone")]
struct Args {
    /// A postgres:// URL (a fresh schema there, dropped afterwards);
    /// without it, sled in a temporary directory.
    #[arg(long)]
    store: Option<String>,
    /// Keys each job writes, 200 bytes each.
    #[arg(long, default_value_t = 28)]
    keys: usize,
    /// Writers in flight, one measurement each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 64])]
    writers: Vec<usize>,
    /// Measured seconds per number of writers (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// cargo bench passes --bench to every bench target.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let schema = format!("store_commit_{}", std::process::id());
    let location = match &args.store {
        Some(url) => Location::Postgres(runtime.block_on(schema::fresh(url, &schema))?),
        None => Location::Sled(dir.path().to_path_buf()),
    };
    let mut options = store::Options::default();
    options.postgres.migrate = true;
    let store = store::open(&location, options)?;
    println!(
        "{} store, jobs of {} keys of 200 bytes\n",
        match location {
            Location::Sled(_) => "sled",
            Location::Postgres(_) => "PostgreSQL",
        },
        args.keys
    );
    println!("| writers | jobs/s | keys/s | p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|");
    let next = Arc::new(AtomicU64::new(0));
    for &writers in &args.writers {
        let run = |length| measure(&store, &next, writers, args.keys, length);
        runtime.block_on(run(Duration::from_secs(1)))?;
        let (latency, elapsed) = runtime.block_on(run(Duration::from_secs_f64(args.seconds)))?;
        let jobs = latency.len() as f64 / elapsed.as_secs_f64();
        let ms = |q| latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {writers} | {jobs:.0} | {:.0} | {:.2} | {:.2} |",
            jobs * args.keys as f64,
            ms(0.5),
            ms(0.99)
        );
    }
    store.close()?;
    drop(store);
    if let Some(url) = &args.store {
        runtime.block_on(schema::remove(url, &schema))?;
    }
    Ok(())
}

/// `writers` closed loops of jobs for `length`; the latency of each job
/// (µs) and the wall time until the last one answered.
async fn measure(
    store: &Arc<dyn Store>,
    next: &Arc<AtomicU64>,
    writers: usize,
    keys: usize,
    length: Duration,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let started = Instant::now();
    let deadline = started + length;
    let mut loops = JoinSet::new();
    for _ in 0..writers {
        let (store, next) = (Arc::clone(store), Arc::clone(next));
        loops.spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            while Instant::now() < deadline {
                let job = next.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                store::write::<_, StoreError, _>(store.as_ref(), move |txn| {
                    for key in 0..keys {
                        txn.put(
                            format!("bench/{job:012}/{key:02}").into_bytes(),
                            vec![b'x'; 200],
                        );
                    }
                    Ok(())
                })
                .await?;
                latency.saturating_record(began.elapsed().as_micros().max(1) as u64);
            }
            anyhow::Ok(latency)
        });
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(done) = loops.join_next().await {
        total.add(done??)?;
    }
    Ok((total, started.elapsed()))
}
