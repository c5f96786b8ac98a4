//! What every client command needs to call a running server: its address,
//! TLS, and the caller's credentials.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::api::caller::DEV_USER_HEADER;

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The server, e.g. http://127.0.0.1:50051 (https:// for TLS)
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// A bearer token [env: ENTITLEMENTS_TOKEN]
    #[arg(long, env = "ENTITLEMENTS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With a --dev-auth server: the caller to act as
    #[arg(long, conflicts_with = "token")]
    pub dev_user: Option<String>,
    /// CA certificate (PEM) to trust; required for https://
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present, for a server that requires
    /// mutual TLS; needs --client-key
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl ClientArgs {
    /// A channel to the server.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let mut endpoint = Channel::from_shared(self.server.clone())
            .with_context(|| format!("{:?} is not a server address", self.server))?;
        if self.server.starts_with("https://") {
            // The binary carries no system roots: the CA must be named.
            let ca = self
                .ca_cert
                .as_ref()
                .context("an https:// server needs --ca-cert (the CA certificate to trust)")?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint.tls_config(tls)?;
        } else if self.client_cert.is_some() {
            anyhow::bail!("--client-cert needs an https:// server");
        }
        endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.server))
    }

    /// `message` as a request carrying the caller's credentials.
    pub fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            let value: MetadataValue<_> = format!("Bearer {token}").parse()?;
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(user) = &self.dev_user {
            request
                .metadata_mut()
                .insert(DEV_USER_HEADER, user.parse()?);
        }
        Ok(request)
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
