//! Retention: events older than the configured period leave the store, a
//! bounded batch per round. The chain stays verifiable because the anchor
//! remembers the hash the oldest retained event links to, and the pruning
//! itself is recorded as an event.

use std::time::Duration;

use crate::error::Result;
use crate::pb::AuditEvent;
use crate::shared::actor::Actor;
use crate::store::records::{self, Record};
use crate::store::{Txn, codec, keys};

use super::action::Verb;
use super::chain::{self, Anchor};
use super::event::Draft;

/// The most events one round removes, so a long-disabled retention does
/// not turn into one huge transaction.
pub const PRUNE_LIMIT: usize = 10_000;

/// Removes up to [`PRUNE_LIMIT`] of the oldest events from before
/// `now - keep`; returns how many. Runs inside one write transaction.
pub fn prune(txn: &mut dyn Txn, actor: &Actor, keep: Duration) -> Result<usize> {
    let cutoff = actor
        .moment()
        .seconds()
        .saturating_sub(keep.as_secs() as i64);
    let prefix = keys::prefix(&[keys::RECORD, AuditEvent::KIND]);
    let mut expired = Vec::new();
    for item in txn.scan(&prefix, None).take(PRUNE_LIMIT) {
        let event: AuditEvent = codec::decode(&item?.1)?;
        if event.time.map_or(0, |t| t.seconds) >= cutoff {
            break;
        }
        expired.push(event);
    }
    let Some(last) = expired.last().cloned() else {
        return Ok(0);
    };
    for event in &expired {
        records::remove(txn, event)?;
    }
    let pruned_until = last.time.unwrap_or_default();
    chain::write_anchor(
        txn,
        &Anchor {
            first: last.sequence + 1,
            previous_hash: last.hash.clone(),
            pruned_until: pruned_until.seconds,
            pruned_until_nanos: pruned_until.nanos,
        },
    );
    let count = expired.len();
    chain::append(
        txn,
        actor,
        Draft::new("audit_log", Verb::Pruned, "")
            .detail("events", count as i64)
            .detail("through_sequence", last.sequence as i64),
    )?;
    Ok(count)
}
