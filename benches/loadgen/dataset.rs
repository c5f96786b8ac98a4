//! The synthetic tenant: a deterministic function of the scale (so the
//! driver can recompute who holds what without reading it back), written
//! straight through the store in large jobs because going through the API
//! would take far longer than the measurement itself.
//!
//! It is shaped like a real tenant rather than a convenient one: every
//! package has a policy open to all members with an attribute condition
//! (so every package is a candidate in "what can I request"), one scoped
//! to groups that may be nested, and one needing approval that is open to
//! a group or to a connected organization's guests. About half of the
//! (user, package) eligibility questions are answered yes.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use entitlements::domain::assignment::ACTIVE_PAIR;
use entitlements::domain::entity::{record_info, stamp};
use entitlements::domain::request::pair_key;
use entitlements::error::Error;
use entitlements::pb::{
    AccessPackage, AllowedTargetScope, ApprovalSettings, ApprovalStage, Approver, Assignment,
    AssignmentPolicy, AssignmentState, Catalog, CatalogKind, ConnectedOrganization,
    ConnectedOrganizationState, Expiration, ExpirationType, Group, GroupMembership,
    RequestorSettings, Resource, ResourceRole, ResourceRoleRef, SubjectSet, User, UserKind,
    UserState, approver, group_membership,
};
use entitlements::shared::actor::Actor;
use entitlements::store::records::{self, Record};
use entitlements::store::sled_store::SledStore;
use entitlements::store::{Revision, Store, write};
use tokio::task::JoinSet;

/// Records per store job: large enough that per-job overhead vanishes,
/// small enough that one job's overlay stays modest.
const RECORDS_PER_JOB: usize = 2_000;
/// Jobs queued at once, so the committer always has the next one ready.
const JOBS_IN_FLIGHT: usize = 4;
/// Marks a finished dataset (and its scale) inside the data directory.
const MARKER: &str = "loadgen-dataset.txt";
/// The tenant's design, in the marker: a dataset of another design is
/// rebuilt rather than measured.
const DESIGN: u32 = 3;
const ROLES: [&str; 3] = ["reader", "writer", "admin"];
const DAY: u64 = 86_400;
/// Values of the users' `department` attribute; each package's
/// all-members policy admits half of them.
const DEPARTMENTS: usize = 10;
/// Connected organizations; every GUEST_EVERY-th user is a guest of one.
const ORGANIZATIONS: usize = 4;
const GUEST_EVERY: usize = 20;
/// Policies per package: all members with a condition, groups, approval.
pub const POLICIES_PER_PACKAGE: usize = 3;
/// Packages a user may still add themselves to, looked for per user.
const ADDS_PER_USER: usize = 8;

/// Sizes of the tenant at one scale (1.0 = 100k users).
#[derive(Debug, Clone)]
pub struct Shape {
    pub users: usize,
    pub groups: usize,
    pub packages: usize,
    pub resources: usize,
    pub catalogs: usize,
    pub assignments_per_user: usize,
}

impl Shape {
    pub fn at(scale: f64) -> Self {
        let scaled = |n: f64, min: usize| ((n * scale).round() as usize).max(min);
        let packages = scaled(10_000.0, 20);
        Self {
            users: scaled(100_000.0, 10),
            groups: scaled(10_000.0, 4),
            packages,
            // Fewer resources than packages, so packages share resources
            // the way real ones do.
            resources: (packages / 2).max(3),
            catalogs: 4,
            assignments_per_user: 10,
        }
    }

    pub fn policies(&self) -> usize {
        self.packages * POLICIES_PER_PACKAGE
    }

    /// Groups with no parent; every other group is nested in one of them.
    fn top_groups(&self) -> usize {
        (self.groups / 10).max(1)
    }

    /// The group `group` is a member of, if any.
    pub fn parent_group(&self, group: usize) -> Option<usize> {
        (group >= self.top_groups()).then(|| group % self.top_groups())
    }

    pub fn department(&self, user: usize) -> usize {
        Rng::new(6, user as u64).below(DEPARTMENTS)
    }

    /// The connected organization a guest comes from; members have none.
    pub fn organization(&self, user: usize) -> Option<usize> {
        (user % GUEST_EVERY == GUEST_EVERY - 1).then_some(user % ORGANIZATIONS)
    }

    /// The departments package `package`'s all-members policy admits: half.
    pub fn policy_departments(&self, package: usize) -> BTreeSet<usize> {
        let mut rng = Rng::new(7, package as u64);
        let mut all: Vec<usize> = (0..DEPARTMENTS).collect();
        for i in (1..all.len()).rev() {
            all.swap(i, rng.below(i + 1));
        }
        all.into_iter().take(DEPARTMENTS / 2).collect()
    }

    pub fn groups_of_user(&self, user: usize) -> [usize; 2] {
        let mut rng = Rng::new(1, user as u64);
        let first = rng.below(self.groups);
        let second = (first + 1 + rng.below(self.groups - 1)) % self.groups;
        [first, second]
    }

    /// (resource, role) pairs a package grants: 1-3 distinct resources.
    pub fn package_roles(&self, package: usize) -> Vec<(usize, &'static str)> {
        let mut rng = Rng::new(2, package as u64);
        let count = 1 + rng.below(3);
        (0..count)
            .map(|k| {
                let resource = (package * 3 + k) % self.resources;
                (resource, ROLES[rng.below(ROLES.len())])
            })
            .collect()
    }

    /// The groups the group-scoped policy of a package names: 1-3, any
    /// level (naming a top group admits the members of its nested groups).
    pub fn policy_groups(&self, package: usize) -> BTreeSet<usize> {
        let mut rng = Rng::new(3, package as u64);
        let count = 1 + rng.below(3);
        (0..count).map(|_| rng.below(self.groups)).collect()
    }

    /// The distinct packages a user holds from the start.
    pub fn held_packages(&self, user: usize) -> Vec<usize> {
        let mut rng = Rng::new(4, user as u64);
        let mut held = Vec::with_capacity(self.assignments_per_user);
        while held.len() < self.assignments_per_user.min(self.packages) {
            let package = rng.below(self.packages);
            if !held.contains(&package) {
                held.push(package);
            }
        }
        held
    }
}

pub fn user_id(i: usize) -> String {
    format!("u{i:07}")
}
pub fn group_id(i: usize) -> String {
    format!("g{i:06}")
}
pub fn package_id(i: usize) -> String {
    format!("p{i:06}")
}
pub fn resource_id(i: usize) -> String {
    format!("r{i:06}")
}
pub fn policy_id(package: usize, which: usize) -> String {
    format!("p{package:06}-pol{which}")
}
fn catalog_id(i: usize) -> String {
    format!("cat{i}")
}
fn organization_id(i: usize) -> String {
    format!("org{i}")
}

/// splitmix64: a tiny deterministic generator, so the dataset (and the
/// driver's picks) need no extra dependency and reproduce exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(stream: u64, index: u64) -> Self {
        Self((stream << 48) ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What the driver needs from the dataset: its shape, and the (user,
/// policy) pairs a USER_ADD can still succeed for, handed out once each.
pub struct World {
    pub shape: Shape,
    pub adds: Mutex<Vec<(String, String)>>,
}

impl World {
    pub fn next_add(&self) -> Option<(String, String)> {
        self.adds.lock().expect("pool poisoned").pop()
    }
}

/// Builds the dataset at `scale` in `dir`, or reuses one built earlier,
/// and works out which self-service adds can still succeed.
pub async fn prepare(dir: &Path, scale: f64) -> anyhow::Result<World> {
    let shape = Shape::at(scale);
    let wanted = format!("scale={scale} design={DESIGN}");
    let marker = dir.join(MARKER);
    match std::fs::read_to_string(&marker).ok() {
        Some(found) if found.trim() == wanted => {
            println!("reusing the dataset in {}", dir.display())
        }
        found => {
            if found.is_none() && dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
                anyhow::bail!(
                    "{} is not empty and has no {MARKER}: refusing to overwrite it",
                    dir.display()
                );
            }
            // Ours, but another scale or an interrupted build: start over.
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir)?;
            std::fs::write(&marker, "building")?;
            let store = Arc::new(SledStore::open(dir)?);
            build(&store, &shape).await?;
            store.flush()?;
            store.close()?;
            std::fs::write(&marker, &wanted)?;
        }
    }
    let store = SledStore::open(dir)?;
    let adds = open_adds(&store, &shape)?;
    store.close()?;
    println!("{} self-service adds available", adds.len());
    Ok(World {
        shape,
        adds: Mutex::new(adds),
    })
}

async fn build(store: &Arc<SledStore>, shape: &Shape) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    println!("building the dataset: {shape:?}");
    save_all(store, "catalogs", shape.catalogs, catalog).await?;
    save_all(store, "organizations", ORGANIZATIONS, organization).await?;
    let s = shape.clone();
    save_all(store, "users", shape.users, move |i| user(&s, i)).await?;
    save_all(store, "groups", shape.groups, group).await?;
    let s = shape.clone();
    save_all(store, "memberships", shape.users * 2, move |i| {
        membership(i / 2, s.groups_of_user(i / 2)[i % 2])
    })
    .await?;
    let s = shape.clone();
    let nested = shape.groups - shape.top_groups();
    save_all(store, "nested groups", nested, move |i| {
        let child = s.top_groups() + i;
        nesting(child, s.parent_group(child).expect("below the top"))
    })
    .await?;
    let s = shape.clone();
    save_all(store, "resources", shape.resources, move |i| {
        resource(&s, i)
    })
    .await?;
    let s = shape.clone();
    save_all(store, "packages", shape.packages, move |i| package(&s, i)).await?;
    let s = shape.clone();
    save_all(store, "policies", shape.policies(), move |i| {
        policy(&s, i / POLICIES_PER_PACKAGE, i % POLICIES_PER_PACKAGE)
    })
    .await?;
    let s = shape.clone();
    let per_user = shape.assignments_per_user;
    save_all(store, "assignments", shape.users * per_user, move |i| {
        assignment(&s, i / per_user, i % per_user)
    })
    .await?;
    println!("dataset built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Saves records 0..count (made by `make`) in jobs of RECORDS_PER_JOB,
/// keeping a few jobs queued and printing progress every tenth.
async fn save_all<R, F>(
    store: &Arc<SledStore>,
    label: &str,
    count: usize,
    make: F,
) -> anyhow::Result<()>
where
    R: Stamp,
    F: Fn(usize) -> R,
{
    let mut jobs = JoinSet::new();
    let mut done = 0;
    let mut next_report = count / 10;
    for start in (0..count).step_by(RECORDS_PER_JOB) {
        let batch: Vec<R> = (start..(start + RECORDS_PER_JOB).min(count))
            .map(&make)
            .collect();
        if jobs.len() >= JOBS_IN_FLIGHT {
            done += jobs.join_next().await.expect("a job is queued")??;
        }
        let store = Arc::clone(store);
        jobs.spawn(async move { save_job(store.as_ref(), batch).await });
        if done >= next_report && count >= 10 * RECORDS_PER_JOB {
            println!("  {label}: {done}/{count}");
            next_report += count / 10;
        }
    }
    while let Some(result) = jobs.join_next().await {
        done += result??;
    }
    println!("  {label}: {done}/{count}");
    Ok(())
}

async fn save_job<R: Stamp>(store: &dyn Store, batch: Vec<R>) -> anyhow::Result<usize> {
    let saved = write::<_, Error, _>(store, move |txn| {
        let revision = txn.revision();
        let count = batch.len();
        for mut record in batch {
            record.stamp(revision);
            records::save(txn, None, &record)?;
        }
        Ok(count)
    })
    .await
    .context("saving a batch")?;
    Ok(saved.value)
}

/// Bookkeeping as the API would have written it, so etags and the
/// policy-set cache (keyed by record revisions) behave normally.
trait Stamp: Record {
    fn stamp(&mut self, revision: Revision);
}

fn loader() -> Actor {
    Actor::new("loadgen", SystemTime::now())
}

macro_rules! stamp_entity {
    ($($kind:ty),*) => {$(
        impl Stamp for $kind {
            fn stamp(&mut self, revision: Revision) {
                stamp::<$kind>(self, None, &loader(), revision);
            }
        }
    )*};
}
stamp_entity!(
    User,
    Group,
    Catalog,
    ConnectedOrganization,
    Resource,
    AccessPackage,
    AssignmentPolicy
);

impl Stamp for GroupMembership {
    fn stamp(&mut self, revision: Revision) {
        self.info = Some(record_info(&loader(), revision, None));
    }
}

impl Stamp for Assignment {
    fn stamp(&mut self, revision: Revision) {
        self.info = Some(record_info(&loader(), revision, None));
    }
}

fn catalog(i: usize) -> Catalog {
    Catalog {
        id: catalog_id(i),
        display_name: format!("Catalog {i}"),
        kind: CatalogKind::UserManaged as i32,
        enabled: Some(true),
        // Guests of connected organizations request from every catalog.
        externally_visible: Some(true),
        ..Default::default()
    }
}

fn organization(i: usize) -> ConnectedOrganization {
    ConnectedOrganization {
        id: organization_id(i),
        display_name: format!("Partner {i}"),
        state: ConnectedOrganizationState::Configured as i32,
        ..Default::default()
    }
}

fn user(shape: &Shape, i: usize) -> User {
    let organization = shape.organization(i);
    User {
        id: user_id(i),
        display_name: format!("User {i}"),
        email: format!("{}@example.com", user_id(i)),
        kind: if organization.is_some() {
            UserKind::Guest
        } else {
            UserKind::Member
        } as i32,
        state: UserState::Active as i32,
        connected_organization_id: organization.map(organization_id).unwrap_or_default(),
        attributes: [(
            "department".to_string(),
            department_name(shape.department(i)),
        )]
        .into(),
        ..Default::default()
    }
}

fn department_name(i: usize) -> String {
    format!("d{i}")
}

fn group(i: usize) -> Group {
    Group {
        id: group_id(i),
        display_name: format!("Group {i}"),
        ..Default::default()
    }
}

fn membership(user: usize, group: usize) -> GroupMembership {
    GroupMembership {
        group_id: group_id(group),
        member: Some(group_membership::Member::UserId(user_id(user))),
        info: None,
    }
}

fn nesting(child: usize, parent: usize) -> GroupMembership {
    GroupMembership {
        group_id: group_id(parent),
        member: Some(group_membership::Member::MemberGroupId(group_id(child))),
        info: None,
    }
}

fn resource(shape: &Shape, i: usize) -> Resource {
    Resource {
        id: resource_id(i),
        catalog_id: catalog_id(i % shape.catalogs),
        r#type: "application".into(),
        origin_id: resource_id(i),
        display_name: format!("Resource {i}"),
        roles: ROLES
            .iter()
            .map(|role| ResourceRole {
                id: (*role).into(),
                display_name: (*role).into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn package(shape: &Shape, i: usize) -> AccessPackage {
    AccessPackage {
        id: package_id(i),
        // The catalog of its first resource (package_roles starts at 3i),
        // as the API would mostly insist; decisions do not look.
        catalog_id: catalog_id((i * 3) % shape.resources % shape.catalogs),
        display_name: format!("Package {i}"),
        resource_roles: shape
            .package_roles(i)
            .into_iter()
            .map(|(resource, role)| ResourceRoleRef {
                resource_id: resource_id(resource),
                role_id: role.into(),
            })
            .collect(),
        ..Default::default()
    }
}

/// Policy `which` of `package`: 0 is open to all members whose department
/// the condition admits, 1 to the members (direct or nested) of a few
/// groups, 2 needs one approval and is open to the members of a top group
/// (and its nested groups) or, for every fourth package, to the guests of
/// one connected organization. 0 and 1
/// grant access at once, so self-service adds go through them.
fn policy(shape: &Shape, package: usize, which: usize) -> AssignmentPolicy {
    let base = AssignmentPolicy {
        id: policy_id(package, which),
        access_package_id: package_id(package),
        display_name: format!("Policy {which} of package {package}"),
        requestor_settings: Some(RequestorSettings {
            enable_self_add: true,
            ..Default::default()
        }),
        expiration: Some(Expiration {
            r#type: ExpirationType::None as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    match which {
        0 => {
            let departments: Vec<String> = shape
                .policy_departments(package)
                .into_iter()
                .map(|d| format!("{:?}", department_name(d)))
                .collect();
            AssignmentPolicy {
                allowed_target_scope: AllowedTargetScope::AllMemberUsers as i32,
                extra_condition: format!(
                    "[{}].contains(principal.attributes.department)",
                    departments.join(", ")
                ),
                ..base
            }
        }
        1 => AssignmentPolicy {
            allowed_target_scope: AllowedTargetScope::SpecificDirectorySubjects as i32,
            specific_allowed_targets: Some(SubjectSet {
                group_ids: shape
                    .policy_groups(package)
                    .into_iter()
                    .map(group_id)
                    .collect(),
                ..Default::default()
            }),
            expiration: Some(Expiration {
                r#type: ExpirationType::AfterDuration as i32,
                duration: Some(prost_types::Duration {
                    seconds: (90 * DAY) as i64,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..base
        },
        _ => {
            let (scope, targets) = if package.is_multiple_of(4) {
                (
                    AllowedTargetScope::SpecificConnectedOrganizationUsers,
                    Some(SubjectSet {
                        connected_organization_ids: vec![organization_id(package % ORGANIZATIONS)],
                        ..Default::default()
                    }),
                )
            } else {
                (
                    AllowedTargetScope::SpecificDirectorySubjects,
                    Some(SubjectSet {
                        group_ids: vec![group_id(package % shape.top_groups())],
                        ..Default::default()
                    }),
                )
            };
            AssignmentPolicy {
                allowed_target_scope: scope as i32,
                specific_allowed_targets: targets,
                approval_settings: Some(ApprovalSettings {
                    approval_required_for_add: true,
                    stages: vec![ApprovalStage {
                        primary_approvers: vec![Approver {
                            approver: Some(approver::Approver::UserId(user_id(
                                package % shape.users,
                            ))),
                        }],
                        approvals_required: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..base
            }
        }
    }
}

fn assignment(shape: &Shape, user: usize, k: usize) -> Assignment {
    let package = shape.held_packages(user)[k];
    let now = SystemTime::now();
    let at = |t: SystemTime| entitlements::shared::clock::to_timestamp(t);
    Assignment {
        id: format!("a{user:07}-{k}"),
        target_id: user_id(user),
        access_package_id: package_id(package),
        assignment_policy_id: policy_id(package, 0),
        state: AssignmentState::Delivered as i32,
        start_time: Some(at(now - Duration::from_secs(30 * DAY))),
        // Half end in a year (so they sit in the expiry index), half never.
        end_time: k
            .is_multiple_of(2)
            .then(|| at(now + Duration::from_secs(365 * DAY))),
        ..Default::default()
    }
}

/// (user, policy) pairs where the user's department is one the package's
/// all-members policy admits and the user does not hold the package, not
/// even from an earlier run (the store's active-pair claims say): up to
/// ADDS_PER_USER per user, shuffled so the run spreads over users and
/// packages.
fn open_adds(store: &SledStore, shape: &Shape) -> anyhow::Result<Vec<(String, String)>> {
    let mut by_department: HashMap<usize, Vec<usize>> = HashMap::new();
    for package in 0..shape.packages {
        for department in shape.policy_departments(package) {
            by_department.entry(department).or_default().push(package);
        }
    }
    let mut adds = Vec::new();
    for user in (0..shape.users).filter(|u| shape.organization(*u).is_none()) {
        let held = shape.held_packages(user);
        let admitting = &by_department[&shape.department(user)];
        let mut rng = Rng::new(8, user as u64);
        let mut seen = BTreeSet::new();
        for _ in 0..ADDS_PER_USER {
            let package = admitting[rng.below(admitting.len())];
            if held.contains(&package) || !seen.insert(package) {
                continue;
            }
            let pair = pair_key(&user_id(user), &package_id(package));
            if records::unique_owner::<Assignment>(store, ACTIVE_PAIR, &pair)?.is_none() {
                adds.push((user_id(user), policy_id(package, 0)));
            }
        }
    }
    let mut rng = Rng::new(5, adds.len() as u64);
    for i in (1..adds.len()).rev() {
        adds.swap(i, rng.below(i + 1));
    }
    Ok(adds)
}
