//! Assignments as stored records. An active (DELIVERED) assignment claims
//! its (target, package) pair, refers to its package and policy (so neither
//! can be deleted under it), and is indexed by end time for expiry.

use crate::pb::{AccessPackage, Assignment, AssignmentPolicy, AssignmentState};
use crate::store::records::{IndexEntry, Record, Reference};

use super::request::{pair_key, time_key};

pub const ASSIGNMENTS_BY_TARGET: &str = "target";
pub const ASSIGNMENTS_BY_PACKAGE: &str = "package";
/// Active assignments by end time.
pub const ACTIVE_BY_END: &str = "ends";
/// At most one active assignment per (target, package).
pub const ACTIVE_PAIR: &str = "active";

impl Assignment {
    pub fn is_active(&self) -> bool {
        self.state() == AssignmentState::Delivered
    }
}

impl Record for Assignment {
    const KIND: &'static str = "assignment";

    fn id(&self) -> String {
        self.id.clone()
    }

    fn indexes(&self) -> Vec<IndexEntry> {
        let mut entries = vec![
            IndexEntry::new(ASSIGNMENTS_BY_TARGET, &self.target_id, &self.id),
            IndexEntry::new(ASSIGNMENTS_BY_PACKAGE, &self.access_package_id, &self.id),
        ];
        if self.is_active()
            && let Some(end) = self.end_time
        {
            entries.push(IndexEntry::new(
                ACTIVE_BY_END,
                time_key(end.seconds),
                &self.id,
            ));
        }
        entries
    }

    fn uniques(&self) -> Vec<(&'static str, String)> {
        if self.is_active() {
            vec![(
                ACTIVE_PAIR,
                pair_key(&self.target_id, &self.access_package_id),
            )]
        } else {
            Vec::new()
        }
    }

    fn references(&self) -> Vec<Reference> {
        if self.is_active() {
            vec![
                Reference::new(AccessPackage::KIND, &self.access_package_id),
                Reference::new(AssignmentPolicy::KIND, &self.assignment_policy_id),
            ]
        } else {
            Vec::new()
        }
    }
}
