//! entitlements: decides and records who may request which bundle of access,
//! who must approve it, how long it lasts, and who holds what right now.
//!
//! Layers, outermost first; each uses only the layers below it
//! (`tests/layering.rs` holds the table and keeps it true):
//!
//! - [`cli`]: command-line clients (audit export, token minting, store
//!   maintenance), outside the library layers proper.
//! - [`server`]: wiring and running everything.
//! - [`api`]: gRPC services and conventions: decode, authorize, call one
//!   function, encode.
//! - [`workflow`] (requests, assignments and their timing), [`decision`] (the
//!   in-memory view decisions read) and [`reports`] (history and access
//!   reports, from the records, the view and the audit trail): the use
//!   cases, side by side and independent of each other.
//! - [`policy`]: Cedar compilation and decisions.
//! - [`domain`]: the objects, their validation and state machines.
//! - [`audit`]: the hash-chained record of every change (append, verify,
//!   query); it knows no domain type.
//! - [`error`]: failures as clients see them.
//! - [`store`]: durable state behind one contract, with its own errors.
//! - [`shared`]: vocabulary every layer uses (ids, actors, time); it imports
//!   nothing from the crate; neither do [`config`] and [`drain`].
//! - [`observe`]: metric names and the calls that move them, request ids;
//!   every layer may report to it, and it uses only [`shared`].
//!
//! [`pb`], the generated protobuf types, is vocabulary any layer may use.

pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod decision;
pub mod domain;
pub mod drain;
pub mod error;
pub mod observe;
pub mod policy;
pub mod reports;
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
