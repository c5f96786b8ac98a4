//! Bearer-token verification. Keys come from configuration (an HS256
//! secret, an RS256/ES256 public key, or a JWKS file) and are loaded once;
//! every token must carry a valid signature by one of them with an allowed
//! algorithm (never `none`), be within `exp`/`nbf`, and match the
//! configured issuer and audience. The `sub` claim names the caller.

use std::path::Path;

use anyhow::{Context, bail};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::config::AuthSettings;

struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

pub struct JwtVerifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    leeway: u64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

impl JwtVerifier {
    /// The verifier the settings describe, or None when no key is set.
    pub fn from_settings(auth: &AuthSettings) -> anyhow::Result<Option<Self>> {
        let mut keys = Vec::new();
        if let Some(path) = &auth.jwt_hs256_secret_file {
            let secret = read(path)?;
            let secret = secret.trim_ascii();
            if secret.len() < 32 {
                bail!(
                    "{}: an HS256 secret needs at least 32 bytes",
                    path.display()
                );
            }
            keys.push(Key {
                id: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            });
        }
        if let Some(path) = &auth.jwt_public_key_file {
            let pem = read(path)?;
            let key = match (
                DecodingKey::from_rsa_pem(&pem),
                DecodingKey::from_ec_pem(&pem),
            ) {
                (Ok(key), _) => (Algorithm::RS256, key),
                (_, Ok(key)) => (Algorithm::ES256, key),
                _ => bail!("{}: not an RSA or EC public key in PEM", path.display()),
            };
            keys.push(Key {
                id: None,
                algorithm: key.0,
                key: key.1,
            });
        }
        if let Some(path) = &auth.jwt_jwks_file {
            let set: JwkSet = serde_json::from_slice(&read(path)?)
                .with_context(|| format!("{}: not a JWKS document", path.display()))?;
            for jwk in &set.keys {
                let Some(algorithm) = jwk.common.key_algorithm else {
                    bail!("{}: every key needs an \"alg\"", path.display());
                };
                let algorithm: Algorithm = algorithm
                    .to_string()
                    .parse()
                    .with_context(|| format!("{}: unsupported alg {algorithm}", path.display()))?;
                keys.push(Key {
                    id: jwk.common.key_id.clone(),
                    algorithm,
                    key: DecodingKey::from_jwk(jwk)?,
                });
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            keys,
            issuer: auth.jwt_issuer.clone(),
            audience: auth.jwt_audience.clone(),
            leeway: auth.jwt_leeway_seconds,
        }))
    }

    /// The subject of a valid token; the error says why it is not valid.
    pub fn verify(&self, token: &str) -> Result<String, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let candidates = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| header.kid.is_none() || k.id.is_none() || k.id == header.kid);
        let mut last_error = format!("no key accepts algorithm {:?}", header.alg);
        for key in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.validate_nbf = true;
            validation.leeway = self.leeway;
            // A configured issuer or audience must be present, not merely
            // match when present.
            let mut required = vec!["exp", "sub"];
            if let Some(issuer) = &self.issuer {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            match &self.audience {
                Some(audience) => {
                    validation.set_audience(&[audience]);
                    required.push("aud");
                }
                None => validation.validate_aud = false,
            }
            validation.set_required_spec_claims(&required);
            match decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims.sub),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(last_error)
    }
}
