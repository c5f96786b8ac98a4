//! `entitlements store accept-rollback`: accepting a store that lost
//! acknowledged commits (see [`SledStore::accept_rollback`]), and saying
//! what was lost in terms an operator can check against the audit trail:
//! revisions and audit events.

use std::path::Path;

use crate::store::Rollback;
use crate::store::acknowledged::{FILE_NAME, Mark};
use crate::store::codec;
use crate::store::sled_store::SledStore;

use crate::audit::chain::Head;

/// Accepts the loss in the store in `dir` (the server must be stopped) and
/// returns what was lost, also logged as a warning.
pub fn accept(dir: &Path) -> anyhow::Result<String> {
    // Opening would create an empty store in a mistyped directory.
    anyhow::ensure!(
        dir.join(FILE_NAME).is_file(),
        "{} holds no store with an acknowledged mark",
        dir.display()
    );
    let Some(lost) = SledStore::accept_rollback(dir)? else {
        return Ok(format!(
            "the store in {} holds everything it acknowledged; nothing was lost",
            dir.display()
        ));
    };
    let message = describe(&lost);
    tracing::warn!("{message}");
    Ok(message)
}

/// The last audit event at a mark (0 before the first).
fn last_event(mark: &Mark) -> u64 {
    if mark.audit_head.is_empty() {
        return 0;
    }
    codec::decode::<Head>(&mark.audit_head).map_or(0, |head| head.sequence)
}

pub fn describe(lost: &Rollback) -> String {
    let (holds, acknowledged) = (&lost.store, &lost.acknowledged);
    let (kept_event, acknowledged_event) = (last_event(holds), last_event(acknowledged));
    if holds.revision < acknowledged.revision {
        format!(
            "accepted the loss of revisions {} to {} and of audit events {} to {} in {}; the store \
             continues from revision {} (audit event {}). Clients holding a revision after {} \
             (a consistency token, a WatchGrants position) must resync.",
            holds.revision + 1,
            acknowledged.revision,
            kept_event + 1,
            acknowledged_event,
            lost.data_dir.display(),
            holds.revision,
            kept_event,
            holds.revision,
        )
    } else {
        format!(
            "accepted the store in {} at revision {} with audit event {} as its newest, in place \
             of the acknowledged one whose newest audit event was {}",
            lost.data_dir.display(),
            holds.revision,
            kept_event,
            acknowledged_event,
        )
    }
}
