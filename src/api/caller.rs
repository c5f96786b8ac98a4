//! Who is calling. An interceptor turns request metadata into a
//! [`Principal`] that every handler reads from the request extensions:
//! a bearer JWT (see [`super::jwt`]), or, only when the server runs with
//! `--dev-auth` on a loopback address, the development header naming the
//! user. Health and reflection are served without this interceptor.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::AuthSettings;
use crate::domain::validate::{is_reserved_id, is_valid_id, reserved_id_message};
use crate::policy::admin::GLOBAL_ADMIN;

use super::jwt::JwtVerifier;

/// Metadata key naming the calling user in development mode.
pub const DEV_USER_HEADER: &str = "x-entitlements-user";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    /// Roles granted by configuration (bootstrap global admins, service
    /// principal roles), on top of those stored as role assignments.
    pub configured_roles: Vec<String>,
}

/// Who is special, from configuration.
#[derive(Debug, Default)]
struct Identities {
    services: HashMap<String, Vec<String>>,
    global_admins: Vec<String>,
}

impl Identities {
    fn principal(&self, id: String) -> Principal {
        let mut configured_roles = self.services.get(&id).cloned().unwrap_or_default();
        if self.global_admins.contains(&id) {
            configured_roles.push(GLOBAL_ADMIN.to_string());
        }
        Principal {
            id,
            configured_roles,
        }
    }
}

/// Where the interceptor tells who called to whoever watches the call from
/// outside the services (the server's per-call log line), which sees the
/// request before the interceptor and the response after it.
#[derive(Debug, Clone, Default)]
pub struct CallerSeen(Arc<OnceLock<String>>);

impl CallerSeen {
    /// The authenticated caller, once known.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

#[derive(Clone)]
pub struct Authenticator {
    jwt: Option<Arc<JwtVerifier>>,
    dev_header: bool,
    identities: Arc<Identities>,
}

impl Authenticator {
    /// Refuses configured identities that take an id reserved for the
    /// service itself.
    pub fn new(
        auth: &AuthSettings,
        jwt: Option<JwtVerifier>,
        dev_header: bool,
    ) -> anyhow::Result<Self> {
        let configured = auth
            .service_principals
            .iter()
            .map(|s| ("auth.service_principals", &s.id))
            .chain(
                auth.global_admins
                    .iter()
                    .map(|id| ("auth.global_admins", id)),
            );
        for (setting, id) in configured {
            anyhow::ensure!(
                !is_reserved_id(id),
                "{setting}: {}",
                reserved_id_message(id)
            );
        }
        let identities = Identities {
            services: auth
                .service_principals
                .iter()
                .map(|s| (s.id.clone(), s.roles.clone()))
                .collect(),
            global_admins: auth.global_admins.clone(),
        };
        Ok(Self {
            jwt: jwt.map(Arc::new),
            dev_header,
            identities: Arc::new(identities),
        })
    }

    fn subject(&self, metadata: &MetadataMap) -> Result<String, Status> {
        if let Some(value) = metadata.get("authorization") {
            let value = value
                .to_str()
                .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
            let token = bearer_token(value)
                .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <JWT>\""))?;
            let verifier = self.jwt.as_ref().ok_or_else(|| {
                Status::unauthenticated("bearer tokens are not configured on this server")
            })?;
            return verifier
                .verify(token.trim())
                .map_err(|why| Status::unauthenticated(format!("invalid token: {why}")));
        }
        if self.dev_header
            && let Some(value) = metadata.get(DEV_USER_HEADER)
        {
            return value
                .to_str()
                .map(str::to_string)
                .map_err(|_| Status::unauthenticated(format!("{DEV_USER_HEADER} is not text")));
        }
        let also = if self.dev_header {
            format!(" or the {DEV_USER_HEADER} header")
        } else {
            String::new()
        };
        Err(Status::unauthenticated(format!(
            "missing credentials: send \"authorization: Bearer <JWT>\"{also}"
        )))
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let id = self.subject(request.metadata())?;
        if !is_valid_id(&id) {
            return Err(Status::unauthenticated(
                "the caller's id is not a valid user id",
            ));
        }
        if is_reserved_id(&id) {
            return Err(Status::unauthenticated(format!(
                "the caller's id {}",
                reserved_id_message(&id)
            )));
        }
        if let Some(seen) = request.extensions().get::<CallerSeen>() {
            let _ = seen.0.set(id.clone());
        }
        let principal = self.identities.principal(id);
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// The token of an `authorization` value of the Bearer scheme, whose name
/// is case-insensitive (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// The principal the interceptor attached to `request`.
pub fn principal<T>(request: &Request<T>) -> Result<&Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
