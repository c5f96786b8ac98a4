//! External requestors: people not in the directory, matched to a connected
//! organization by tenant id or email domain. Under an ALL_EXTERNAL_USERS
//! policy an unknown domain creates a PROPOSED organization (once per
//! domain: the domain is unique across organizations).

use crate::audit::{self, Draft, Verb};
use crate::domain::directory::{
    ORGANIZATION_BY_DOMAIN, ORGANIZATION_BY_TENANT, email_domain, is_domain,
};
use crate::domain::entity::stamp;
use crate::domain::validate::{Check, MAX_EMAIL, MAX_NAME};
use crate::error::Result;
use crate::pb::{
    AllowedTargetScope, AssignmentPolicy, ConnectedOrganization, ConnectedOrganizationState,
    ExternalRequestor, IdentitySource, User, UserKind, UserState, identity_source,
};
use crate::policy::entities::Subject;
use crate::shared::actor::Actor;
use crate::shared::id::new_id;
use crate::store::records::{self, Record};
use crate::store::{ReadView, Txn};

/// The subject an external requestor is decided as, and the requestor with
/// the organization they were matched to.
pub fn requestor(
    txn: &mut dyn Txn,
    id: &str,
    external: &ExternalRequestor,
    policy: &AssignmentPolicy,
    actor: &Actor,
) -> Result<(Subject, Option<ExternalRequestor>)> {
    let mut check = Check::new("assignment_request.external_requestor");
    let email = external.email.trim().to_lowercase();
    // The email and the display name defaulted from it become a directory
    // user, and an unknown domain a proposed organization: both must pass
    // the directory's own checks.
    let domain = email_domain(&email)
        .filter(|d| is_domain(d))
        .map(str::to_string);
    check.text("email", &email, MAX_EMAIL, false);
    check.require(domain.is_some(), "email", "must look like name@domain");
    check.optional_id("tenant_id", &external.tenant_id);
    check.text("display_name", &external.display_name, MAX_NAME, false);
    check.finish()?;
    let domain = domain.expect("checked above");

    let organization = match_organization(txn, &external.tenant_id, &domain)?;
    let organization = match organization {
        Some(org) => Some(org),
        None if policy.scope() == AllowedTargetScope::AllExternalUsers => {
            Some(propose(txn, &domain, actor)?)
        }
        None => None,
    };
    let matched = ExternalRequestor {
        display_name: if external.display_name.trim().is_empty() {
            email.chars().take(MAX_NAME).collect()
        } else {
            external.display_name.clone()
        },
        email,
        tenant_id: external.tenant_id.clone(),
        connected_organization_id: organization
            .as_ref()
            .map(|o| o.id.clone())
            .unwrap_or_default(),
    };
    let subject = Subject {
        user: guest(id, &matched),
        in_directory: false,
        organization,
        ..Default::default()
    };
    Ok((subject, Some(matched)))
}

/// The guest user a matched external requestor is (and becomes in the
/// directory once their request is delivered).
pub fn guest(id: &str, matched: &ExternalRequestor) -> User {
    User {
        id: id.to_string(),
        display_name: matched.display_name.clone(),
        email: matched.email.clone(),
        kind: UserKind::Guest as i32,
        state: UserState::Active as i32,
        connected_organization_id: matched.connected_organization_id.clone(),
        ..Default::default()
    }
}

/// A matched external requestor not (yet) in the directory, as decisions
/// see them.
pub fn subject_of(
    view: &(impl ReadView + ?Sized),
    id: &str,
    matched: &ExternalRequestor,
) -> Result<Subject> {
    let organization = match matched.connected_organization_id.as_str() {
        "" => None,
        org => records::load::<ConnectedOrganization>(view, org)?,
    };
    Ok(Subject {
        user: guest(id, matched),
        in_directory: false,
        organization,
        ..Default::default()
    })
}

fn match_organization(
    txn: &dyn Txn,
    tenant: &str,
    domain: &str,
) -> Result<Option<ConnectedOrganization>> {
    let mut owner = None;
    if !tenant.is_empty() {
        owner =
            records::unique_owner::<ConnectedOrganization>(txn, ORGANIZATION_BY_TENANT, tenant)?;
    }
    if owner.is_none() {
        owner =
            records::unique_owner::<ConnectedOrganization>(txn, ORGANIZATION_BY_DOMAIN, domain)?;
    }
    match owner {
        Some(id) => Ok(records::load(txn, &id)?),
        None => Ok(None),
    }
}

/// Creates the PROPOSED organization for an unknown domain.
fn propose(txn: &mut dyn Txn, domain: &str, actor: &Actor) -> Result<ConnectedOrganization> {
    let mut organization = ConnectedOrganization {
        id: new_id(),
        display_name: domain.to_string(),
        description: "Proposed for an external requestor of an unknown domain.".into(),
        identity_sources: vec![IdentitySource {
            source: Some(identity_source::Source::DomainName(domain.to_string())),
            display_name: domain.to_string(),
        }],
        state: ConnectedOrganizationState::Proposed as i32,
        ..Default::default()
    };
    stamp(&mut organization, None, actor, txn.revision());
    records::save(txn, None, &organization)?;
    let draft = Draft::new(ConnectedOrganization::KIND, Verb::Created, &organization.id)
        .outcome(organization.state().as_str_name())
        .detail("domain", domain);
    audit::append(txn, actor, draft)?;
    tracing::info!(domain, id = %organization.id, "proposed a connected organization");
    Ok(organization)
}
