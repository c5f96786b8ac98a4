//! The grant-change log: every commit that adds or removes a grant appends
//! its events under its revision. Watchers replay from any retained
//! revision and then follow live; while idle they get checkpoints.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::store::Revision;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GrantChange {
    pub added: bool,
    pub user: String,
    pub resource: String,
    pub role: String,
}

/// The grant changes of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionEvents {
    pub revision: Revision,
    pub changes: Vec<GrantChange>,
}

pub struct EventLog {
    inner: Mutex<Log>,
    live: broadcast::Sender<RevisionEvents>,
    capacity: usize,
}

struct Log {
    entries: VecDeque<RevisionEvents>,
    /// Every revision above this one is retained (or had no grant changes).
    oldest_retained: Revision,
}

/// Why a replay cannot start where asked.
#[derive(Debug, PartialEq, Eq)]
pub struct OutOfRange {
    pub oldest: Revision,
}

impl EventLog {
    /// A log keeping the last `capacity` revisions that changed grants;
    /// revisions up to `start` (state loaded from storage) are not replayable.
    pub fn new(capacity: usize, start: Revision) -> Self {
        let (live, _) = broadcast::channel(4096);
        Self {
            inner: Mutex::new(Log {
                entries: VecDeque::new(),
                oldest_retained: start,
            }),
            live,
            capacity: capacity.max(1),
        }
    }

    pub fn append(&self, events: RevisionEvents) {
        let mut log = self.inner.lock().expect("event log poisoned");
        log.entries.push_back(events.clone());
        while log.entries.len() > self.capacity {
            if let Some(dropped) = log.entries.pop_front() {
                log.oldest_retained = dropped.revision;
            }
        }
        let _ = self.live.send(events);
    }

    /// Events after `from` (exclusive) that are in the log, and a receiver
    /// for what comes later; OUT_OF_RANGE when events after `from` were
    /// dropped (or predate the log).
    pub fn replay(
        &self,
        from: Revision,
    ) -> Result<(Vec<RevisionEvents>, broadcast::Receiver<RevisionEvents>), OutOfRange> {
        let log = self.inner.lock().expect("event log poisoned");
        if from < log.oldest_retained {
            return Err(OutOfRange {
                oldest: log.oldest_retained,
            });
        }
        let receiver = self.live.subscribe();
        let past = log
            .entries
            .iter()
            .filter(|e| e.revision > from)
            .cloned()
            .collect();
        Ok((past, receiver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(revision: Revision) -> RevisionEvents {
        RevisionEvents {
            revision,
            changes: vec![GrantChange {
                added: true,
                user: "u".into(),
                resource: "r".into(),
                role: "member".into(),
            }],
        }
    }

    #[test]
    fn replays_what_is_retained_and_refuses_what_is_not() {
        let log = EventLog::new(2, 10);
        assert_eq!(log.replay(9).err(), Some(OutOfRange { oldest: 10 }));
        for revision in [11, 12, 13] {
            log.append(events(revision));
        }
        assert_eq!(log.replay(10).err(), Some(OutOfRange { oldest: 11 }));
        let (past, _) = log.replay(11).unwrap();
        assert_eq!(
            past.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![12, 13]
        );
        assert!(log.replay(13).unwrap().0.is_empty());
    }
}
