//! Assignment policies: who may request a package, with what settings,
//! approvals and lifetime. Their Cedar form is produced by
//! `policy::compile`; this module checks their shape and references.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::audit::Draft;
use crate::error::Result;
use crate::pb::{
    AccessPackage, AllowedTargetScope, ApprovalStage, Approver, ConnectedOrganization,
    ExpirationType, Group, User, approver, question,
};
use crate::store::records::{self, IndexEntry, Record, Reference};
use crate::store::{ReadView, Txn};

use super::directory::require_present_user;
use super::entity::Entity;
use super::request::{OPEN_BY_POLICY, cancel_open};
use super::validate::{Check, MAX_DESCRIPTION, MAX_LIST, MAX_NAME};
use super::{mutable_fields, tracked_fields};
use crate::shared::actor::Actor;

pub const POLICIES_BY_PACKAGE: &str = "package";
pub const MAX_QUESTIONS: usize = 20;
pub const MAX_QUESTION_TEXT: usize = 1024;
pub const MAX_ANSWER: usize = 4096;
pub const MAX_CHOICES: usize = 50;
pub const MAX_STAGES: usize = 3;
pub const MAX_APPROVERS: usize = 25;
pub const MAX_CONDITION: usize = 4096;
/// 3660 days, the longest duration a policy may name.
pub const MAX_DURATION_SECONDS: i64 = 3660 * 86_400;
pub const DEFAULT_DECISION_TIMEOUT_SECONDS: i64 = 14 * 86_400;

impl Record for crate::pb::AssignmentPolicy {
    const KIND: &'static str = "assignment_policy";

    fn id(&self) -> String {
        self.id.clone()
    }

    fn indexes(&self) -> Vec<IndexEntry> {
        vec![IndexEntry::new(
            POLICIES_BY_PACKAGE,
            &self.access_package_id,
            &self.id,
        )]
    }

    /// Its package, and every user, group and connected organization it
    /// names (as requestors or approvers): none of them can be deleted
    /// while the policy names it, or re-creating the id would silently
    /// hand the policy to whoever then holds it.
    fn references(&self) -> Vec<Reference> {
        let mut refs = vec![Reference::new(AccessPackage::KIND, &self.access_package_id)];
        let targets = self.specific_allowed_targets.clone().unwrap_or_default();
        refs.extend(
            targets
                .user_ids
                .iter()
                .map(|u| Reference::new(User::KIND, u)),
        );
        refs.extend(
            targets
                .group_ids
                .iter()
                .map(|g| Reference::new(Group::KIND, g)),
        );
        refs.extend(
            targets
                .connected_organization_ids
                .iter()
                .map(|o| Reference::new(ConnectedOrganization::KIND, o)),
        );
        refs.extend(
            self.named_approvers()
                .filter_map(|approver| match approver {
                    approver::Approver::UserId(user) => Some(Reference::new(User::KIND, user)),
                    approver::Approver::GroupId(group) => Some(Reference::new(Group::KIND, group)),
                    _ => None,
                }),
        );
        refs
    }
}

impl Entity for crate::pb::AssignmentPolicy {
    const FIELD: &'static str = "assignment_policy";
    tracked_fields!();

    fn audit(&self, view: &dyn ReadView, draft: Draft, _: Option<&Self>) -> Result<Draft> {
        let catalog = records::load::<AccessPackage>(view, &self.access_package_id)?
            .map(|package| package.catalog_id)
            .unwrap_or_default();
        Ok(draft.catalog(catalog).package(&self.access_package_id))
    }

    mutable_fields!(
        display_name,
        description,
        allowed_target_scope,
        specific_allowed_targets,
        requestor_settings,
        questions,
        expiration,
        approval_settings,
        extra_condition,
    );

    fn normalize(&mut self, _old: Option<&Self>) {
        if let Some(approval) = &mut self.approval_settings {
            for stage in &mut approval.stages {
                if stage.decision_timeout.is_none() {
                    stage.decision_timeout = Some(prost_types::Duration {
                        seconds: DEFAULT_DECISION_TIMEOUT_SECONDS,
                        nanos: 0,
                    });
                }
                if stage.approvals_required == 0 {
                    stage.approvals_required = 1;
                }
            }
        }
        self.extra_condition = self.extra_condition.trim().to_string();
    }

    fn validate(&self, check: &mut Check) {
        check.id("access_package_id", &self.access_package_id);
        check.text("display_name", &self.display_name, MAX_NAME, true);
        check.text("description", &self.description, MAX_DESCRIPTION, false);
        self.validate_scope(check);
        self.validate_questions(check);
        self.validate_expiration(check);
        self.validate_approval(check);
        if self.extra_condition.chars().count() > MAX_CONDITION {
            check.fail(
                "extra_condition",
                format!("must be at most {MAX_CONDITION} characters"),
            );
        } else {
            check.cedar("extra_condition", &self.extra_condition);
        }
    }

    /// An ON_DATE end must be a valid time still to come when it is set;
    /// one that passed since does not block other changes to the policy.
    fn validate_at(&self, now: SystemTime, old: Option<&Self>, check: &mut Check) {
        let end_of = |policy: &Self| {
            policy
                .expiration
                .filter(|e| e.r#type() == ExpirationType::OnDate)
                .and_then(|e| e.end_time)
        };
        if let Some(end) = end_of(self)
            && old.and_then(end_of) != Some(end)
        {
            check.future_timestamp("expiration.end_time", &end, now);
        }
    }

    fn check_against(&self, view: &dyn ReadView, _old: Option<&Self>) -> Result<()> {
        records::require::<AccessPackage>(view, &self.access_package_id)?;
        let targets = self.specific_allowed_targets.clone().unwrap_or_default();
        for user in &targets.user_ids {
            require_present_user(view, user)?;
        }
        for group in &targets.group_ids {
            records::require::<Group>(view, group)?;
        }
        for organization in &targets.connected_organization_ids {
            records::require::<ConnectedOrganization>(view, organization)?;
        }
        for approver in self.named_approvers() {
            match approver {
                approver::Approver::UserId(user) => {
                    require_present_user(view, user)?;
                }
                approver::Approver::GroupId(group) => {
                    records::require::<Group>(view, group)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Pending requests through the policy are canceled with it.
    fn before_remove(&self, txn: &mut dyn Txn, actor: &Actor) -> Result<()> {
        cancel_open(
            txn,
            OPEN_BY_POLICY,
            &self.id,
            actor,
            "canceled: the assignment policy was deleted",
        )
    }
}

impl crate::pb::AssignmentPolicy {
    pub fn scope(&self) -> AllowedTargetScope {
        AllowedTargetScope::try_from(self.allowed_target_scope).unwrap_or_default()
    }

    /// Every approver of every stage, primary and fallback.
    fn named_approvers(&self) -> impl Iterator<Item = &approver::Approver> {
        self.approval_settings
            .iter()
            .flat_map(|a| &a.stages)
            .flat_map(|stage| {
                stage
                    .primary_approvers
                    .iter()
                    .chain(&stage.fallback_approvers)
            })
            .filter_map(|a| a.approver.as_ref())
    }

    fn validate_scope(&self, check: &mut Check) {
        let scope = AllowedTargetScope::try_from(self.allowed_target_scope);
        let targets = self.specific_allowed_targets.clone().unwrap_or_default();
        check.id_list(
            "specific_allowed_targets.user_ids",
            &targets.user_ids,
            MAX_LIST,
        );
        check.id_list(
            "specific_allowed_targets.group_ids",
            &targets.group_ids,
            MAX_LIST,
        );
        check.id_list(
            "specific_allowed_targets.connected_organization_ids",
            &targets.connected_organization_ids,
            MAX_LIST,
        );
        let directory_subjects = !targets.user_ids.is_empty() || !targets.group_ids.is_empty();
        let organizations = !targets.connected_organization_ids.is_empty();
        match scope {
            Err(_) | Ok(AllowedTargetScope::Unspecified) => {
                check.fail("allowed_target_scope", "is required");
            }
            Ok(AllowedTargetScope::SpecificDirectorySubjects) => {
                check.require(
                    directory_subjects,
                    "specific_allowed_targets",
                    "must name at least one user or group for SPECIFIC_DIRECTORY_SUBJECTS",
                );
                check.require(
                    !organizations,
                    "specific_allowed_targets.connected_organization_ids",
                    "must be empty for SPECIFIC_DIRECTORY_SUBJECTS",
                );
            }
            Ok(AllowedTargetScope::SpecificConnectedOrganizationUsers) => {
                check.require(
                    organizations,
                    "specific_allowed_targets.connected_organization_ids",
                    "must name at least one organization for SPECIFIC_CONNECTED_ORGANIZATION_USERS",
                );
                check.require(
                    !directory_subjects,
                    "specific_allowed_targets",
                    "must not name users or groups for SPECIFIC_CONNECTED_ORGANIZATION_USERS",
                );
            }
            Ok(scope) => {
                check.require(
                    !directory_subjects && !organizations,
                    "specific_allowed_targets",
                    &format!("must be empty for {}", scope.as_str_name()),
                );
            }
        }
        let settings = self.requestor_settings.unwrap_or_default();
        if scope == Ok(AllowedTargetScope::NotSpecified)
            && (settings.enable_self_add || settings.enable_self_update)
        {
            check.fail(
                "requestor_settings",
                "self-service requests need a scope other than NOT_SPECIFIED (administrators assign directly)",
            );
        }
    }

    fn validate_questions(&self, check: &mut Check) {
        if self.questions.len() > MAX_QUESTIONS {
            check.fail(
                "questions",
                format!("must have at most {MAX_QUESTIONS} entries"),
            );
        }
        let mut ids = HashSet::new();
        for (i, q) in self.questions.iter().enumerate() {
            let field = format!("questions[{i}]");
            check.id(&format!("{field}.id"), &q.id);
            if !ids.insert(&q.id) {
                check.fail(
                    &format!("{field}.id"),
                    format!("{:?} is listed twice", q.id),
                );
            }
            check.text(&format!("{field}.text"), &q.text, MAX_QUESTION_TEXT, true);
            match &q.kind {
                None => check.fail(
                    &format!("{field}.kind"),
                    "one of text_input or choice is required",
                ),
                Some(question::Kind::TextInput(text)) => {
                    if !(0..=MAX_ANSWER as i32).contains(&text.max_length) {
                        check.fail(
                            &format!("{field}.text_input.max_length"),
                            format!("must be between 0 (default) and {MAX_ANSWER}"),
                        );
                    }
                }
                Some(question::Kind::Choice(choice)) => {
                    let len = choice.choices.len();
                    if len == 0 || len > MAX_CHOICES {
                        check.fail(
                            &format!("{field}.choice.choices"),
                            format!("must have 1-{MAX_CHOICES} entries"),
                        );
                    }
                    let mut seen = HashSet::new();
                    for (j, value) in choice.choices.iter().enumerate() {
                        check.text(
                            &format!("{field}.choice.choices[{j}]"),
                            value,
                            MAX_NAME,
                            true,
                        );
                        if !seen.insert(value) {
                            check.fail(&format!("{field}.choice.choices[{j}]"), "is listed twice");
                        }
                    }
                }
            }
        }
    }

    fn validate_expiration(&self, check: &mut Check) {
        let Some(expiration) = &self.expiration else {
            check.fail("expiration", "is required");
            return;
        };
        match ExpirationType::try_from(expiration.r#type) {
            Ok(ExpirationType::None) => {
                check.require(
                    expiration.duration.is_none() && expiration.end_time.is_none(),
                    "expiration",
                    "NONE takes neither duration nor end_time",
                );
            }
            Ok(ExpirationType::AfterDuration) => {
                check.require(
                    expiration.end_time.is_none(),
                    "expiration.end_time",
                    "must be empty for AFTER_DURATION",
                );
                check.whole_seconds(
                    "expiration.duration",
                    expiration.duration.as_ref(),
                    1,
                    MAX_DURATION_SECONDS,
                );
            }
            Ok(ExpirationType::OnDate) => {
                check.require(
                    expiration.duration.is_none(),
                    "expiration.duration",
                    "must be empty for ON_DATE",
                );
                check.require(
                    expiration.end_time.is_some(),
                    "expiration.end_time",
                    "is required for ON_DATE",
                );
            }
            _ => check.fail("expiration.type", "is required"),
        }
    }

    fn validate_approval(&self, check: &mut Check) {
        let Some(approval) = &self.approval_settings else {
            return;
        };
        let required = approval.approval_required_for_add || approval.approval_required_for_update;
        if required && (approval.stages.is_empty() || approval.stages.len() > MAX_STAGES) {
            check.fail(
                "approval_settings.stages",
                format!("must have 1-{MAX_STAGES} stages when approval is required"),
            );
        }
        if !required && !approval.stages.is_empty() {
            check.fail(
                "approval_settings.stages",
                "must be empty when no approval is required",
            );
        }
        for (i, stage) in approval.stages.iter().enumerate() {
            validate_stage(check, &format!("approval_settings.stages[{i}]"), stage);
        }
    }
}

fn validate_stage(check: &mut Check, field: &str, stage: &ApprovalStage) {
    if stage.primary_approvers.is_empty() || stage.primary_approvers.len() > MAX_APPROVERS {
        check.fail(
            &format!("{field}.primary_approvers"),
            format!("must have 1-{MAX_APPROVERS} entries"),
        );
    }
    if stage.fallback_approvers.len() > MAX_APPROVERS {
        check.fail(
            &format!("{field}.fallback_approvers"),
            format!("must have at most {MAX_APPROVERS} entries"),
        );
    }
    for (list, approvers) in [
        ("primary_approvers", &stage.primary_approvers),
        ("fallback_approvers", &stage.fallback_approvers),
    ] {
        for (i, approver) in approvers.iter().enumerate() {
            validate_approver(check, &format!("{field}.{list}[{i}]"), approver);
        }
    }
    check.whole_seconds(
        &format!("{field}.decision_timeout"),
        stage.decision_timeout.as_ref(),
        1,
        MAX_DURATION_SECONDS,
    );
    if !(1..=MAX_APPROVERS as i32).contains(&stage.approvals_required) {
        check.fail(
            &format!("{field}.approvals_required"),
            format!("must be between 1 (default) and {MAX_APPROVERS}"),
        );
    }
}

fn validate_approver(check: &mut Check, field: &str, approver: &Approver) {
    match &approver.approver {
        None => check.fail(field, "names no approver"),
        Some(approver::Approver::UserId(id)) => check.id(&format!("{field}.user_id"), id),
        Some(approver::Approver::GroupId(id)) => check.id(&format!("{field}.group_id"), id),
        Some(approver::Approver::ManagerLevel(level)) => {
            check.require(
                (1..=2).contains(level),
                &format!("{field}.manager_level"),
                "must be 1 or 2",
            );
        }
        Some(approver::Approver::InternalSponsors(on))
        | Some(approver::Approver::ExternalSponsors(on)) => {
            check.require(*on, field, "sponsor approvers must be set to true");
        }
    }
}
