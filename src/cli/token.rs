//! `entitlements token`: mints an HS256 bearer token for development and
//! testing, signed with the secret file the server verifies with.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::Serialize;

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The HS256 secret file the server verifies with.
    #[arg(long)]
    secret_file: PathBuf,
    /// The caller the token names (its `sub`).
    #[arg(long)]
    subject: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_seconds: u64,
    #[arg(long)]
    issuer: Option<String>,
    #[arg(long)]
    audience: Option<String>,
}

/// What a development token says.
#[derive(Debug, Serialize)]
struct TokenClaims {
    sub: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

/// Prints a token for `args`.
pub fn mint(args: TokenArgs) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = TokenClaims {
        sub: args.subject,
        exp: now + args.ttl_seconds,
        nbf: now,
        iat: now,
        iss: args.issuer,
        aud: args.audience,
    };
    println!("{}", mint_hs256(&args.secret_file, &claims)?);
    Ok(())
}

/// Signs `claims` with an HS256 secret file (its bytes, surrounding
/// whitespace trimmed, as the server reads it).
fn mint_hs256(secret_file: &Path, claims: &TokenClaims) -> anyhow::Result<String> {
    let secret =
        std::fs::read(secret_file).with_context(|| format!("reading {}", secret_file.display()))?;
    Ok(encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.trim_ascii()),
    )?)
}
