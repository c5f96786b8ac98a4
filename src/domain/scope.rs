//! Who may request under an assignment policy: its requestor scope, read
//! once from the stored policy into a [`ScopeKind`]. What each scope means
//! is stated here: who it leaves out ([`ScopeKind::excludes`], which
//! explanations use), which keys find its policies in an index
//! ([`ScopeKind::index_keys`]), and whether it is for external users. The
//! Cedar compilation of each kind (`policy::compile`) encodes the same rule.

use crate::pb::{AllowedTargetScope, AssignmentPolicy, SubjectSet};

/// A policy's requestor scope, with what it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeKind<'a> {
    /// No scope was set (validation refuses it on writes): nobody.
    Unset,
    /// `NOT_SPECIFIED`: nobody requests; administrators assign directly.
    AdministratorsOnly,
    /// `SPECIFIC_DIRECTORY_SUBJECTS`: the listed users and the members of
    /// the listed groups (nested).
    DirectorySubjects {
        users: &'a [String],
        groups: &'a [String],
    },
    /// `ALL_MEMBER_USERS`: every member (not guest) user.
    AllMembers,
    /// `ALL_DIRECTORY_USERS`: members and guests.
    AllDirectory,
    /// `SPECIFIC_CONNECTED_ORGANIZATION_USERS`: users of the listed
    /// connected organizations.
    Organizations { ids: &'a [String] },
    /// `ALL_CONFIGURED_CONNECTED_ORGANIZATION_USERS`: users of any
    /// configured connected organization.
    AllConfiguredOrganizations,
    /// `ALL_EXTERNAL_USERS`: any external user.
    AllExternal,
}

/// Where an index files a policy so that the users its scope may cover
/// find it: under a user, a group or an organization, or in one of the
/// sets every matching user looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeKey {
    User(String),
    Group(String),
    Organization(String),
    AllMembers,
    AllDirectory,
    AllConfiguredOrganizations,
    AllExternal,
}

/// What a scope looks at of a requestor.
pub struct Requestor<'a> {
    pub user_id: &'a str,
    pub guest: bool,
    /// Whether the requestor is in this group, directly or through nesting.
    pub in_group: &'a dyn Fn(&str) -> bool,
    /// The requestor's connected organization: its id, and whether it is
    /// configured.
    pub organization: Option<(&'a str, bool)>,
}

impl<'a> ScopeKind<'a> {
    pub fn of(policy: &'a AssignmentPolicy) -> Self {
        let targets = policy.specific_allowed_targets.as_ref();
        let listed = |pick: fn(&'a SubjectSet) -> &'a [String]| targets.map_or(&[][..], pick);
        match policy.scope() {
            AllowedTargetScope::Unspecified => Self::Unset,
            AllowedTargetScope::NotSpecified => Self::AdministratorsOnly,
            AllowedTargetScope::SpecificDirectorySubjects => Self::DirectorySubjects {
                users: listed(|t| &t.user_ids),
                groups: listed(|t| &t.group_ids),
            },
            AllowedTargetScope::AllMemberUsers => Self::AllMembers,
            AllowedTargetScope::AllDirectoryUsers => Self::AllDirectory,
            AllowedTargetScope::SpecificConnectedOrganizationUsers => Self::Organizations {
                ids: listed(|t| &t.connected_organization_ids),
            },
            AllowedTargetScope::AllConfiguredConnectedOrganizationUsers => {
                Self::AllConfiguredOrganizations
            }
            AllowedTargetScope::AllExternalUsers => Self::AllExternal,
        }
    }

    /// Whether the scope is for users outside the directory (which also
    /// needs the catalog to be externally visible).
    pub fn is_external(&self) -> bool {
        matches!(
            self,
            Self::Organizations { .. } | Self::AllConfiguredOrganizations | Self::AllExternal
        )
    }

    /// The keys an index files the policy under.
    pub fn index_keys(&self) -> Vec<ScopeKey> {
        match self {
            Self::DirectorySubjects { users, groups } => users
                .iter()
                .cloned()
                .map(ScopeKey::User)
                .chain(groups.iter().cloned().map(ScopeKey::Group))
                .collect(),
            Self::Organizations { ids } => {
                ids.iter().cloned().map(ScopeKey::Organization).collect()
            }
            Self::AllMembers => vec![ScopeKey::AllMembers],
            Self::AllDirectory => vec![ScopeKey::AllDirectory],
            Self::AllConfiguredOrganizations => vec![ScopeKey::AllConfiguredOrganizations],
            Self::AllExternal => vec![ScopeKey::AllExternal],
            Self::Unset | Self::AdministratorsOnly => Vec::new(),
        }
    }

    /// How the scope leaves `requestor` out, if it does. The directory-wide
    /// and administrator-only scopes name no requestor they leave out.
    pub fn excludes(&self, requestor: &Requestor<'_>) -> Option<String> {
        match self {
            Self::DirectorySubjects { users, groups } => {
                let listed = users.iter().any(|u| u == requestor.user_id);
                if listed || groups.iter().any(|g| (requestor.in_group)(g)) {
                    return None;
                }
                let groups: Vec<_> = groups.iter().map(|g| format!("group {g}")).collect();
                Some(if groups.is_empty() {
                    "not one of the listed users".to_string()
                } else {
                    format!("not listed and not in {}", groups.join(" or "))
                })
            }
            Self::AllMembers if requestor.guest => Some("guests are not members".into()),
            Self::Organizations { ids }
                if !requestor
                    .organization
                    .is_some_and(|(id, _)| ids.iter().any(|i| i == id)) =>
            {
                Some("not a user of the listed connected organizations".into())
            }
            Self::AllConfiguredOrganizations
                if !requestor
                    .organization
                    .is_some_and(|(_, configured)| configured) =>
            {
                Some("not a user of a configured connected organization".into())
            }
            Self::AllExternal if requestor.organization.is_none() => {
                Some("not an external user".into())
            }
            _ => None,
        }
    }
}
