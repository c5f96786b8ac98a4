//! The cost of authorizing a read RPC: what every call pays (a cached
//! decision), and what a cache miss costs (resolving the caller's roles
//! from the store, building the Cedar entities and deciding against the
//! administration policies). Run with `cargo bench --bench authorization`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use entitlements::api::App;
use entitlements::api::caller::Principal;
use entitlements::decision::state::DecisionState;
use entitlements::domain::catalog::grant_role;
use entitlements::pb::{AdminRole, GetCatalogRequest, RoleAssignment, User, UserState};
use entitlements::policy::PolicyEngine;
use entitlements::policy::admin::Scope;
use entitlements::shared::actor::Actor;
use entitlements::shared::clock::SystemClock;
use entitlements::store::records;
use entitlements::store::sled_store::SledStore;
use entitlements::store::{Store, write};

fn app_with_reader(dir: &std::path::Path) -> App {
    let store = Arc::new(SledStore::open(dir).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        write::<_, entitlements::error::Error, _>(store.as_ref() as &dyn Store, |txn| {
            let actor = Actor::new("bench", std::time::SystemTime::now());
            records::save(
                txn,
                None,
                &User {
                    id: "reader".into(),
                    display_name: "R".into(),
                    state: UserState::Active as i32,
                    ..Default::default()
                },
            )?;
            for catalog in ["c1", "c2", "c3"] {
                records::save(
                    txn,
                    None,
                    &entitlements::pb::Catalog {
                        id: catalog.into(),
                        display_name: catalog.into(),
                        ..Default::default()
                    },
                )?;
                let role = RoleAssignment {
                    role: AdminRole::CatalogReader as i32,
                    principal_id: "reader".into(),
                    catalog_id: catalog.into(),
                    info: None,
                };
                grant_role(txn, role, &actor)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    });
    let decisions = DecisionState::load(store.as_ref(), store.revision(), 16).unwrap();
    App::new(
        store,
        Arc::new(SystemClock),
        Arc::new(PolicyEngine::builtin().unwrap()),
        Arc::new(decisions),
    )
}

fn read_request() -> tonic::Request<GetCatalogRequest> {
    let mut request = tonic::Request::new(GetCatalogRequest { id: "c2".into() });
    request.extensions_mut().insert(Principal {
        id: "reader".into(),
        configured_roles: Vec::new(),
    });
    request
}

fn authorization(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_reader(dir.path());
    let request = read_request();
    c.bench_function(
        "authorized GetCatalog, as every RPC does (cached decision)",
        |b| b.iter(|| app.authorized(&request, Scope::Catalog("c2")).unwrap()),
    );
    let caller = app.caller(&request).unwrap();
    c.bench_function("decide GetCatalog uncached (entities + Cedar)", |b| {
        b.iter(|| app.authorize(&caller, Scope::Catalog("c2")).unwrap())
    });
    c.bench_function("resolve caller roles", |b| {
        b.iter(|| app.caller(&request).unwrap())
    });
}

criterion_group!(benches, authorization);
criterion_main!(benches);
