//! Users, groups (nested), group memberships and connected organizations.

use std::collections::{BTreeMap, HashSet, VecDeque};

use prost::Message;

use crate::audit::{self, Draft, Verb};
use crate::error::{Error, PreconditionKind, Result};
use crate::pb::{
    ConnectedOrganization, ConnectedOrganizationState, Group, GroupMembership, User, UserKind,
    UserState, group_membership, identity_source,
};
use crate::store::records::{self, IndexEntry, Record, Reference, Source};
use crate::store::{ReadView, Txn};

use super::entity::{Entity, record_info, stamp};
use super::request::time_key;
use super::validate::{
    Check, MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES, MAX_DESCRIPTION, MAX_EMAIL,
    MAX_IDENTITY_SOURCES, MAX_LIST, MAX_NAME,
};
use super::{mutable_fields, tracked_fields};
use crate::shared::actor::Actor;

// Index names, shared by writers and listings.
pub const USERS_BY_ORGANIZATION: &str = "organization";
pub const USERS_BY_EMAIL: &str = "email";
/// The uniqueness claim on a user's sign-in name, lower-cased.
pub const USER_NAME: &str = "user_name";
/// Blocked governed guests by when they are to be deleted.
pub const USERS_BY_DELETE_TIME: &str = "delete_due";
pub const USERS_IN_GROUP: &str = "users";
pub const GROUPS_IN_GROUP: &str = "groups";
pub const GROUPS_OF_USER: &str = "of_user";
pub const GROUPS_OF_GROUP: &str = "of_group";

impl Record for User {
    const KIND: &'static str = "user";

    fn id(&self) -> String {
        self.id.clone()
    }

    fn indexes(&self) -> Vec<IndexEntry> {
        let mut entries = Vec::new();
        if !self.connected_organization_id.is_empty() {
            entries.push(IndexEntry::new(
                USERS_BY_ORGANIZATION,
                &self.connected_organization_id,
                &self.id,
            ));
        }
        if !self.email.is_empty() {
            entries.push(IndexEntry::new(USERS_BY_EMAIL, &self.email, &self.id));
        }
        if let Some(time) = self.scheduled_delete_time
            && self.state == UserState::Blocked as i32
        {
            entries.push(IndexEntry::new(
                USERS_BY_DELETE_TIME,
                time_key(time.seconds),
                &self.id,
            ));
        }
        entries
    }

    /// A deleted user gives up their sign-in name, which the identity
    /// system may give to someone new.
    fn uniques(&self) -> Vec<(&'static str, String)> {
        if self.user_name.is_empty() || self.state == UserState::Deleted as i32 {
            return Vec::new();
        }
        vec![(USER_NAME, self.user_name.to_lowercase())]
    }

    /// The user's organization and sponsors; a deleted user no longer
    /// holds them in use.
    fn references(&self) -> Vec<Reference> {
        if self.state == UserState::Deleted as i32 {
            return Vec::new();
        }
        let mut refs: Vec<Reference> = self
            .sponsor_ids
            .iter()
            .filter(|sponsor| **sponsor != self.id)
            .map(|sponsor| Reference::new(User::KIND, sponsor))
            .collect();
        if !self.connected_organization_id.is_empty() {
            refs.push(Reference::new(
                ConnectedOrganization::KIND,
                &self.connected_organization_id,
            ));
        }
        refs
    }
}

/// The field number of `User.attributes` in directory.proto.
const USER_ATTRIBUTES_TAG: u32 = 8;

impl Entity for User {
    const FIELD: &'static str = "user";
    tracked_fields!();

    /// The encoding with `attributes` (a map, which encodes in no fixed
    /// order) last, in key order.
    fn canonical_encoding(&self) -> Vec<u8> {
        let mut user = self.clone();
        let attributes: BTreeMap<String, String> =
            std::mem::take(&mut user.attributes).into_iter().collect();
        let mut bytes = user.encode_to_vec();
        prost::encoding::btree_map::encode(
            prost::encoding::string::encode,
            prost::encoding::string::encoded_len,
            prost::encoding::string::encode,
            prost::encoding::string::encoded_len,
            USER_ATTRIBUTES_TAG,
            &attributes,
            &mut bytes,
        );
        bytes
    }

    /// Users act, so they may not take an id reserved for the service.
    fn check_chosen_id(check: &mut Check, field: &str, id: &str) {
        check.actor_id(field, id);
    }

    fn audit(&self, _: &dyn ReadView, draft: Draft, _: Option<&Self>) -> Result<Draft> {
        Ok(draft.user(&self.id).outcome(self.state().as_str_name()))
    }

    mutable_fields!(
        display_name,
        email,
        kind,
        state,
        manager_id,
        connected_organization_id,
        attributes,
        sponsor_ids,
        user_name,
        external_id,
    );

    fn normalize(&mut self, old: Option<&Self>) {
        if old.is_none() {
            // Output only: what a client sends on create is ignored.
            self.governed = false;
            self.delete_time = None;
            self.scheduled_delete_time = None;
        }
        self.email = self.email.trim().to_lowercase();
        self.user_name = self.user_name.trim().to_string();
        if self.kind == UserKind::Unspecified as i32 {
            self.kind = old.map_or(UserKind::Member as i32, |o| o.kind);
        }
        if self.state == UserState::Unspecified as i32 {
            self.state = old.map_or(UserState::Active as i32, |o| o.state);
        }
        // Unblocking a guest calls off their scheduled deletion.
        if self.state == UserState::Active as i32 {
            self.scheduled_delete_time = None;
        }
    }

    fn validate(&self, check: &mut Check) {
        check.text("display_name", &self.display_name, MAX_NAME, true);
        check.text("email", &self.email, MAX_EMAIL, false);
        check.text("user_name", &self.user_name, MAX_NAME, false);
        check.text("external_id", &self.external_id, MAX_NAME, false);
        if !self.email.is_empty() && email_domain(&self.email).is_none() {
            check.fail("email", "must look like name@domain");
        }
        check.require(
            UserKind::try_from(self.kind).is_ok(),
            "kind",
            "is not a known user kind",
        );
        match UserState::try_from(self.state) {
            // A stored deleted user (it has a delete_time) is refused by
            // check_against with FAILED_PRECONDITION instead.
            Ok(UserState::Deleted) if self.delete_time.is_none() => {
                check.fail("state", "cannot be set; use DeleteUser")
            }
            Ok(_) => {}
            Err(_) => check.fail("state", "is not a known user state"),
        }
        check.optional_id("manager_id", &self.manager_id);
        check.require(
            self.manager_id != self.id || self.id.is_empty(),
            "manager_id",
            "must not be the user itself",
        );
        check.optional_id("connected_organization_id", &self.connected_organization_id);
        check.id_list("sponsor_ids", &self.sponsor_ids, MAX_LIST);
        if self.attributes.len() > MAX_ATTRIBUTES {
            check.fail(
                "attributes",
                format!("must have at most {MAX_ATTRIBUTES} entries"),
            );
        }
        for (key, value) in &self.attributes {
            let field = format!("attributes[{key:?}]");
            if key.is_empty()
                || key.len() > MAX_ATTRIBUTE_KEY
                || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                check.fail(
                    &field,
                    format!("keys must be 1-{MAX_ATTRIBUTE_KEY} characters of [A-Za-z0-9_]"),
                );
            }
            check.text(&field, value, MAX_ATTRIBUTE_VALUE, false);
        }
    }

    fn check_against(&self, view: &dyn ReadView, old: Option<&Self>) -> Result<()> {
        if old.is_some_and(|o| o.state == UserState::Deleted as i32) {
            return Err(deleted_user(&self.id));
        }
        if !self.manager_id.is_empty() {
            records::require::<User>(view, &self.manager_id)?;
        }
        if !self.connected_organization_id.is_empty() {
            records::require::<ConnectedOrganization>(view, &self.connected_organization_id)?;
        }
        for sponsor in &self.sponsor_ids {
            require_present_user(view, sponsor)?;
        }
        Ok(())
    }
}

/// FAILED_PRECONDITION: user `id` is deleted, so nothing more happens to
/// them.
pub fn deleted_user(id: &str) -> Error {
    Error::precondition(
        PreconditionKind::State,
        records::subject::<User>(id),
        format!("user {id:?} is deleted"),
    )
}

/// Loads a user that another record is to name: NOT_FOUND when there is
/// none, FAILED_PRECONDITION when they are deleted (a deleted user can
/// sponsor, approve or request nothing, so naming one would dangle).
pub fn require_present_user(view: &(impl ReadView + ?Sized), id: &str) -> Result<User> {
    let user: User = records::require(view, id)?;
    if user.state == UserState::Deleted as i32 {
        return Err(Error::precondition(
            PreconditionKind::Deleted,
            records::subject::<User>(id),
            format!("user {id:?} is deleted: a deleted user cannot be named"),
        ));
    }
    Ok(user)
}

/// Refuses to delete a user that other records name (policies, connected
/// organizations, other users' sponsor lists). Group memberships do not
/// count: they end with the user.
pub fn ensure_user_unreferenced(view: &(impl ReadView + ?Sized), id: &str) -> Result<()> {
    Ok(records::ensure_unreferenced(
        view,
        User::KIND,
        id,
        Some(GroupMembership::KIND),
    )?)
}

/// The domain part of an email address, lower-case.
pub fn email_domain(email: &str) -> Option<&str> {
    let (local, domain) = email.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !domain.contains('@')).then_some(domain)
}

/// Soft-deletes a user: state DELETED, out of every group.
pub fn delete_user(txn: &mut dyn Txn, id: &str, etag: &str, actor: &Actor) -> Result<User> {
    let old: User = records::require(txn, id)?;
    super::entity::check_etag(etag, &old.etag, User::KIND, id)?;
    if old.state == UserState::Deleted as i32 {
        return Err(Error::precondition(
            PreconditionKind::State,
            records::subject::<User>(id),
            format!("user {id:?} is already deleted"),
        ));
    }
    ensure_user_unreferenced(txn, id)?;
    for group in targets(txn, GroupMembership::KIND, GROUPS_OF_USER, id)? {
        remove_membership(txn, &membership_id(&group, &Member::User(id.to_string())))?;
    }
    let mut user = old.clone();
    user.state = UserState::Deleted as i32;
    user.delete_time = Some(crate::shared::clock::to_timestamp(actor.now));
    user.scheduled_delete_time = None;
    stamp(&mut user, Some(&old), actor, txn.revision());
    records::save(txn, Some(&old), &user)?;
    let draft = user.audit(txn, Draft::new(User::KIND, Verb::Deleted, id), Some(&old))?;
    audit::append(txn, actor, draft)?;
    Ok(user)
}

impl Record for Group {
    const KIND: &'static str = "group";

    fn id(&self) -> String {
        self.id.clone()
    }
}

impl Entity for Group {
    const FIELD: &'static str = "group";
    tracked_fields!();
    mutable_fields!(display_name, description, external_id);

    fn validate(&self, check: &mut Check) {
        check.text("display_name", &self.display_name, MAX_NAME, true);
        check.text("description", &self.description, MAX_DESCRIPTION, false);
        check.text("external_id", &self.external_id, MAX_NAME, false);
    }

    /// A group's memberships (as container and as member) go with it.
    fn before_remove(&self, txn: &mut dyn Txn, _actor: &Actor) -> Result<()> {
        for user in targets(txn, GroupMembership::KIND, USERS_IN_GROUP, &self.id)? {
            remove_membership(txn, &membership_id(&self.id, &Member::User(user)))?;
        }
        for child in targets(txn, GroupMembership::KIND, GROUPS_IN_GROUP, &self.id)? {
            remove_membership(txn, &membership_id(&self.id, &Member::Group(child)))?;
        }
        for parent in targets(txn, GroupMembership::KIND, GROUPS_OF_GROUP, &self.id)? {
            remove_membership(
                txn,
                &membership_id(&parent, &Member::Group(self.id.clone())),
            )?;
        }
        Ok(())
    }
}

/// Every target listed under one index value.
pub fn targets(
    view: &(impl ReadView + ?Sized),
    kind: &'static str,
    name: &'static str,
    value: &str,
) -> Result<Vec<String>> {
    Ok(
        records::ids(view, "", &Source::Index { kind, name, value }, None)
            .collect::<Result<_, _>>()?,
    )
}

/// A direct member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    User(String),
    Group(String),
}

impl Member {
    pub fn from_proto(member: Option<&group_membership::Member>) -> Option<Self> {
        match member? {
            group_membership::Member::UserId(id) => Some(Self::User(id.clone())),
            group_membership::Member::MemberGroupId(id) => Some(Self::Group(id.clone())),
        }
    }

    pub fn to_proto(&self) -> group_membership::Member {
        match self {
            Self::User(id) => group_membership::Member::UserId(id.clone()),
            Self::Group(id) => group_membership::Member::MemberGroupId(id.clone()),
        }
    }

    fn id(&self) -> &str {
        match self {
            Self::User(id) | Self::Group(id) => id,
        }
    }
}

/// Membership ids join parts with '/', which ids never contain.
pub fn membership_id(group_id: &str, member: &Member) -> String {
    match member {
        Member::User(id) => format!("{group_id}/u/{id}"),
        Member::Group(id) => format!("{group_id}/g/{id}"),
    }
}

impl Record for GroupMembership {
    const KIND: &'static str = "membership";

    fn id(&self) -> String {
        let member =
            Member::from_proto(self.member.as_ref()).unwrap_or(Member::User(String::new()));
        membership_id(&self.group_id, &member)
    }

    fn indexes(&self) -> Vec<IndexEntry> {
        match Member::from_proto(self.member.as_ref()) {
            Some(Member::User(user)) => vec![
                IndexEntry::new(USERS_IN_GROUP, &self.group_id, &user),
                IndexEntry::new(GROUPS_OF_USER, &user, &self.group_id),
            ],
            Some(Member::Group(child)) => vec![
                IndexEntry::new(GROUPS_IN_GROUP, &self.group_id, &child),
                IndexEntry::new(GROUPS_OF_GROUP, &child, &self.group_id),
            ],
            None => Vec::new(),
        }
    }

    fn references(&self) -> Vec<Reference> {
        let mut refs = vec![Reference::new(Group::KIND, &self.group_id)];
        match Member::from_proto(self.member.as_ref()) {
            Some(Member::User(user)) => refs.push(Reference::new(User::KIND, user)),
            Some(Member::Group(child)) => refs.push(Reference::new(Group::KIND, child)),
            None => {}
        }
        refs
    }
}

fn remove_membership(txn: &mut dyn Txn, id: &str) -> Result<()> {
    if let Some(membership) = records::load::<GroupMembership>(txn, id)? {
        records::remove(txn, &membership)?;
    }
    Ok(())
}

pub fn check_membership_args(group_id: &str, member: Option<&Member>) -> Result<Member> {
    let mut check = Check::new("");
    check.id("group_id", group_id);
    match member {
        Some(Member::User(id)) => check.id("user_id", id),
        Some(Member::Group(id)) => check.id("member_group_id", id),
        None => check.fail("member", "one of user_id or member_group_id is required"),
    }
    check.finish()?;
    Ok(member.cloned().expect("checked above"))
}

pub fn add_member(
    txn: &mut dyn Txn,
    group_id: &str,
    member: Member,
    actor: &Actor,
) -> Result<GroupMembership> {
    records::require::<Group>(txn, group_id)?;
    match &member {
        Member::User(id) => {
            let user: User = records::require(txn, id)?;
            if user.state == UserState::Deleted as i32 {
                return Err(deleted_user(id));
            }
        }
        Member::Group(id) => {
            records::require::<Group>(txn, id)?;
            if id == group_id || ancestors(txn, group_id)?.contains(id.as_str()) {
                return Err(Error::precondition(
                    PreconditionKind::NestingCycle,
                    records::subject::<Group>(id),
                    format!("adding group {id:?} to group {group_id:?} would make a nesting cycle"),
                ));
            }
        }
    }
    let id = membership_id(group_id, &member);
    if records::exists::<GroupMembership>(txn, &id)? {
        return Err(Error::AlreadyExists {
            kind: GroupMembership::KIND,
            id,
            message: format!(
                "{} {:?} is already a member of group {group_id:?}",
                kind_of(&member),
                member.id()
            ),
        });
    }
    let mut membership = GroupMembership {
        group_id: group_id.to_string(),
        member: Some(member.to_proto()),
        info: None,
    };
    membership.info = Some(record_info(actor, txn.revision(), None));
    audit::append(
        txn,
        actor,
        membership_event(group_id, &member, Verb::MemberAdded),
    )?;
    records::save(txn, None, &membership)?;
    Ok(membership)
}

pub fn remove_member(
    txn: &mut dyn Txn,
    group_id: &str,
    member: &Member,
    actor: &Actor,
) -> Result<()> {
    let id = membership_id(group_id, member);
    let membership: GroupMembership = records::load(txn, &id)?.ok_or_else(|| Error::NotFound {
        kind: GroupMembership::KIND,
        id: id.clone(),
    })?;
    records::remove(txn, &membership)?;
    audit::append(
        txn,
        actor,
        membership_event(group_id, member, Verb::MemberRemoved),
    )
}

/// The direct members of a group: its users, then its nested groups.
pub fn direct_members(view: &(impl ReadView + ?Sized), group_id: &str) -> Result<Vec<Member>> {
    let users = targets(view, GroupMembership::KIND, USERS_IN_GROUP, group_id)?;
    let groups = targets(view, GroupMembership::KIND, GROUPS_IN_GROUP, group_id)?;
    Ok(users
        .into_iter()
        .map(Member::User)
        .chain(groups.into_iter().map(Member::Group))
        .collect())
}

/// Makes `desired` the group's direct members: removes the others, adds
/// the missing, each with its audit event, as [`remove_member`] and
/// [`add_member`] do.
pub fn set_members(
    txn: &mut dyn Txn,
    group_id: &str,
    desired: &[Member],
    actor: &Actor,
) -> Result<()> {
    let current = direct_members(txn, group_id)?;
    for member in current.iter().filter(|m| !desired.contains(m)) {
        remove_member(txn, group_id, member, actor)?;
    }
    for member in desired.iter().filter(|m| !current.contains(m)) {
        add_member(txn, group_id, member.clone(), actor)?;
    }
    Ok(())
}

/// The audit event of a membership change, on the group.
fn membership_event(group_id: &str, member: &Member, verb: Verb) -> Draft {
    let draft = Draft::new(Group::KIND, verb, group_id)
        .detail("member_type", kind_of(member))
        .detail("member_id", member.id());
    match member {
        Member::User(id) => draft.user(id),
        Member::Group(_) => draft,
    }
}

fn kind_of(member: &Member) -> &'static str {
    match member {
        Member::User(_) => User::KIND,
        Member::Group(_) => Group::KIND,
    }
}

/// Every group that contains `group_id`, directly or through nesting.
pub fn ancestors(view: &(impl ReadView + ?Sized), group_id: &str) -> Result<HashSet<String>> {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([group_id.to_string()]);
    while let Some(group) = queue.pop_front() {
        for parent in targets(view, GroupMembership::KIND, GROUPS_OF_GROUP, &group)? {
            if seen.insert(parent.clone()) {
                queue.push_back(parent);
            }
        }
    }
    Ok(seen)
}

pub const ORGANIZATION_BY_TENANT: &str = "tenant";
pub const ORGANIZATION_BY_DOMAIN: &str = "domain";

impl Record for ConnectedOrganization {
    const KIND: &'static str = "connected_organization";

    fn id(&self) -> String {
        self.id.clone()
    }

    /// Its sponsors: they cannot be deleted while they sponsor it.
    fn references(&self) -> Vec<Reference> {
        self.internal_sponsor_ids
            .iter()
            .chain(&self.external_sponsor_ids)
            .map(|sponsor| Reference::new(User::KIND, sponsor))
            .collect()
    }

    fn uniques(&self) -> Vec<(&'static str, String)> {
        self.identity_sources
            .iter()
            .filter_map(|s| match &s.source {
                Some(identity_source::Source::TenantId(t)) => {
                    Some((ORGANIZATION_BY_TENANT, t.clone()))
                }
                Some(identity_source::Source::DomainName(d)) => {
                    Some((ORGANIZATION_BY_DOMAIN, d.clone()))
                }
                None => None,
            })
            .collect()
    }
}

impl Entity for ConnectedOrganization {
    const FIELD: &'static str = "connected_organization";
    tracked_fields!();
    mutable_fields!(
        display_name,
        description,
        identity_sources,
        state,
        internal_sponsor_ids,
        external_sponsor_ids,
    );

    fn normalize(&mut self, old: Option<&Self>) {
        for source in &mut self.identity_sources {
            if let Some(identity_source::Source::DomainName(domain)) = &mut source.source {
                *domain = domain.trim().to_lowercase();
            }
        }
        if self.state == ConnectedOrganizationState::Unspecified as i32 {
            self.state = old.map_or(ConnectedOrganizationState::Configured as i32, |o| o.state);
        }
    }

    fn validate(&self, check: &mut Check) {
        check.text("display_name", &self.display_name, MAX_NAME, true);
        check.text("description", &self.description, MAX_DESCRIPTION, false);
        check.require(
            ConnectedOrganizationState::try_from(self.state).is_ok(),
            "state",
            "is not a known connected organization state",
        );
        if self.identity_sources.is_empty() || self.identity_sources.len() > MAX_IDENTITY_SOURCES {
            check.fail(
                "identity_sources",
                format!("must have 1-{MAX_IDENTITY_SOURCES} entries"),
            );
        }
        let mut seen = HashSet::new();
        for (i, source) in self.identity_sources.iter().enumerate() {
            let field = format!("identity_sources[{i}]");
            match &source.source {
                Some(identity_source::Source::TenantId(tenant)) => {
                    check.id(&format!("{field}.tenant_id"), tenant)
                }
                Some(identity_source::Source::DomainName(domain)) => {
                    if !is_domain(domain) {
                        check.fail(
                            &format!("{field}.domain_name"),
                            "must be a domain name such as fabrikam.example",
                        );
                    }
                }
                None => check.fail(&field, "one of tenant_id or domain_name is required"),
            }
            if !seen.insert(&source.source) {
                check.fail(&field, "is listed twice");
            }
            check.text(
                &format!("{field}.display_name"),
                &source.display_name,
                MAX_NAME,
                false,
            );
        }
        check.id_list("internal_sponsor_ids", &self.internal_sponsor_ids, MAX_LIST);
        check.id_list("external_sponsor_ids", &self.external_sponsor_ids, MAX_LIST);
    }

    fn check_against(&self, view: &dyn ReadView, _old: Option<&Self>) -> Result<()> {
        for sponsor in self
            .internal_sponsor_ids
            .iter()
            .chain(&self.external_sponsor_ids)
        {
            require_present_user(view, sponsor)?;
        }
        Ok(())
    }
}

/// Whether `value` is a domain name such as fabrikam.example.
pub fn is_domain(value: &str) -> bool {
    value.len() <= 253
        && value.contains('.')
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_emails() {
        assert!(is_domain("fabrikam.example"));
        assert!(!is_domain("fabrikam"));
        assert!(!is_domain("-x.example"));
        assert_eq!(email_domain("a@b.example"), Some("b.example"));
        assert_eq!(email_domain("@b.example"), None);
    }
}
