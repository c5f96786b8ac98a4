//! Authentication over real gRPC: bearer JWTs (an HS256 secret, an RS256 or
//! ES256 public key in PEM, a JWKS file) checked for signature, algorithm,
//! `exp`, `nbf`, `iss`, `aud` and `sub`; the development header only with
//! --dev-auth; the rights of configured principals; TLS and mutual TLS; and
//! the configurations the server refuses to start with.
//!
//! Tokens are minted here with jsonwebtoken against the real clock (the
//! server checks `exp` and `nbf` against the system time, not the harness's
//! manual clock). Keys and certificates are generated with rcgen, except the
//! RSA keys: rcgen's ring backend cannot generate RSA keys, so two test-only
//! RSA keys live in `tests/fixtures/` (made with `openssl genpkey`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use entitlements::api::caller::DEV_USER_HEADER;
use entitlements::config::{ServicePrincipal, Settings, TlsSettings};
use entitlements::pb::catalogs_client::CatalogsClient;
use entitlements::pb::directory_client::DirectoryClient;
use entitlements::pb::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ISSUER: &str = "https://login.example.test";
const AUDIENCE: &str = "entitlements-api";
/// The server's HS256 secret (at least 32 bytes).
const SECRET: &[u8] = b"test-secret-0123456789abcdef-0123456789";
/// Another secret of the same length.
const OTHER_SECRET: &[u8] = b"evil-secret-0123456789abcdef-0123456789";
/// Test-only RSA keys (PKCS#8 PEM): the server trusts the signer's public key.
const RSA_SIGNER: &str = include_str!("fixtures/jwt-rs256-signer.pem");
const RSA_OTHER: &str = include_str!("fixtures/jwt-rs256-other.pem");

// ------------------------------------------------------------ credentials

/// Metadata sent on every call: any `authorization` value and/or the
/// development header.
#[derive(Clone, Default)]
struct Credentials {
    authorization: Option<String>,
    dev_user: Option<String>,
}

impl Credentials {
    fn none() -> Self {
        Self::default()
    }

    fn authorization(value: &str) -> Self {
        Self {
            authorization: Some(value.to_string()),
            dev_user: None,
        }
    }

    fn bearer(token: &str) -> Self {
        Self::authorization(&format!("Bearer {token}"))
    }

    fn dev_user(user: &str) -> Self {
        Self::none().and_dev_user(user)
    }

    fn and_dev_user(mut self, user: &str) -> Self {
        self.dev_user = Some(user.to_string());
        self
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        if let Some(value) = &self.authorization {
            metadata.insert("authorization", value.parse().expect("ascii authorization"));
        }
        if let Some(user) = &self.dev_user {
            metadata.insert(DEV_USER_HEADER, user.parse().expect("ascii user"));
        }
        Ok(request)
    }
}

type Dir = DirectoryClient<InterceptedService<Channel, Credentials>>;
type Cat = CatalogsClient<InterceptedService<Channel, Credentials>>;

fn directory(channel: Channel, credentials: Credentials) -> Dir {
    DirectoryClient::with_interceptor(channel, credentials)
}

fn catalogs(channel: Channel, credentials: Credentials) -> Cat {
    CatalogsClient::with_interceptor(channel, credentials)
}

async fn list_users(directory: &mut Dir) -> Result<Response<ListUsersResponse>, Status> {
    directory.list_users(ListUsersRequest::default()).await
}

async fn create_group(directory: &mut Dir, id: &str) -> Result<Response<Group>, Status> {
    directory
        .create_group(CreateGroupRequest {
            group: Some(group(&format!("Group {id}"))),
            group_id: id.into(),
            request_id: String::new(),
        })
        .await
}

async fn create_catalog(catalogs: &mut Cat, id: &str) -> Result<Response<Catalog>, Status> {
    catalogs
        .create_catalog(CreateCatalogRequest {
            catalog: Some(catalog(&format!("Catalog {id}"))),
            catalog_id: id.into(),
            request_id: String::new(),
        })
        .await
}

#[track_caller]
fn unauthenticated<T: std::fmt::Debug>(case: &str, result: Result<Response<T>, Status>) {
    match result {
        Ok(response) => panic!("{case}: expected UNAUTHENTICATED, got OK: {response:?}"),
        Err(status) => assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{case}: unexpected status {status:?}"
        ),
    }
}

// ----------------------------------------------------------------- tokens

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims the server accepts: `sub`, the configured `iss` and `aud`, and
/// ten minutes of validity.
fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "nbf": now() - 60,
        "exp": now() + 600,
    })
}

/// `claims` with `key` set to `value`, or removed when `value` is None.
fn with(mut claims: Value, key: &str, value: Option<Value>) -> Value {
    let map = claims.as_object_mut().expect("claims are an object");
    match value {
        Some(value) => map.insert(key.to_string(), value),
        None => map.remove(key),
    };
    claims
}

fn sign(header: Header, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&header, claims, key).expect("sign a token")
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(
        Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(secret),
        claims,
    )
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An unsecured JWT (`alg: none`, empty signature), built by hand.
fn unsigned(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// `token` with its payload replaced by `claims`, keeping the signature.
fn with_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a signed JWT has three parts");
    format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    )
}

fn es256(key: &KeyPair, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_string);
    let key = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("EC private key");
    sign(header, &key, claims)
}

fn rs256(private_pem: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA private key");
    sign(Header::new(Algorithm::RS256), &key, claims)
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key")
}

/// The public JWK of a P-256 key (the raw public key is 0x04 || x || y).
fn ec_jwk(key: &KeyPair, kid: &str) -> Value {
    let raw = key.public_key_raw();
    assert_eq!((raw.len(), raw[0]), (65, 4), "uncompressed P-256 point");
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": b64(&raw[1..33]),
        "y": b64(&raw[33..]),
        "alg": "ES256",
        "use": "sig",
        "kid": kid,
    })
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a key file");
    path
}

/// Verify tokens with `settings`'s keys and the test issuer and audience.
fn expect_issuer_and_audience(settings: &mut Settings) {
    settings.auth.jwt_issuer = Some(ISSUER.into());
    settings.auth.jwt_audience = Some(AUDIENCE.into());
}

/// A server that verifies HS256 tokens signed with [`SECRET`], with the
/// development header trusted (`dev_auth`) or not.
async fn hs256_server(keys: &Path, dev_auth: bool) -> TestServer {
    let secret = write(keys, "hs256.secret", SECRET);
    TestServer::start_with_settings(|settings| {
        settings.dev_auth = dev_auth;
        settings.auth.jwt_hs256_secret_file = Some(secret);
        expect_issuer_and_audience(settings);
    })
    .await
}

// ------------------------------------------------------------ HS256 table

#[tokio::test]
async fn only_valid_bearer_tokens_authenticate() {
    let keys = tempfile::tempdir().unwrap();
    // The harness's write marks use the development header, so it stays on;
    // a call that presents an authorization header is decided by it alone
    // (see the last case).
    let server = hs256_server(keys.path(), true).await;

    let valid = hs256(SECRET, &claims(ADMIN));
    let mut admin = directory(server.channel(), Credentials::bearer(&valid));
    list_users(&mut admin)
        .await
        .expect("a valid token can read");
    let created = create_group(&mut admin, "by-token")
        .await
        .expect("a valid token can write")
        .into_inner();
    assert_eq!(
        created.info.expect("record info").created_by,
        ADMIN,
        "the token's subject is the caller"
    );
    // Without `nbf` or `iat` a token is still valid.
    let minimal = with(with(claims(ADMIN), "nbf", None), "iat", None);
    list_users(&mut directory(
        server.channel(),
        Credentials::bearer(&hs256(SECRET, &minimal)),
    ))
    .await
    .expect("a token without nbf and iat");

    let mark = server.write_mark().await;
    let bearer = |claims: Value| Credentials::bearer(&hs256(SECRET, &claims));
    let cases = [
        (
            "signed with another secret",
            Credentials::bearer(&hs256(OTHER_SECRET, &claims(ADMIN))),
        ),
        (
            "payload changed after signing",
            Credentials::bearer(&with_payload(&valid, &claims("someone-else"))),
        ),
        (
            "expired",
            bearer(with(claims(ADMIN), "exp", Some(json!(now() - 600)))),
        ),
        (
            "not yet valid",
            bearer(with(
                with(claims(ADMIN), "nbf", Some(json!(now() + 600))),
                "exp",
                Some(json!(now() + 1200)),
            )),
        ),
        ("without exp", bearer(with(claims(ADMIN), "exp", None))),
        (
            "wrong issuer",
            bearer(with(
                claims(ADMIN),
                "iss",
                Some(json!("https://evil.example.test")),
            )),
        ),
        ("without iss", bearer(with(claims(ADMIN), "iss", None))),
        (
            "wrong audience",
            bearer(with(claims(ADMIN), "aud", Some(json!("another-api")))),
        ),
        ("without aud", bearer(with(claims(ADMIN), "aud", None))),
        ("without sub", bearer(with(claims(ADMIN), "sub", None))),
        (
            "subject is not a valid id",
            bearer(claims("not a valid id!")),
        ),
        ("empty subject", bearer(claims(""))),
        ("alg none", Credentials::bearer(&unsigned(&claims(ADMIN)))),
        (
            "alg none with a valid signature attached",
            Credentials::bearer(&format!(
                "{}{}",
                unsigned(&claims(ADMIN)),
                valid.rsplit('.').next().unwrap()
            )),
        ),
        (
            "HS512 with the right secret (algorithm not configured)",
            Credentials::bearer(&sign(
                Header::new(Algorithm::HS512),
                &EncodingKey::from_secret(SECRET),
                &claims(ADMIN),
            )),
        ),
        ("no credentials", Credentials::none()),
        ("garbage", Credentials::authorization("garbage")),
        (
            "Bearer without a token",
            Credentials::authorization("Bearer"),
        ),
        (
            "Bearer with an empty token",
            Credentials::authorization("Bearer "),
        ),
        ("Bearer garbage", Credentials::bearer("not-a-jwt")),
        ("Bearer three garbage parts", Credentials::bearer("a.b.c")),
        (
            "token without the scheme",
            Credentials::authorization(&valid),
        ),
        (
            "Basic credentials",
            Credentials::authorization(&format!("Basic {}", b64(b"admin:password"))),
        ),
        (
            "a bad token beside a valid development header",
            Credentials::bearer(&hs256(OTHER_SECRET, &claims(ADMIN))).and_dev_user(ADMIN),
        ),
    ];
    for (i, (case, credentials)) in cases.into_iter().enumerate() {
        let mut client = directory(server.channel(), credentials);
        unauthenticated(case, list_users(&mut client).await);
        unauthenticated(
            case,
            create_group(&mut client, &format!("denied-{i}")).await,
        );
    }
    server.assert_no_writes_since(mark).await;
}

#[tokio::test]
async fn a_future_nbf_written_as_a_string_is_unauthenticated() {
    let keys = tempfile::tempdir().unwrap();
    let server = hs256_server(keys.path(), false).await;
    let future = now() + 600;
    for (case, nbf) in [
        ("nbf as a string", json!(future.to_string())),
        ("nbf as a number", json!(future)),
    ] {
        let not_yet = with(
            with(claims(ADMIN), "nbf", Some(nbf)),
            "exp",
            Some(json!(now() + 1200)),
        );
        let mut client = directory(
            server.channel(),
            Credentials::bearer(&hs256(SECRET, &not_yet)),
        );
        unauthenticated(case, list_users(&mut client).await);
    }
}

#[tokio::test]
async fn clock_skew_on_exp_and_nbf_is_tolerated_up_to_the_configured_leeway() {
    let keys = tempfile::tempdir().unwrap();
    let token = |exp: i64, nbf: i64| {
        let claims = with(
            with(claims(ADMIN), "exp", Some(json!(exp))),
            "nbf",
            Some(json!(nbf)),
        );
        Credentials::bearer(&hs256(SECRET, &claims))
    };
    let just_expired = token(now() - 20, now() - 600);
    let almost_valid = token(now() + 600, now() + 20);

    // The default leeway is a minute.
    let lenient = hs256_server(keys.path(), false).await;
    for (case, credentials) in [
        ("expired 20 s ago", just_expired.clone()),
        ("valid in 20 s", almost_valid.clone()),
    ] {
        list_users(&mut directory(lenient.channel(), credentials))
            .await
            .unwrap_or_else(|status| panic!("{case}: {status:?}"));
    }
    for (case, credentials) in [
        ("expired 5 min ago", token(now() - 300, now() - 600)),
        ("valid in 5 min", token(now() + 600, now() + 300)),
    ] {
        unauthenticated(
            case,
            list_users(&mut directory(lenient.channel(), credentials)).await,
        );
    }

    let secret = write(keys.path(), "strict.secret", SECRET);
    let strict = TestServer::start_with_settings(|settings| {
        settings.dev_auth = false;
        settings.auth.jwt_hs256_secret_file = Some(secret);
        settings.auth.jwt_leeway_seconds = 0;
        expect_issuer_and_audience(settings);
    })
    .await;
    for (case, credentials) in [
        ("expired 20 s ago, no leeway", just_expired),
        ("valid in 20 s, no leeway", almost_valid),
    ] {
        unauthenticated(
            case,
            list_users(&mut directory(strict.channel(), credentials)).await,
        );
    }
}

#[tokio::test]
async fn issuer_and_audience_are_checked_only_when_configured() {
    let keys = tempfile::tempdir().unwrap();
    let secret = write(keys.path(), "hs256.secret", SECRET);
    let server = TestServer::start_with_settings(|settings| {
        settings.dev_auth = false;
        settings.auth.jwt_hs256_secret_file = Some(secret);
    })
    .await;
    let bare = json!({"sub": ADMIN, "exp": now() + 600});
    let any_issuer = with(
        claims(ADMIN),
        "iss",
        Some(json!("https://anyone.example.test")),
    );
    for (case, claims) in [
        ("only sub and exp", bare.clone()),
        ("any issuer", any_issuer),
    ] {
        let mut client = directory(
            server.channel(),
            Credentials::bearer(&hs256(SECRET, &claims)),
        );
        if let Err(status) = list_users(&mut client).await {
            panic!("{case}: {status:?}");
        }
    }
    let expired = with(bare, "exp", Some(json!(now() - 600)));
    unauthenticated(
        "expired",
        list_users(&mut directory(
            server.channel(),
            Credentials::bearer(&hs256(SECRET, &expired)),
        ))
        .await,
    );
}

#[tokio::test]
async fn without_dev_auth_the_development_header_is_not_trusted() {
    let keys = tempfile::tempdir().unwrap();
    let server = hs256_server(keys.path(), false).await;

    for (case, credentials) in [
        ("development header alone", Credentials::dev_user(ADMIN)),
        ("no credentials", Credentials::none()),
        (
            "bad token and development header",
            Credentials::bearer(&hs256(OTHER_SECRET, &claims(ADMIN))).and_dev_user(ADMIN),
        ),
    ] {
        let mut client = directory(server.channel(), credentials);
        unauthenticated(case, list_users(&mut client).await);
        unauthenticated(case, create_group(&mut client, "from-header").await);
    }

    let token = hs256(SECRET, &claims(ADMIN));
    let mut admin = directory(server.channel(), Credentials::bearer(&token));
    create_group(&mut admin, "from-token")
        .await
        .expect("a valid token can write");
    let groups = admin
        .list_groups(ListGroupsRequest::default())
        .await
        .expect("a valid token can read")
        .into_inner()
        .groups;
    let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
    assert!(ids.contains(&"from-token"), "{ids:?}");
    assert!(!ids.contains(&"from-header"), "{ids:?}");
}

#[tokio::test]
async fn bearer_tokens_are_refused_when_no_key_is_configured() {
    // The harness default: --dev-auth on loopback and no JWT keys.
    let server = TestServer::start().await;
    let token = hs256(SECRET, &claims(ADMIN));
    let mut client = directory(
        server.channel(),
        Credentials::bearer(&token).and_dev_user(ADMIN),
    );
    unauthenticated("bearer without keys", list_users(&mut client).await);
    list_users(&mut directory(
        server.channel(),
        Credentials::dev_user(ADMIN),
    ))
    .await
    .expect("the development header works with --dev-auth");
}

#[tokio::test]
async fn health_needs_no_credentials() {
    let keys = tempfile::tempdir().unwrap();
    let server = hs256_server(keys.path(), false).await;
    let mut health = HealthClient::new(server.channel());
    for service in ["", "entitlements.v1.Directory"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health of {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}

// ------------------------------------------------- public keys and JWKS

#[tokio::test]
async fn rs256_tokens_verify_with_the_public_key_pem() {
    let keys = tempfile::tempdir().unwrap();
    let public = KeyPair::from_pem(RSA_SIGNER)
        .expect("RSA key")
        .public_key_pem();
    let public_file = write(keys.path(), "rs256.pub.pem", &public);
    let server = TestServer::start_with_settings(|settings| {
        settings.dev_auth = false;
        settings.auth.jwt_public_key_file = Some(public_file);
        expect_issuer_and_audience(settings);
    })
    .await;

    let good = rs256(RSA_SIGNER, &claims(ADMIN));
    let mut client = directory(server.channel(), Credentials::bearer(&good));
    list_users(&mut client)
        .await
        .expect("a token signed by the trusted RSA key");
    create_group(&mut client, "by-rs256")
        .await
        .expect("and it can write");

    let cases = [
        (
            "signed by another RSA key",
            rs256(RSA_OTHER, &claims(ADMIN)),
        ),
        (
            "expired, signed by the trusted key",
            rs256(
                RSA_SIGNER,
                &with(claims(ADMIN), "exp", Some(json!(now() - 600))),
            ),
        ),
        (
            "HS256 keyed with the public key (algorithm confusion)",
            hs256(public.as_bytes(), &claims(ADMIN)),
        ),
        ("ES256 by some EC key", es256(&p256(), None, &claims(ADMIN))),
        ("alg none", unsigned(&claims(ADMIN))),
    ];
    for (case, token) in cases {
        let mut client = directory(server.channel(), Credentials::bearer(&token));
        unauthenticated(case, list_users(&mut client).await);
    }
}

#[tokio::test]
async fn es256_tokens_verify_with_the_public_key_pem() {
    let keys = tempfile::tempdir().unwrap();
    let signer = p256();
    let public_file = write(keys.path(), "es256.pub.pem", signer.public_key_pem());
    let server = TestServer::start_with_settings(|settings| {
        settings.dev_auth = false;
        settings.auth.jwt_public_key_file = Some(public_file);
        expect_issuer_and_audience(settings);
    })
    .await;

    let good = es256(&signer, None, &claims(ADMIN));
    list_users(&mut directory(server.channel(), Credentials::bearer(&good)))
        .await
        .expect("a token signed by the trusted EC key");
    let other = es256(&p256(), None, &claims(ADMIN));
    unauthenticated(
        "signed by another EC key",
        list_users(&mut directory(
            server.channel(),
            Credentials::bearer(&other),
        ))
        .await,
    );
}

#[tokio::test]
async fn es256_tokens_verify_with_the_jwks_key_they_name() {
    let keys = tempfile::tempdir().unwrap();
    let (first, second, stranger) = (p256(), p256(), p256());
    let jwks = json!({"keys": [ec_jwk(&first, "first"), ec_jwk(&second, "second")]});
    let jwks_file = write(keys.path(), "jwks.json", jwks.to_string());
    let server = TestServer::start_with_settings(|settings| {
        settings.dev_auth = false;
        settings.auth.jwt_jwks_file = Some(jwks_file);
        expect_issuer_and_audience(settings);
    })
    .await;

    let valid = [
        (
            "first key, kid first",
            es256(&first, Some("first"), &claims(ADMIN)),
        ),
        (
            "second key, kid second",
            es256(&second, Some("second"), &claims(ADMIN)),
        ),
        ("first key, no kid", es256(&first, None, &claims(ADMIN))),
        ("second key, no kid", es256(&second, None, &claims(ADMIN))),
    ];
    for (case, token) in valid {
        let mut client = directory(server.channel(), Credentials::bearer(&token));
        if let Err(status) = list_users(&mut client).await {
            panic!("{case}: {status:?}");
        }
    }
    create_group(
        &mut directory(
            server.channel(),
            Credentials::bearer(&es256(&first, Some("first"), &claims(ADMIN))),
        ),
        "by-jwks",
    )
    .await
    .expect("a JWKS-verified token can write");

    let invalid = [
        (
            "another key, kid first",
            es256(&stranger, Some("first"), &claims(ADMIN)),
        ),
        (
            "another key, no kid",
            es256(&stranger, None, &claims(ADMIN)),
        ),
        (
            "first key, kid second",
            es256(&first, Some("second"), &claims(ADMIN)),
        ),
        (
            "first key, unknown kid",
            es256(&first, Some("unknown"), &claims(ADMIN)),
        ),
        (
            "first key, wrong audience",
            es256(
                &first,
                Some("first"),
                &with(claims(ADMIN), "aud", Some(json!("another-api"))),
            ),
        ),
        ("HS256 token", hs256(SECRET, &claims(ADMIN))),
    ];
    for (case, token) in invalid {
        let mut client = directory(server.channel(), Credentials::bearer(&token));
        unauthenticated(case, list_users(&mut client).await);
    }
}

// ------------------------------------------------- configured principals

#[tokio::test]
async fn configured_principals_hold_their_configured_roles() {
    let keys = tempfile::tempdir().unwrap();
    let secret = write(keys.path(), "hs256.secret", SECRET);
    let server = TestServer::start_with_settings(|settings| {
        settings.dev_auth = false;
        settings.auth.jwt_hs256_secret_file = Some(secret);
        expect_issuer_and_audience(settings);
        settings.auth.global_admins.push("boot-admin".into());
        settings.auth.service_principals = vec![
            ServicePrincipal {
                id: "svc-catalogs".into(),
                roles: vec!["catalog-creator".into()],
            },
            ServicePrincipal {
                id: "svc-reader".into(),
                roles: vec!["decision-reader".into()],
            },
        ];
    })
    .await;
    let as_user = |sub: &str| Credentials::bearer(&hs256(SECRET, &claims(sub)));
    let new_user = |id: &str| CreateUserRequest {
        user: Some(user(&format!("User {id}"))),
        user_id: id.into(),
        request_id: String::new(),
    };

    // A bootstrap global admin may do anything.
    create_catalog(
        &mut catalogs(server.channel(), as_user("boot-admin")),
        "c-boot",
    )
    .await
    .expect("a bootstrap admin creates a catalog");
    directory(server.channel(), as_user("boot-admin"))
        .create_user(new_user("u-boot"))
        .await
        .expect("a bootstrap admin creates a user");

    // A service principal holds exactly its configured roles.
    create_catalog(
        &mut catalogs(server.channel(), as_user("svc-catalogs")),
        "c-svc",
    )
    .await
    .expect("a catalog-creator service creates a catalog");
    denied(
        directory(server.channel(), as_user("svc-catalogs"))
            .create_user(new_user("u-svc"))
            .await,
    );
    denied(
        create_catalog(
            &mut catalogs(server.channel(), as_user("svc-reader")),
            "c-reader",
        )
        .await,
    );

    // A user with a valid token and no role is authenticated, not authorized.
    list_users(&mut directory(server.channel(), as_user("plain-user")))
        .await
        .expect("anyone authenticated may call");
    denied(
        create_catalog(
            &mut catalogs(server.channel(), as_user("plain-user")),
            "c-plain",
        )
        .await,
    );
    denied(
        directory(server.channel(), as_user("plain-user"))
            .create_user(new_user("u-plain"))
            .await,
    );

    let listed: Vec<String> = catalogs(server.channel(), as_user("boot-admin"))
        .list_catalogs(ListCatalogsRequest::default())
        .await
        .expect("list catalogs")
        .into_inner()
        .catalogs
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(listed.contains(&"c-boot".to_string()), "{listed:?}");
    assert!(listed.contains(&"c-svc".to_string()), "{listed:?}");
    assert!(!listed.contains(&"c-reader".to_string()), "{listed:?}");
    assert!(!listed.contains(&"c-plain".to_string()), "{listed:?}");
}

// -------------------------------------------------------------------- TLS

/// A certificate authority that signs server and client certificates.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Self {
        let key = p256();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and its key, both PEM.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = p256();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "entitlements test");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// A TLS server: its CA, with a certificate for "localhost" and 127.0.0.1;
/// with `client_ca` set, clients must present a certificate it signed.
async fn tls_server(dir: &Path, ca: &Authority, client_ca: Option<&Authority>) -> TestServer {
    let (cert, key) = ca.issue(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let tls = TlsSettings {
        cert_file: write(dir, "server.pem", cert),
        key_file: write(dir, "server.key", key),
        client_ca_file: client_ca.map(|ca| write(dir, "client-ca.pem", ca.pem())),
    };
    let secret = write(dir, "hs256.secret", SECRET);
    TestServer::start_with_settings(|settings| {
        settings.tls = Some(tls);
        settings.auth.jwt_hs256_secret_file = Some(secret);
        expect_issuer_and_audience(settings);
    })
    .await
}

/// A channel to `address` over TLS trusting `ca`, presenting `identity`
/// (certificate and key PEM) when given. Connects on first use.
fn tls_channel(address: SocketAddr, ca: &str, identity: Option<&(String, String)>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .expect("client TLS config")
        .connect_lazy()
}

fn plaintext_channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy()
}

#[track_caller]
fn refused<T: std::fmt::Debug>(case: &str, result: Result<Response<T>, Status>) {
    match result {
        Ok(response) => panic!("{case}: expected the connection to fail, got OK: {response:?}"),
        // A failed handshake is a transport error, not a status the
        // server sent: tonic reports it as UNAVAILABLE or UNKNOWN.
        Err(status) => assert!(
            matches!(status.code(), Code::Unavailable | Code::Unknown),
            "{case}: unexpected status {status:?}"
        ),
    }
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("Test CA");
    let server = tls_server(dir.path(), &ca, None).await;
    let token = hs256(SECRET, &claims(ADMIN));

    let channel = tls_channel(server.address, &ca.pem(), None);
    list_users(&mut directory(channel.clone(), Credentials::bearer(&token)))
        .await
        .expect("TLS with a bearer token");
    create_group(
        &mut directory(channel.clone(), Credentials::dev_user(ADMIN)),
        "over-tls",
    )
    .await
    .expect("TLS with the development header");
    unauthenticated(
        "TLS without credentials",
        list_users(&mut directory(channel.clone(), Credentials::none())).await,
    );
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health over TLS");

    refused(
        "plaintext",
        list_users(&mut directory(
            plaintext_channel(server.address),
            Credentials::bearer(&token),
        ))
        .await,
    );
    let stranger = Authority::new("Another CA");
    refused(
        "TLS trusting another CA",
        list_users(&mut directory(
            tls_channel(server.address, &stranger.pem(), None),
            Credentials::bearer(&token),
        ))
        .await,
    );

    // Failed handshakes leave the server serving.
    list_users(&mut directory(channel, Credentials::bearer(&token)))
        .await
        .expect("TLS after failed handshakes");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("Test CA");
    let server = tls_server(dir.path(), &ca, Some(&ca)).await;
    let client = ca.issue(
        &["client.example.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    let channel = tls_channel(server.address, &ca.pem(), Some(&client));
    create_group(
        &mut directory(channel.clone(), Credentials::dev_user(ADMIN)),
        "over-mtls",
    )
    .await
    .expect("mutual TLS with the development header");
    list_users(&mut directory(
        channel.clone(),
        Credentials::bearer(&hs256(SECRET, &claims(ADMIN))),
    ))
    .await
    .expect("mutual TLS with a bearer token");
    // A client certificate proves the connection, not the caller.
    unauthenticated(
        "client certificate without credentials",
        list_users(&mut directory(channel.clone(), Credentials::none())).await,
    );

    refused(
        "no client certificate",
        list_users(&mut directory(
            tls_channel(server.address, &ca.pem(), None),
            Credentials::dev_user(ADMIN),
        ))
        .await,
    );
    let stranger = Authority::new("Another CA");
    let foreign = stranger.issue(
        &["client.example.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    refused(
        "client certificate from another CA",
        list_users(&mut directory(
            tls_channel(server.address, &ca.pem(), Some(&foreign)),
            Credentials::dev_user(ADMIN),
        ))
        .await,
    );
    refused(
        "plaintext",
        list_users(&mut directory(
            plaintext_channel(server.address),
            Credentials::dev_user(ADMIN),
        ))
        .await,
    );

    list_users(&mut directory(channel, Credentials::dev_user(ADMIN)))
        .await
        .expect("mutual TLS after failed handshakes");
}

/// Runs `entitlements audit export` with `args`, off the test's runtime
/// (which serves the server).
async fn audit_export(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_entitlements"))
            .args(["audit", "export"])
            .args(args)
            .output()
            .expect("run entitlements audit export")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn audit_export_presents_its_client_certificate_to_a_mutual_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("Test CA");
    let server = tls_server(dir.path(), &ca, Some(&ca)).await;
    let client = ca.issue(
        &["client.example.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    create_group(
        &mut directory(
            tls_channel(server.address, &ca.pem(), Some(&client)),
            Credentials::dev_user(ADMIN),
        ),
        "exported-over-mtls",
    )
    .await
    .expect("mutual TLS with the development header");

    let path = |p: PathBuf| p.to_str().unwrap().to_string();
    let ca_file = path(write(dir.path(), "export-ca.pem", ca.pem()));
    let cert_file = path(write(dir.path(), "client.pem", &client.0));
    let key_file = path(write(dir.path(), "client.key", &client.1));
    let base = |with_identity: bool| {
        let mut args = vec![
            "--server".to_string(),
            format!("https://localhost:{}", server.address.port()),
            "--ca-cert".into(),
            ca_file.clone(),
            "--dev-user".into(),
            ADMIN.into(),
            "--action".into(),
            "group.created".into(),
        ];
        if with_identity {
            args.extend(["--client-cert".into(), cert_file.clone()]);
            args.extend(["--client-key".into(), key_file.clone()]);
        }
        args
    };

    let output = audit_export(base(true)).await;
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l["target_id"] == "exported-over-mtls"),
        "{lines:?}"
    );

    // Without the certificate the server refuses the handshake.
    let output = audit_export(base(false)).await;
    assert!(!output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
}

// ------------------------------------------------------ startup refusals

fn settings(dev_auth: bool, hs256_secret: Option<PathBuf>) -> Settings {
    let mut settings = Settings {
        dev_auth,
        ..Settings::default()
    };
    settings.auth.jwt_hs256_secret_file = hs256_secret;
    settings
}

fn address(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

#[track_caller]
fn refusal(settings: &Settings, address: SocketAddr) -> String {
    match entitlements::server::authenticator(settings, address) {
        Ok(_) => panic!("expected {address} with {settings:?} to be refused"),
        Err(error) => format!("{error:#}"),
    }
}

#[test]
fn dev_auth_is_refused_off_loopback() {
    let keys = tempfile::tempdir().unwrap();
    let secret = write(keys.path(), "hs256.secret", SECRET);
    for listen in [
        "0.0.0.0:0",
        "10.0.0.1:50051",
        "[::]:50051",
        "[2001:db8::1]:443",
    ] {
        for keys in [None, Some(secret.clone())] {
            let error = refusal(&settings(true, keys), address(listen));
            assert!(error.contains("loopback"), "{listen}: {error}");
        }
    }
    for listen in ["127.0.0.1:0", "127.0.0.2:50051", "[::1]:0"] {
        if let Err(error) =
            entitlements::server::authenticator(&settings(true, None), address(listen))
        {
            panic!("--dev-auth on {listen}: {error:#}");
        }
    }
}

#[test]
fn a_server_nobody_can_call_is_refused() {
    for listen in ["127.0.0.1:0", "0.0.0.0:0"] {
        let error = refusal(&settings(false, None), address(listen));
        assert!(
            error.contains("no way to authenticate"),
            "{listen}: {error}"
        );
    }
    let keys = tempfile::tempdir().unwrap();
    let secret = write(keys.path(), "hs256.secret", SECRET);
    if let Err(error) =
        entitlements::server::authenticator(&settings(false, Some(secret)), address("0.0.0.0:0"))
    {
        panic!("JWT on any address: {error:#}");
    }
}

#[test]
fn unusable_keys_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path();
    let loopback = address("127.0.0.1:0");
    let key_settings = |edit: &dyn Fn(&mut Settings)| {
        let mut settings = settings(false, None);
        edit(&mut settings);
        settings
    };

    let short = write(dir, "short.secret", "too short\n");
    let error = refusal(&settings(false, Some(short)), loopback);
    assert!(error.contains("32 bytes"), "{error}");

    let error = refusal(&settings(false, Some(dir.join("missing.secret"))), loopback);
    assert!(error.contains("missing.secret"), "{error}");

    let garbage = write(dir, "garbage.pem", "not a key");
    let error = refusal(
        &key_settings(&|s| s.auth.jwt_public_key_file = Some(garbage.clone())),
        loopback,
    );
    assert!(error.contains("garbage.pem"), "{error}");

    let mut jwk = ec_jwk(&p256(), "no-alg");
    jwk.as_object_mut().unwrap().remove("alg");
    let no_alg = write(dir, "no-alg.json", json!({"keys": [jwk]}).to_string());
    let error = refusal(
        &key_settings(&|s| s.auth.jwt_jwks_file = Some(no_alg.clone())),
        loopback,
    );
    assert!(error.contains("alg"), "{error}");
}
