//! entitlements: decides and records who may request which bundle of access,
//! who must approve it, how long it lasts, and who holds what right now.
//!
//! Layers, outermost first: [`api`] (gRPC services and conventions),
//! [`workflow`] (requests, assignments and their timing), [`policy`] (Cedar
//! compilation and decisions), [`domain`] (the objects and their rules),
//! [`audit`] (the hash-chained record of every change), [`store`] (durable
//! state).

pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod decision;
pub mod domain;
pub mod drain;
pub mod error;
pub mod policy;
pub mod server;
pub mod shared;
pub mod store;
pub mod workflow;

/// Generated protobuf and gRPC code for `entitlements.v1`.
// Generated code keeps the proto comments as written; lints do not apply.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("entitlements.v1");

    /// Encoded descriptors of every `entitlements.v1` file, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/entitlements_descriptor.bin"));
}
