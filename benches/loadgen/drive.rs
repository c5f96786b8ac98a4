//! Closed-loop load: N workers each keep one call outstanding. The RPCs
//! take turns in short slices (Ping, CheckAccess, ..., Ping, ...) rather
//! than one long block each, so drift during the run (compaction, a noisy
//! neighbour on a 2-core machine) lands on every RPC alike and the ratios
//! to Ping stay fair.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entitlements::pb::assignment_requests_client::AssignmentRequestsClient;
use entitlements::pb::decisions_client::DecisionsClient;
use entitlements::pb::{
    AssignmentRequest, CheckAccessRequest, CreateAssignmentRequestRequest,
    ExplainEligibilityRequest, ListRequestablePackagesRequest, PingRequest, RequestType,
};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::dataset::{Rng, World, package_id, resource_id, user_id};
use super::server::READER;

/// Length of one turn of one RPC.
const SLICE: Duration = Duration::from_millis(500);
/// The most connections the load spreads over.
const MAX_CHANNELS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Rpc {
    Ping,
    CheckAccess,
    ExplainEligibility,
    ListRequestablePackages,
    UserAdd,
}

pub const ALL: [Rpc; 5] = [
    Rpc::Ping,
    Rpc::CheckAccess,
    Rpc::ExplainEligibility,
    Rpc::ListRequestablePackages,
    Rpc::UserAdd,
];

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Ping => "Ping",
            Rpc::CheckAccess => "CheckAccess",
            Rpc::ExplainEligibility => "ExplainEligibility (CanRequest)",
            Rpc::ListRequestablePackages => "ListRequestablePackages",
            Rpc::UserAdd => "USER_ADD (durable)",
        }
    }
}

/// What one RPC did over the measured slices.
pub struct Outcome {
    /// Latency of successful calls, microseconds.
    pub latency: Histogram<u64>,
    pub errors: u64,
    /// Calls whose answer was "yes" (allowed, eligible, non-empty list).
    pub positive: u64,
    /// Wall time the RPC had the server to itself.
    pub elapsed: Duration,
    /// Whether USER_ADD ran out of (user, policy) pairs it could add.
    pub exhausted: bool,
}

impl Outcome {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            errors: 0,
            positive: 0,
            elapsed: Duration::ZERO,
            exhausted: false,
        }
    }

    fn merge(&mut self, other: &Outcome) {
        self.latency.add(&other.latency).expect("same bounds");
        self.errors += other.errors;
        self.positive += other.positive;
        self.elapsed += other.elapsed;
        self.exhausted |= other.exhausted;
    }

    pub fn throughput(&self) -> f64 {
        self.latency.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// USER_ADDs sent so far in this run.
static ADDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// This run of the load generator, among runs on one dataset.
static RUN: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64 ^ u64::from(std::process::id())
});

pub struct Timing {
    pub warmup: Duration,
    pub measured: Duration,
}

/// Runs each of `rpcs` at `in_flight` concurrent calls: a warm-up per RPC, then
/// alternating slices until each has had `timing.measured`.
pub async fn measure(
    addresses: &[SocketAddr],
    world: Arc<World>,
    rpcs: &[Rpc],
    in_flight: usize,
    timing: &Timing,
) -> anyhow::Result<BTreeMap<Rpc, Outcome>> {
    let channels = connect(addresses, in_flight.min(MAX_CHANNELS)).await?;
    let mut seed = in_flight as u64 * 1_000_000;
    for &rpc in rpcs {
        seed += 1;
        run_slice(rpc, &channels, &world, in_flight, timing.warmup, seed).await;
    }
    let mut totals: BTreeMap<Rpc, Outcome> = rpcs.iter().map(|r| (*r, Outcome::new())).collect();
    let rounds = (timing.measured.as_secs_f64() / SLICE.as_secs_f64())
        .ceil()
        .max(1.0) as u32;
    let slice = timing.measured / rounds;
    for _ in 0..rounds {
        for &rpc in rpcs {
            seed += 1;
            let outcome = run_slice(rpc, &channels, &world, in_flight, slice, seed).await;
            totals.get_mut(&rpc).expect("every rpc").merge(&outcome);
        }
    }
    Ok(totals)
}

/// `count` connections, spread over the servers (replicas) in turn.
async fn connect(addresses: &[SocketAddr], count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for i in 0..count {
        let address = addresses[i % addresses.len()];
        // Separate connections (not clones of one) so the load really
        // spreads over several HTTP/2 connections.
        channels.push(
            Endpoint::from_shared(format!("http://{address}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// `in_flight` workers call `rpc` back to back for `length`.
async fn run_slice(
    rpc: Rpc,
    channels: &[Channel],
    world: &Arc<World>,
    in_flight: usize,
    length: Duration,
    seed: u64,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + length;
    let mut workers = JoinSet::new();
    for w in 0..in_flight {
        let channel = channels[w % channels.len()].clone();
        let world = Arc::clone(world);
        let rng = Rng::new(seed, w as u64);
        workers.spawn(worker(rpc, channel, world, rng, deadline));
    }
    let mut outcome = Outcome::new();
    while let Some(done) = workers.join_next().await {
        outcome.merge(&done.expect("worker panicked"));
    }
    // Until the last call answered: calls started before the deadline
    // count, so their time does too.
    outcome.elapsed = started.elapsed();
    outcome
}

async fn worker(
    rpc: Rpc,
    channel: Channel,
    world: Arc<World>,
    mut rng: Rng,
    deadline: Instant,
) -> Outcome {
    let mut caller = Caller {
        decisions: DecisionsClient::new(channel.clone()),
        requests: AssignmentRequestsClient::new(channel),
        world,
    };
    let mut outcome = Outcome::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        match caller.call(rpc, &mut rng).await {
            Ok(Some(positive)) => {
                let micros = started.elapsed().as_micros().max(1) as u64;
                outcome.latency.saturating_record(micros);
                outcome.positive += u64::from(positive);
            }
            Ok(None) => {
                outcome.exhausted = true;
                break;
            }
            Err(status) => {
                if outcome.errors == 0 {
                    eprintln!("{}: {}: {}", rpc.name(), status.code(), status.message());
                }
                outcome.errors += 1;
            }
        }
    }
    outcome
}

struct Caller {
    decisions: DecisionsClient<Channel>,
    requests: AssignmentRequestsClient<Channel>,
    world: Arc<World>,
}

/// Who asks about `user`: half the time the user themselves, half the
/// time an administrator asking about someone else.
fn asker(user: usize, rng: &mut Rng) -> String {
    if rng.next().is_multiple_of(2) {
        user_id(user)
    } else {
        READER.to_string()
    }
}

/// Names the caller with the development header.
fn as_caller<T>(message: T, caller: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "x-entitlements-user",
        caller.parse().expect("ids are ASCII"),
    );
    request
}

impl Caller {
    /// One call: Ok(Some(positive answer?)), or Ok(None) when USER_ADD has
    /// nothing left to add.
    async fn call(&mut self, rpc: Rpc, rng: &mut Rng) -> Result<Option<bool>, Status> {
        let shape = &self.world.shape;
        let user = rng.below(shape.users);
        let positive = match rpc {
            Rpc::Ping => {
                let request = as_caller(PingRequest {}, READER);
                self.decisions.ping(request).await?.into_inner().revision > 0
            }
            Rpc::CheckAccess => {
                let (resource, role) = self.grant_to_check(user, rng);
                let request = as_caller(
                    CheckAccessRequest {
                        user_id: user_id(user),
                        resource_id: resource_id(resource),
                        role_id: role.into(),
                        min_revision: 0,
                    },
                    READER,
                );
                self.decisions
                    .check_access(request)
                    .await?
                    .into_inner()
                    .allowed
            }
            Rpc::ExplainEligibility => {
                let request = as_caller(
                    ExplainEligibilityRequest {
                        user_id: user_id(user),
                        access_package_id: package_id(rng.below(shape.packages)),
                        min_revision: 0,
                    },
                    &asker(user, rng),
                );
                self.decisions
                    .explain_eligibility(request)
                    .await?
                    .into_inner()
                    .allowed
            }
            Rpc::ListRequestablePackages => {
                let request = as_caller(
                    ListRequestablePackagesRequest {
                        user_id: user_id(user),
                        ..Default::default()
                    },
                    &asker(user, rng),
                );
                let response = self.decisions.list_requestable_packages(request).await?;
                !response.into_inner().packages.is_empty()
            }
            Rpc::UserAdd => {
                let Some((user, policy)) = self.world.next_add() else {
                    return Ok(None);
                };
                let request = as_caller(
                    CreateAssignmentRequestRequest {
                        assignment_request: Some(AssignmentRequest {
                            r#type: RequestType::UserAdd as i32,
                            assignment_policy_id: policy,
                            ..Default::default()
                        }),
                        // Unique per call: the key makes retries idempotent,
                        // and these are all different requests. The run's
                        // nonce keeps a later run on the same dataset from
                        // reusing a key.
                        request_id: format!(
                            "loadgen-{:x}-{}",
                            *RUN,
                            ADDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        ),
                    },
                    &user,
                );
                let response = self.requests.create_assignment_request(request).await?;
                !response.into_inner().assignment_id.is_empty()
            }
        };
        Ok(Some(positive))
    }

    /// Half the time a grant the user holds (a role of a package they were
    /// given), half the time one of a package they were not given.
    fn grant_to_check(&self, user: usize, rng: &mut Rng) -> (usize, &'static str) {
        let shape = &self.world.shape;
        let held = shape.held_packages(user);
        let package = if rng.next().is_multiple_of(2) {
            held[rng.below(held.len())]
        } else {
            loop {
                let package = rng.below(shape.packages);
                if !held.contains(&package) {
                    break package;
                }
            }
        };
        let roles = shape.package_roles(package);
        roles[rng.below(roles.len())]
    }
}
