//! Who is calling. An interceptor turns request metadata into a
//! [`Principal`] that every handler reads from the request extensions.
//!
//! For now the only credential is a development header naming the user,
//! accepted only when the server listens on a loopback address.

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::domain::validate::is_valid_id;

/// Metadata key naming the calling user in development mode.
pub const DEV_USER_HEADER: &str = "x-entitlements-user";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    accept_dev_header: bool,
}

impl Authenticator {
    /// `loopback_only_listener`: whether the server listens on loopback only;
    /// the development header is honoured only then.
    pub fn new(loopback_only_listener: bool) -> Self {
        Self {
            accept_dev_header: loopback_only_listener,
        }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !self.accept_dev_header {
            return Err(Status::unauthenticated(
                "no credentials are accepted: the development header works only on a loopback listener",
            ));
        }
        let value = request
            .metadata()
            .get(DEV_USER_HEADER)
            .ok_or_else(|| Status::unauthenticated(format!("missing {DEV_USER_HEADER} header")))?;
        let id = value
            .to_str()
            .ok()
            .filter(|id| is_valid_id(id))
            .ok_or_else(|| {
                Status::unauthenticated(format!("{DEV_USER_HEADER} is not a valid user id"))
            })?
            .to_string();
        request.extensions_mut().insert(Principal { id });
        Ok(request)
    }
}

/// The principal the interceptor attached to `request`.
pub fn principal<T>(request: &Request<T>) -> Result<&Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}
