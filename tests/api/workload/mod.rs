//! Workload identity (issue 24): callers that present a JWT from a trusted identity
//! provider instead of a `tv_` key. Shared here: signing keys, token minting, a JWKS
//! server on loopback that counts its hits, and the usual provider and mapping.

mod cli;
mod fetch_rate;
mod fleet;
mod jwks_url;
mod providers;
mod refusals;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tokenvend::clock::Clock;

use crate::helpers::{json_body, TestApp};

/// The issuer of the usual provider, as a Kubernetes cluster names itself.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const AUDIENCE: &str = "tokenvend";
/// The subject of a projected service-account token of `worker` in namespace `jobs`.
pub const WORKER: &str = "system:serviceaccount:jobs:worker";

/// Signing keys made once and kept under `target/tmp` for every later test process
/// (cargo-nextest runs each test in a process of its own, and two RSA keys take
/// seconds to make on a loaded machine): RSA (two), P-256 and Ed25519.
pub struct Keys {
    pub rsa: [EncodingKey; 2],
    pub p256: EncodingKey,
    pub ed25519: EncodingKey,
    /// The Ed25519 public key (jsonwebtoken makes no JWK of an Ed25519 key).
    pub ed25519_public: [u8; 32],
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let rsa = |name| {
            let der = kept(name, || {
                let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
                key.to_pkcs1_der().unwrap().as_bytes().to_vec()
            });
            EncodingKey::from_rsa_der(&der)
        };
        let p256 = kept("p256.der", || {
            let key = p256::SecretKey::random(&mut rand::thread_rng());
            key.to_pkcs8_der().unwrap().as_bytes().to_vec()
        });
        let seed: [u8; 32] = kept("ed25519.seed", || rand::random::<[u8; 32]>().to_vec())
            .try_into()
            .expect("a 32-byte seed");
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let ed = signing.to_pkcs8_der().unwrap();
        Keys {
            rsa: [rsa("rsa-1.der"), rsa("rsa-2.der")],
            p256: EncodingKey::from_ec_der(&p256),
            ed25519: EncodingKey::from_ed_der(ed.as_bytes()),
            ed25519_public: signing.verifying_key().to_bytes(),
        }
    })
}

/// The bytes kept in `target/tmp/workload-keys/{name}`, made by `make` the first time.
/// A new file is written aside and renamed into place, so a reader never sees half
/// of one; two processes making one at once each use their own, and one is kept.
fn kept(name: &str, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("workload-keys");
    let path = dir.join(name);
    if let Ok(bytes) = std::fs::read(&path) {
        return bytes;
    }
    let bytes = make();
    std::fs::create_dir_all(&dir).unwrap();
    let aside = dir.join(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&aside, &bytes).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    bytes
}

/// The public JWK of `key` for `alg`, named `kid`.
pub fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    if alg == Algorithm::EdDSA {
        use base64::Engine as _;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(keys().ed25519_public);
        return json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"});
    }
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

/// A JWK Set of `keys`.
pub fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

/// A JWT of `claims` signed with `key` by `alg`, its header naming `kid` when given.
pub fn mint(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

/// The claims of a projected token for `sub`, issued now by the app's clock for 10 min.
pub fn claims(app: &TestApp, sub: &str) -> Value {
    let now = app.clock.now().timestamp();
    json!({
        "iss": ISSUER, "aud": [AUDIENCE], "sub": sub, "iat": now, "nbf": now, "exp": now + 600,
        "kubernetes.io": { "namespace": "jobs", "serviceaccount": { "name": "worker" } },
    })
}

/// A token for `sub` signed with the first RSA key as `kid` "a".
pub fn token(app: &TestApp, sub: &str) -> String {
    mint(
        &keys().rsa[0],
        Algorithm::RS256,
        Some("a"),
        &claims(app, sub),
    )
}

pub async fn post(app: &TestApp, path: &str, body: &Value) -> Response {
    app.admin(Method::POST, path, Some(body)).await
}

/// The usual provider `k8s`: inline keys "a" (RSA) "b" (RSA), "ec" (P-256), "ed" (Ed25519).
pub async fn add_provider(app: &TestApp) {
    let k = keys();
    let set = jwks(&[
        jwk(&k.rsa[0], Algorithm::RS256, "a"),
        jwk(&k.rsa[1], Algorithm::RS256, "b"),
        jwk(&k.p256, Algorithm::ES256, "ec"),
        jwk(&k.ed25519, Algorithm::EdDSA, "ed"),
    ]);
    let body = json!({"id": "k8s", "issuer": ISSUER, "audience": AUDIENCE, "jwks": set});
    json_body(
        post(app, "/identity/providers", &body).await,
        StatusCode::CREATED,
    )
    .await;
}

/// A mapping `id` of provider `k8s`.
pub async fn add_mapping(app: &TestApp, id: &str, matches: Value, scopes: &[&str]) {
    let body = json!({"id": id, "provider": "k8s", "match": matches, "scopes": scopes});
    json_body(
        post(app, "/identity/mappings", &body).await,
        StatusCode::CREATED,
    )
    .await;
}

/// The usual provider, and a mapping giving the service accounts of namespace `jobs`
/// `tenants:read` and `tenants:write`.
pub async fn setup(app: &TestApp) {
    add_provider(app).await;
    add_mapping(
        app,
        "jobs",
        json!({"sub": "system:serviceaccount:jobs:*"}),
        &["tenants:read", "tenants:write"],
    )
    .await;
}

/// `GET /tenants` with `token`: the status it gets.
pub async fn list_with(app: &TestApp, token: &str) -> StatusCode {
    app.request(Method::GET, "/tenants", Some(token), None)
        .await
        .status()
}

/// A JWKS served on loopback, counting its hits; its key set can be changed.
pub struct JwksServer {
    pub url: String,
    pub set: Arc<Mutex<Value>>,
    hits: Arc<AtomicU64>,
}

impl JwksServer {
    pub async fn start(set: Value) -> Self {
        let shared = Arc::new(Mutex::new(set));
        let hits = Arc::new(AtomicU64::new(0));
        let (served, counted) = (shared.clone(), hits.clone());
        let router = axum::Router::new().route(
            "/openid/v1/jwks",
            get(move || {
                let (served, counted) = (served.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let set = served.lock().unwrap().clone();
                    axum::Json(set)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url: format!("http://{addr}/openid/v1/jwks"),
            set: shared,
            hits,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn publish(&self, set: Value) {
        *self.set.lock().unwrap() = set;
    }
}
