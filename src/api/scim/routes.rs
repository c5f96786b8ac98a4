//! The SCIM endpoints. Each authenticates the bearer token as the gRPC
//! API does, authorizes as the Directory RPC it acts as (so the same
//! roles allow the same things), and writes through the same directory
//! functions, in one transaction with its audit events.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Interceptor;

use crate::domain::crud::{self, CreateArgs};
use crate::domain::directory::{self, Member, USER_NAME};
use crate::error::Error;
use crate::observe::request_id;
use crate::pb::{Group, User, UserState};
use crate::policy::admin::Scope;
use crate::shared::actor::Actor;
use crate::store::records::{self, Source};
use crate::store::write;

use super::super::App;
use super::super::caller::Authenticator;
use super::super::rpc::Rpc;
use super::errors::{ScimError, ScimResult};
use super::filter::member;
use super::filter::{Filter, equality, parse_filter};
use super::patch;
use super::projection::Projection;
use super::resources::{
    GROUP_FIELDS, USER_FIELDS, group_from_json, group_json, require_schema, resolve_members,
    user_from_json, user_json, version,
};
use super::urns::{CONTENT_TYPE, GROUP_SCHEMA, LIST_SCHEMA, SEARCH_SCHEMA, USER_SCHEMA};

/// Where the endpoints live on the listener.
pub const PREFIX: &str = "/scim/v2";
/// The most resources one page lists (`count` above it is cut to it).
pub const MAX_COUNT: usize = 1000;
const DEFAULT_COUNT: usize = 100;
/// How often a write without `If-Match` is retried when the record
/// changed between reading and writing it.
const RETRIES: usize = 3;

#[derive(Clone)]
pub struct Scim {
    pub app: App,
    pub auth: Authenticator,
}

/// The base URL of the endpoints as the client reached them, for
/// `meta.location` and references.
pub struct Base(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .unwrap_or("localhost");
        Ok(Self(format!("http://{host}{PREFIX}")))
    }
}

/// A SCIM JSON response, with the resource's version as its ETag.
pub struct ScimJson {
    status: StatusCode,
    body: Value,
    etag: Option<String>,
    location: Option<String>,
}

impl ScimJson {
    pub fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            etag: None,
            location: None,
        }
    }

    /// A single resource: its version is the ETag.
    fn resource(body: Value, etag: &str) -> Self {
        Self {
            etag: Some(version(etag)),
            ..Self::ok(body)
        }
    }

    fn project(mut self, projection: &Projection) -> Self {
        self.body = projection.apply(self.body);
        self
    }

    fn created(mut self) -> Self {
        self.status = StatusCode::CREATED;
        self.location = self.body["meta"]["location"].as_str().map(str::to_string);
        self
    }
}

impl IntoResponse for ScimJson {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        for (name, value) in [(header::ETAG, self.etag), (header::LOCATION, self.location)] {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(name, value);
            }
        }
        response
    }
}

impl Scim {
    /// The caller, authenticated by the gRPC API's rules, if they may do
    /// what `rpc` does.
    fn actor(&self, headers: &HeaderMap, rpc: Rpc) -> ScimResult<Actor> {
        let mut metadata = MetadataMap::from_headers(headers.clone());
        let sent = metadata
            .get(request_id::HEADER)
            .and_then(|value| value.to_str().ok());
        let id = request_id::of_call(sent);
        if let Ok(value) = MetadataValue::try_from(id.as_str()) {
            metadata.insert(request_id::HEADER, value);
        }
        let request = tonic::Request::from_parts(metadata, tonic::Extensions::default(), ());
        let request = self.auth.clone().call(request)?;
        Ok(self.app.authorized_as(rpc, &request, Scope::Tenant)?)
    }

    /// A user that exists and is not deleted; a malformed id is as
    /// missing as an unknown one.
    fn present_user(&self, id: &str) -> ScimResult<User> {
        match crud::get::<User>(self.app.store(), id) {
            Ok(user) if user.state != UserState::Deleted as i32 => Ok(user),
            Ok(_) | Err(Error::NotFound { .. } | Error::InvalidArgument { .. }) => {
                Err(ScimError::not_found("User", id))
            }
            Err(error) => Err(error.into()),
        }
    }

    fn present_group(&self, id: &str) -> ScimResult<Group> {
        match crud::get::<Group>(self.app.store(), id) {
            Ok(group) => Ok(group),
            Err(Error::NotFound { .. } | Error::InvalidArgument { .. }) => {
                Err(ScimError::not_found("Group", id))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Applies `change` to the stored user and writes it; without
    /// `If-Match`, a change made meanwhile is read again and retried.
    async fn update_user(
        &self,
        actor: Actor,
        id: &str,
        if_match: Option<String>,
        change: impl Fn(&User) -> ScimResult<User>,
    ) -> ScimResult<User> {
        let mut attempt = 0;
        loop {
            let old = self.present_user(id)?;
            check_version(if_match.as_deref(), &old.etag)?;
            let new = change(&old)?;
            let mask = prost_types::FieldMask {
                paths: USER_FIELDS.iter().map(|f| f.to_string()).collect(),
            };
            match crud::update(self.app.store(), actor.clone(), Some(new), Some(mask)).await {
                Err(Error::Aborted(_)) if if_match.is_none() && attempt < RETRIES => attempt += 1,
                result => return result.map_err(|e| ScimError::from(e).into_bad_reference()),
            }
        }
    }

    /// Applies `change` to the stored group and its direct members and
    /// writes both in one transaction; retried as [`Scim::update_user`].
    async fn update_group(
        &self,
        headers: &HeaderMap,
        id: &str,
        change: impl Fn(&Group) -> ScimResult<(Group, Vec<super::resources::MemberRef>)>,
    ) -> ScimResult<Group> {
        let actor = self.actor(headers, Rpc::UpdateGroup)?;
        let if_match = if_match(headers);
        let mut attempt = 0;
        loop {
            let old = self.present_group(id)?;
            check_version(if_match.as_deref(), &old.etag)?;
            let (new, refs) = change(&old)?;
            let members = resolve_members(self.app.store(), &refs)?;
            let current = directory::direct_members(self.app.store(), id)?;
            if members.iter().any(|m| !current.contains(m)) {
                self.actor(headers, Rpc::AddGroupMember)?;
            }
            if current.iter().any(|m| !members.contains(m)) {
                self.actor(headers, Rpc::RemoveGroupMember)?;
            }
            let writer = actor.clone();
            let written = write(self.app.store(), move |txn| {
                let group = crud::update_in(txn, &writer, &new, &GROUP_FIELDS, |_| Ok(()))?;
                directory::set_members(txn, &group.id, &members, &writer)?;
                Ok::<_, Error>(group)
            })
            .await;
            match written {
                Err(Error::Aborted(_)) if if_match.is_none() && attempt < RETRIES => attempt += 1,
                result => {
                    return result
                        .map(|committed| committed.value)
                        .map_err(|e| ScimError::from(e).into_bad_reference());
                }
            }
        }
    }

    fn user_response(&self, base: &Base, user: &User) -> ScimResult<ScimJson> {
        Ok(ScimJson::resource(
            user_json(self.app.store(), &base.0, user)?,
            &user.etag,
        ))
    }

    fn group_response(&self, base: &Base, group: &Group) -> ScimResult<ScimJson> {
        Ok(ScimJson::resource(
            group_json(self.app.store(), &base.0, group)?,
            &group.etag,
        ))
    }
}

/// The version `If-Match` asks for; None without one or for `*`.
fn if_match(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::IF_MATCH)?.to_str().ok()?.trim();
    let value = value.strip_prefix("W/").unwrap_or(value).trim_matches('"');
    (value != "*").then(|| value.to_string())
}

/// 412 when `If-Match` names another version than the stored one.
fn check_version(wanted: Option<&str>, etag: &str) -> ScimResult<()> {
    match wanted {
        Some(wanted) if wanted != etag => Err(ScimError::version_mismatch(format!(
            "If-Match names version {wanted:?}, the resource is at {:?}",
            version(etag)
        ))),
        _ => Ok(()),
    }
}

fn json_body(body: &Bytes) -> ScimResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not JSON: {e}")))
}

/// `filter`, `startIndex`, `count`, `attributes` and
/// `excludedAttributes`, by case-insensitive name.
struct ListParams {
    filter: Option<Filter>,
    start_index: usize,
    count: usize,
    projection: Projection,
}

/// The value of query parameter `name`, whatever its letter case.
fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn projection(params: &[(String, String)]) -> ScimResult<Projection> {
    Projection::parse(
        param(params, "attributes"),
        param(params, "excludedAttributes"),
    )
}

impl ListParams {
    /// From a SearchRequest body (POST `.search`): the same parameters as
    /// JSON members, lists of attributes as arrays.
    fn from_search(body: &Value) -> ScimResult<Self> {
        require_schema(body, SEARCH_SCHEMA)?;
        let mut params = Vec::new();
        for name in [
            "filter",
            "startIndex",
            "count",
            "attributes",
            "excludedAttributes",
        ] {
            let value = match member(body, name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(text)) => text.clone(),
                Some(Value::Number(number)) => number.to_string(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| ScimError::invalid_value(format!("{name} must list strings")))?
                    .join(","),
                Some(other) => {
                    return Err(ScimError::invalid_value(format!(
                        "{name} cannot be {other}"
                    )));
                }
            };
            params.push((name.to_string(), value));
        }
        Self::parse(&params)
    }

    fn parse(params: &[(String, String)]) -> ScimResult<Self> {
        let get = |name: &str| param(params, name);
        let number = |name: &str, default: i64| -> ScimResult<i64> {
            get(name).map_or(Ok(default), |value| {
                value
                    .trim()
                    .parse()
                    .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")))
            })
        };
        Ok(Self {
            filter: get("filter").map(parse_filter).transpose()?,
            // RFC 7644 §3.4.2.4: below 1 means 1; a negative count means 0.
            start_index: number("startIndex", 1)?.max(1) as usize,
            count: (number("count", DEFAULT_COUNT as i64)?.max(0) as usize).min(MAX_COUNT),
            projection: projection(params)?,
        })
    }

    fn page(&self, matches: Vec<Value>) -> ScimJson {
        let total = matches.len();
        let page: Vec<Value> = matches
            .into_iter()
            .skip(self.start_index - 1)
            .take(self.count)
            .map(|resource| self.projection.apply(resource))
            .collect();
        ScimJson::ok(json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": self.start_index,
            "itemsPerPage": page.len(),
            "Resources": page,
        }))
    }
}

pub async fn create_user(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> ScimResult<ScimJson> {
    let actor = scim.actor(&headers, Rpc::CreateUser)?;
    let body = json_body(&body)?;
    require_schema(&body, USER_SCHEMA)?;
    let args = CreateArgs {
        entity: Some(user_from_json(&body, None)?),
        chosen_id: String::new(),
        request_id: String::new(),
        method: Rpc::CreateUser.name(),
    };
    let user = crud::create(scim.app.store(), actor, args)
        .await
        .map_err(|e| ScimError::from(e).into_bad_reference())?;
    Ok(scim.user_response(&base, &user)?.created())
}

pub async fn get_user(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> ScimResult<ScimJson> {
    scim.actor(&headers, Rpc::GetUser)?;
    let user = scim.present_user(&id)?;
    Ok(scim
        .user_response(&base, &user)?
        .project(&projection(&params)?))
}

/// The users `filter` selects (every present user without one), as SCIM
/// shows them.
fn matching_users(scim: &Scim, base: &Base, filter: Option<&Filter>) -> ScimResult<Vec<Value>> {
    let store = scim.app.store();
    let present = |user: &User| user.state != UserState::Deleted as i32;
    // `userName eq` (how identity systems look a user up before creating
    // them) reads the uniqueness claim instead of every user; a user
    // without a userName shows their id as one.
    let users: Vec<User> = match filter.and_then(|f| equality(f, "userName")) {
        Some(name) => {
            let owner = records::unique_owner::<User>(store, USER_NAME, &name.to_lowercase())
                .map_err(Error::from)?;
            let mut users = Vec::new();
            for id in owner.into_iter().chain([name.to_string()]) {
                if let Some(user) = records::load::<User>(store, &id).map_err(Error::from)?
                    && present(&user)
                    && !users.iter().any(|u: &User| u.id == user.id)
                {
                    users.push(user);
                }
            }
            users
        }
        None => crud::list(store, Source::All, present, usize::MAX, None)?.items,
    };
    let mut matches = Vec::new();
    for user in &users {
        let resource = user_json(store, &base.0, user)?;
        if filter.is_none_or(|f| f.matches(&resource)) {
            matches.push(resource);
        }
    }
    Ok(matches)
}

/// The groups `filter` selects, as SCIM shows them.
fn matching_groups(scim: &Scim, base: &Base, filter: Option<&Filter>) -> ScimResult<Vec<Value>> {
    let store = scim.app.store();
    let groups: Vec<Group> = match filter.and_then(|f| equality(f, "id")) {
        Some(id) => records::load::<Group>(store, id)
            .map_err(Error::from)?
            .into_iter()
            .collect(),
        None => crud::list(store, Source::All, |_: &Group| true, usize::MAX, None)?.items,
    };
    let mut matches = Vec::new();
    for group in &groups {
        let resource = group_json(store, &base.0, group)?;
        if filter.is_none_or(|f| f.matches(&resource)) {
            matches.push(resource);
        }
    }
    Ok(matches)
}

/// What a listing or a search covers.
#[derive(Clone, Copy)]
enum Listing {
    Users,
    Groups,
    /// POST `/.search`: users, then groups.
    Both,
}

impl Scim {
    /// A page of what `listing` covers and `params` (read once the caller
    /// is authorized) select.
    fn list(
        &self,
        base: &Base,
        headers: &HeaderMap,
        listing: Listing,
        params: impl FnOnce() -> ScimResult<ListParams>,
    ) -> ScimResult<ScimJson> {
        let (users, groups) = match listing {
            Listing::Users => (true, false),
            Listing::Groups => (false, true),
            Listing::Both => (true, true),
        };
        if users {
            self.actor(headers, Rpc::ListUsers)?;
        }
        if groups {
            self.actor(headers, Rpc::ListGroups)?;
        }
        let params = params()?;
        let filter = params.filter.as_ref();
        let mut matches = Vec::new();
        if users {
            matches.extend(matching_users(self, base, filter)?);
        }
        if groups {
            matches.extend(matching_groups(self, base, filter)?);
        }
        Ok(params.page(matches))
    }
}

pub async fn list_users(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> ScimResult<ScimJson> {
    scim.list(&base, &headers, Listing::Users, || {
        ListParams::parse(&params)
    })
}

pub async fn list_groups(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> ScimResult<ScimJson> {
    scim.list(&base, &headers, Listing::Groups, || {
        ListParams::parse(&params)
    })
}

/// POST `.search` under `/Users`, `/Groups` or the root.
async fn search(
    scim: Scim,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
    listing: Listing,
) -> ScimResult<ScimJson> {
    scim.list(&base, &headers, listing, || {
        ListParams::from_search(&json_body(&body)?)
    })
}

pub async fn search_users(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> ScimResult<ScimJson> {
    search(scim, base, headers, body, Listing::Users).await
}

pub async fn search_groups(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> ScimResult<ScimJson> {
    search(scim, base, headers, body, Listing::Groups).await
}

pub async fn search_all(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> ScimResult<ScimJson> {
    search(scim, base, headers, body, Listing::Both).await
}

pub async fn replace_user(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult<ScimJson> {
    let actor = scim.actor(&headers, Rpc::UpdateUser)?;
    let body = json_body(&body)?;
    require_schema(&body, USER_SCHEMA)?;
    let user = scim
        .update_user(actor, &id, if_match(&headers), |old| {
            user_from_json(&body, Some(old))
        })
        .await?;
    scim.user_response(&base, &user)
}

pub async fn patch_user(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult<ScimJson> {
    let actor = scim.actor(&headers, Rpc::UpdateUser)?;
    let message = json_body(&body)?;
    let store = scim.app.store();
    let user = scim
        .update_user(actor, &id, if_match(&headers), |old| {
            let mut resource = user_json(store, &base.0, old)?;
            patch::apply(&mut resource, &message)?;
            user_from_json(&resource, Some(old))
        })
        .await?;
    scim.user_response(&base, &user)
}

/// As DeleteUser: the user turns DELETED, leaves their groups, their
/// assignments end and their open requests are canceled.
pub async fn delete_user(
    State(scim): State<Scim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult<StatusCode> {
    let actor = scim.actor(&headers, Rpc::DeleteUser)?;
    let old = scim.present_user(&id)?;
    let etag = if_match(&headers).unwrap_or_default();
    check_version(
        Some(&etag).filter(|e| !e.is_empty()).map(String::as_str),
        &old.etag,
    )?;
    write(scim.app.store(), move |txn| {
        crate::workflow::lifecycle::delete_user(txn, &id, &etag, &actor)
    })
    .await
    .map_err(ScimError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_group(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> ScimResult<ScimJson> {
    let actor = scim.actor(&headers, Rpc::CreateGroup)?;
    let body = json_body(&body)?;
    require_schema(&body, GROUP_SCHEMA)?;
    let (group, refs) = group_from_json(&body, None)?;
    let members: Vec<Member> = resolve_members(scim.app.store(), &refs)?;
    if !members.is_empty() {
        scim.actor(&headers, Rpc::AddGroupMember)?;
    }
    let args = CreateArgs {
        entity: Some(group),
        chosen_id: String::new(),
        request_id: String::new(),
        method: Rpc::CreateGroup.name(),
    };
    let writer = actor.clone();
    let group = crud::create_checked(scim.app.store(), actor, args, move |txn, group: &Group| {
        directory::set_members(txn, &group.id, &members, &writer)
    })
    .await
    .map_err(|e| ScimError::from(e).into_bad_reference())?;
    Ok(scim.group_response(&base, &group)?.created())
}

pub async fn get_group(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> ScimResult<ScimJson> {
    scim.actor(&headers, Rpc::GetGroup)?;
    let group = scim.present_group(&id)?;
    Ok(scim
        .group_response(&base, &group)?
        .project(&projection(&params)?))
}

pub async fn replace_group(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult<ScimJson> {
    let body = json_body(&body)?;
    require_schema(&body, GROUP_SCHEMA)?;
    let group = scim
        .update_group(&headers, &id, |old| group_from_json(&body, Some(old)))
        .await?;
    scim.group_response(&base, &group)
}

pub async fn patch_group(
    State(scim): State<Scim>,
    base: Base,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ScimResult<ScimJson> {
    let message = json_body(&body)?;
    let store = scim.app.store();
    let group = scim
        .update_group(&headers, &id, |old| {
            let mut resource = group_json(store, &base.0, old)?;
            patch::apply(&mut resource, &message)?;
            group_from_json(&resource, Some(old))
        })
        .await?;
    scim.group_response(&base, &group)
}

pub async fn delete_group(
    State(scim): State<Scim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ScimResult<StatusCode> {
    let actor = scim.actor(&headers, Rpc::DeleteGroup)?;
    let old = scim.present_group(&id)?;
    let etag = if_match(&headers).unwrap_or_default();
    check_version(
        Some(&etag).filter(|e| !e.is_empty()).map(String::as_str),
        &old.etag,
    )?;
    crud::delete::<Group>(scim.app.store(), actor, id, etag).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn not_supported() -> ScimError {
    ScimError::new(
        StatusCode::NOT_IMPLEMENTED,
        None,
        "not supported by this service provider",
    )
}

pub async fn no_such_endpoint() -> ScimError {
    ScimError::new(StatusCode::NOT_FOUND, None, "no such SCIM endpoint")
}
