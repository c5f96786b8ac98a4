//! Audit actions: what was done ([`Verb`]) to what kind of target. On the
//! wire an action is one name, "`target_type`.`verb`"; this is the only
//! place that name is built or read.

use std::fmt;

/// What a change did to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Created,
    Updated,
    Deleted,
    Blocked,
    Granted,
    Revoked,
    MemberAdded,
    MemberRemoved,
    StageDecided,
    Delivered,
    DeliveryFailed,
    Denied,
    TimedOut,
    NoApprovers,
    Canceled,
    Expired,
    Removed,
    Pruned,
}

impl Verb {
    pub const ALL: [Verb; 18] = [
        Verb::Created,
        Verb::Updated,
        Verb::Deleted,
        Verb::Blocked,
        Verb::Granted,
        Verb::Revoked,
        Verb::MemberAdded,
        Verb::MemberRemoved,
        Verb::StageDecided,
        Verb::Delivered,
        Verb::DeliveryFailed,
        Verb::Denied,
        Verb::TimedOut,
        Verb::NoApprovers,
        Verb::Canceled,
        Verb::Expired,
        Verb::Removed,
        Verb::Pruned,
    ];

    /// The verb as it appears in action names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verb::Created => "created",
            Verb::Updated => "updated",
            Verb::Deleted => "deleted",
            Verb::Blocked => "blocked",
            Verb::Granted => "granted",
            Verb::Revoked => "revoked",
            Verb::MemberAdded => "member_added",
            Verb::MemberRemoved => "member_removed",
            Verb::StageDecided => "stage_decided",
            Verb::Delivered => "delivered",
            Verb::DeliveryFailed => "delivery_failed",
            Verb::Denied => "denied",
            Verb::TimedOut => "timed_out",
            Verb::NoApprovers => "no_approvers",
            Verb::Canceled => "canceled",
            Verb::Expired => "expired",
            Verb::Removed => "removed",
            Verb::Pruned => "pruned",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|verb| verb.as_str() == name)
    }
}

/// An audit action: a verb done to a kind of target. Actions of stored
/// events are read back with [`Action::parse`], which borrows the target
/// type from the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action<'a> {
    pub target_type: &'a str,
    pub verb: Verb,
}

impl Action<'static> {
    pub const fn new(target_type: &'static str, verb: Verb) -> Self {
        Self { target_type, verb }
    }
}

impl<'a> Action<'a> {
    /// The action named `name` ("`target_type`.`verb`"), if its verb is
    /// known.
    pub fn parse(name: &'a str) -> Option<Self> {
        let (target_type, verb) = name.rsplit_once('.')?;
        Some(Self {
            target_type,
            verb: Verb::parse(verb)?,
        })
    }

    /// The action's name on the wire.
    pub fn name(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.target_type, self.verb.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_the_action_they_name() {
        for verb in Verb::ALL {
            let action = Action::new("access_package", verb);
            let name = action.name();
            assert_eq!(Action::parse(&name), Some(action), "{name}");
        }
        assert_eq!(
            Action::new("request", Verb::NoApprovers).name(),
            "request.no_approvers"
        );
        assert_eq!(Action::parse("request.unheard_of"), None);
        assert_eq!(Action::parse("no_dot"), None);
    }
}
