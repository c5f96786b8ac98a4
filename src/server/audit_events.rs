//! Counts the audit events that commits write, for the metrics: an
//! observer of the store sees every commit once (with replicas, the other
//! replicas' too), after it is durable.

use crate::observe::metrics;
use crate::pb::AuditEvent;
use crate::store::{Change, CommitObserver};

pub struct AuditEventCounter;

impl CommitObserver for AuditEventCounter {
    fn committed(&self, changes: &[Change<'_>]) {
        let written = changes
            .iter()
            .flat_map(Change::records)
            .filter(|record| record.is::<AuditEvent>() && record.is_write())
            .count();
        if written > 0 {
            metrics::audit_events(written);
        }
    }
}
