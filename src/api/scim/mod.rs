//! SCIM 2.0 provisioning (RFC 7643, RFC 7644) on its own HTTP listener
//! (`scim_listen`, off by default): identity systems create, update,
//! deactivate and delete users and groups here, and read them back with
//! filters. It is another door into the same directory as the gRPC
//! Directory service: the same bearer tokens and roles, the same checks,
//! the same transactions and audit trail.

mod discovery;
mod errors;
mod filter;
mod patch;
mod projection;
mod resources;
mod routes;
mod urns;

use axum::Router;
use axum::routing::{any, get, post};

pub use routes::{PREFIX, Scim};

/// The router of every endpoint under [`PREFIX`].
pub fn router(scim: Scim) -> Router {
    let at = |path: &str| format!("{PREFIX}{path}");
    Router::new()
        .route(
            &at("/Users"),
            get(routes::list_users).post(routes::create_user),
        )
        .route(&at("/Users/.search"), post(routes::search_users))
        .route(
            &at("/Users/{id}"),
            get(routes::get_user)
                .put(routes::replace_user)
                .patch(routes::patch_user)
                .delete(routes::delete_user),
        )
        .route(
            &at("/Groups"),
            get(routes::list_groups).post(routes::create_group),
        )
        .route(&at("/Groups/.search"), post(routes::search_groups))
        .route(&at("/.search"), post(routes::search_all))
        .route(
            &at("/Groups/{id}"),
            get(routes::get_group)
                .put(routes::replace_group)
                .patch(routes::patch_group)
                .delete(routes::delete_group),
        )
        .route(
            &at("/ServiceProviderConfig"),
            get(discovery::service_provider_config),
        )
        .route(&at("/ResourceTypes"), get(discovery::list_resource_types))
        .route(
            &at("/ResourceTypes/{id}"),
            get(discovery::get_resource_type),
        )
        .route(&at("/Schemas"), get(discovery::list_schemas))
        .route(&at("/Schemas/{id}"), get(discovery::get_schema))
        .route(&at("/Bulk"), any(routes::not_supported))
        .route(&at("/Me"), any(routes::not_supported))
        .fallback(routes::no_such_endpoint)
        .with_state(scim)
}
