//! Reports assembled from the domain records, the decision view and the
//! audit trail: a layer above domain, audit and decision, below the gRPC
//! API, whose handlers only authorize, page and convert.

pub mod access;
pub mod history;
