//! The workload identity caller of the benchmarks: a provider with an inline JWKS (one
//! RSA key, as a Kubernetes cluster has), a mapping giving `token:*`, and JWTs signed
//! with that key; `verify_cost` times a first (uncached) verify against a cached one.

use std::time::Instant;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const SUBJECT: &str = "system:serviceaccount:bench:worker";

pub struct Signer {
    key: EncodingKey,
}

impl Signer {
    pub fn new() -> anyhow::Result<Self> {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
        Ok(Self {
            key: EncodingKey::from_rsa_der(key.to_pkcs1_der()?.as_bytes()),
        })
    }

    fn jwks(&self) -> anyhow::Result<Value> {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::RS256)?;
        jwk.common.key_id = Some("bench".to_owned());
        Ok(json!({ "keys": [jwk] }))
    }

    /// A projected-token-like JWT, valid for a day from now; `jti` tells tokens apart.
    pub fn mint(&self, jti: u64) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("bench".to_owned());
        let claims = json!({
            "iss": ISSUER, "aud": ["tokenvend"], "sub": SUBJECT, "jti": jti.to_string(),
            "iat": now, "nbf": now, "exp": now + 86_400,
            "kubernetes.io": {"namespace": "bench", "serviceaccount": {"name": "worker"}},
        });
        Ok(encode(&header, &claims, &self.key)?)
    }

    /// Trusts the signer's key and maps its subject to `token:*`.
    pub async fn register(
        &self,
        client: &reqwest::Client,
        base: &str,
        admin_key: &str,
    ) -> anyhow::Result<()> {
        let provider = json!({"id": "bench-cluster", "issuer": ISSUER, "audience": "tokenvend",
                              "jwks": self.jwks()?, "max_lifetime_seconds": 86_400});
        let mapping = json!({"id": "bench-workers", "provider": "bench-cluster",
                             "match": {"/kubernetes.io/namespace": "bench"}, "scopes": ["token:*"]});
        for (path, body) in [
            ("identity/providers", provider),
            ("identity/mappings", mapping),
        ] {
            let resp = client
                .post(format!("{base}/{path}"))
                .bearer_auth(admin_key)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(resp.status() == 201, "{path}: {}", resp.status());
        }
        Ok(())
    }
}

/// `n` sequential requests to `url` with one fresh JWT each (every one a first, uncached
/// verify), then `n` with one JWT (cached after the first), then `n` with the caller key:
/// prints the mean latency of each and the difference, the cost of a first verify.
pub async fn verify_cost(
    client: &reqwest::Client,
    signer: &Signer,
    url: &str,
    key: &str,
    n: u64,
) -> anyhow::Result<()> {
    let fresh: Vec<String> = (0..n)
        .map(|i| signer.mint(1_000_000 + i))
        .collect::<Result<_, _>>()?;
    let cached = signer.mint(42)?;
    let time = |tokens: Vec<String>| async move {
        let started = Instant::now();
        for token in &tokens {
            let resp = client.get(url).bearer_auth(token).send().await?;
            anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
            resp.bytes().await?;
        }
        Ok::<_, anyhow::Error>(started.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64)
    };
    // Warm the connection and the cached token.
    time(vec![cached.clone(); 100]).await?;
    let uncached = time(fresh).await?;
    let hit = time(vec![cached; n as usize]).await?;
    let keyed = time(vec![key.to_owned(); n as usize]).await?;
    // The signature check alone, outside the server, for reference.
    let jwks = signer.jwks()?;
    let jwk: Jwk = serde_json::from_value(jwks["keys"][0].clone())?;
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk)?;
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_audience(&["tokenvend"]);
    let sample = signer.mint(7)?;
    let started = Instant::now();
    for _ in 0..n {
        jsonwebtoken::decode::<Value>(&sample, &decoding, &validation)?;
    }
    let rs256 = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "{{\"requests\": {n}, \"uncached_jwt_us\": {uncached:.1}, \"cached_jwt_us\": {hit:.1}, \
         \"tv_key_us\": {keyed:.1}, \"first_verify_cost_us\": {:.1}, \"rs256_verify_alone_us\": {rs256:.1}}}",
        uncached - hit
    );
    Ok(())
}
