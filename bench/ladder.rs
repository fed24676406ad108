//! The hit-path cost ladder (issue 25): `GET /tenants/{id}/token` on a cache hit built up
//! one piece at a time, each rung a real axum app on its own port in this one process,
//! made of tokenvend's own pieces (its accept loop, its middleware `routes::Stack`, the
//! `Caller` extractor over the real `KeyRing` and identity registry, the real `Vendor`
//! and `Metrics`), up to the real router and, at the top, the running `Application`:
//! the product itself. Every rung answers the very bytes and headers of the product.
//!
//! `bench_ladder` prints `KEY=`, `LIMITED_KEY=`, `JWT=` and one `RUNG<TAB>label<TAB>url
//! <TAB>caller` line per rung (caller: `-`, `key`, `limited` or `jwt`), then serves until
//! killed. `bench/ladder.sh` loads the rungs with wrk and prints the table.

#[path = "bare.rs"]
mod bare;
#[path = "identity.rs"]
#[allow(dead_code)] // `verify_cost` is `bench_server`'s
mod identity;

/// The allocator of the `tokenvend` binary (src/main.rs), so that every rung is measured
/// as deployed.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use tokenvend::auth::Caller;
use tokenvend::config::{ServingSettings, Settings};
use tokenvend::crypto::MasterKey;
use tokenvend::error::ApiError;
use tokenvend::extract::Path;
use tokenvend::routes::{self, Stack};
use tokenvend::startup::{serve, Application};
use tokenvend::state::AppState;
use tokenvend::store::{AuditRetention, DatabaseUrl};
use tokenvend::telemetry::{self, LogFormat};
use tokenvend::vending::VendingSettings;
use tokenvend::webhooks::WebhookSettings;

const CLIENT_ID: &str = "bench-client";
const CLIENT_SECRET: &str = "bench-secret";
const PATH: &str = "/tenants/bench/token";
const ROUTE: &str = "/tenants/{id}/token";

/// The answer's headers, the same on every rung (and in `bare.rs`).
const HEADERS: [(header::HeaderName, HeaderValue); 3] = [
    (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ),
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    (header::PRAGMA, HeaderValue::from_static("no-cache")),
];

/// `min_ttl`, as the token route reads it.
#[derive(Deserialize)]
struct TokenParams {
    #[allow(dead_code)]
    min_ttl: Option<u64>,
}

/// What the token route reads before any tenant is looked at: the path's id and the query.
fn read_query(uri: &Uri) -> Result<TokenParams, ApiError> {
    axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

/// The token route's work after authentication: the scope check against the tenant held
/// now, the slot and its token, the answer built at the current `expires_in`; with
/// `timed`, the lookup timed into `tokenvend_token_request_duration_seconds`.
async fn token_answer(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    timed: bool,
) -> Result<Response, ApiError> {
    let held = state.vendor.held_id(raw_id);
    caller.require_token_access(raw_id, held.as_ref().map(|(_, uid)| *uid))?;
    let (id, _) = held.ok_or(ApiError::TenantNotFound)?;
    tracing::Span::current().record("tenant", id.as_str());
    let started = timed.then(Instant::now);
    let token = state
        .vendor
        .token_for(&id, Duration::ZERO, caller.id())
        .await;
    if let Some(started) = started {
        state
            .metrics
            .observe_token_request(started.elapsed().as_secs_f64());
    }
    let body = token?.response_json(id.as_str(), state.vendor.now());
    Ok((HEADERS, body).into_response())
}

/// The rungs between the bare handler and the real router, each `Router` one more piece.
fn rungs(state: &AppState, body: &Bytes) -> Vec<(&'static str, Router, &'static str)> {
    let fixed = {
        let body = body.clone();
        move |Path(_id): Path<String>, uri: Uri| {
            let body = body.clone();
            async move { read_query(&uri).map(|_| (HEADERS, body)) }
        }
    };
    let routed = || Router::new().route(ROUTE, get(fixed.clone()));
    let with = |stack: Stack| stack.around(routed());
    let id_only = Stack {
        request_id: true,
        ..Stack::NONE
    };
    let timeout = Stack {
        timeout: true,
        ..id_only
    };
    let limit = Stack {
        body_limit: true,
        ..timeout
    };
    let authed = {
        let body = body.clone();
        move |caller: Caller, Path(_id): Path<String>, uri: Uri| {
            let body = body.clone();
            async move {
                read_query(&uri)?;
                let _ = &caller;
                Ok::<_, ApiError>((HEADERS, body))
            }
        }
    };
    let looked_up = |timed: bool| {
        move |State(state): State<AppState>,
              caller: Caller,
              Path(raw_id): Path<String>,
              uri: Uri| async move {
            read_query(&uri)?;
            token_answer(&state, &caller, &raw_id, timed).await
        }
    };
    let full = |routes: Router<AppState>| Stack::ALL.around(routes).with_state(state.clone());
    vec![
        ("bare handler on tokenvend's accept loop (header timeout, connection limit, peer address)",
         Router::new().route(PATH, get({ let body = body.clone(); move || { let body = body.clone(); async move { (HEADERS, body) } } })), "-"),
        ("+ routing: `/tenants/{id}/token`, the path's id, the query", routed(), "-"),
        ("+ request id (a new one per request, echoed in `x-request-id`)", with(id_only), "-"),
        ("+ request timeout (30 s)", with(timeout), "-"),
        ("+ body limit", with(limit), "-"),
        ("+ trace span and log line (the whole middleware)", with(Stack::ALL), "-"),
        ("+ caller authentication: `tv_` key (SHA-256, key map, constant-time compare)",
         full(Router::new().route(ROUTE, get(authed.clone()))), "key"),
        ("+ the key's rate limit (a limited key, GCRA)",
         full(Router::new().route(ROUTE, get(authed.clone()))), "limited"),
        ("+ scope check, slot lookup, the token's answer built",
         full(Router::new().route(ROUTE, get(looked_up(false)))), "limited"),
        ("+ metrics (the hit counter was in the last rung; now the latency histogram)",
         full(Router::new().route(ROUTE, get(looked_up(true)))), "limited"),
        ("the real router (`routes::router`, every route)", routes::router(state.clone()), "limited"),
        ("JWT: + caller authentication: a cached workload identity JWT",
         full(Router::new().route(ROUTE, get(authed))), "jwt"),
        ("JWT: + scope check, slot lookup, the token's answer, metrics",
         full(Router::new().route(ROUTE, get(looked_up(true)))), "jwt"),
        ("JWT: the real router", routes::router(state.clone()), "jwt"),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs as deployed: info level, one line per request but none for a hit (ladder.sh
    // sends them to /dev/null).
    telemetry::init(LogFormat::Text);
    let issuer = edx_issuer::Issuer::new(chrono::Utc::now);
    let issuer_server = issuer.start().await?;
    issuer.register(CLIENT_ID, CLIENT_SECRET);
    let dir = std::env::temp_dir().join(format!("tokenvend-ladder-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let admin_key = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
    let settings = Settings {
        listen: "127.0.0.1:0".to_owned(),
        database_url: Some(
            DatabaseUrl::parse(&format!("sqlite://{}/bench.db", dir.display()))
                .map_err(anyhow::Error::msg)?,
        ),
        data_dir: dir.clone(),
        master_key: Some(MasterKey::generate().0),
        old_master_keys: Vec::new(),
        admin_key: Some(SecretString::from(admin_key.clone())),
        bootstrap_admin: true,
        serving: ServingSettings::default(),
        allow_insecure_token_urls: true,
        log_format: LogFormat::Text,
        vending: VendingSettings::default(),
        webhooks: WebhookSettings::default(),
        audit: AuditRetention::default(),
    };
    let app = Application::build(settings).await?;
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}/{path}"))
            .bearer_auth(&admin_key)
            .json(&body)
            .send()
    };
    let created = post(
        "tenants",
        json!({"id": "bench", "name": "Bench", "client_id": CLIENT_ID,
               "client_secret": CLIENT_SECRET, "token_url": issuer_server.token_url()}),
    )
    .await?;
    anyhow::ensure!(created.status() == 201, "tenant: {}", created.status());
    let key: Value = post(
        "api-keys",
        json!({"name": "bench", "scopes": ["token:bench"]}),
    )
    .await?
    .json()
    .await?;
    let key = key["key"].as_str().unwrap_or_default().to_owned();
    // A per-key rate limit it never reaches (the highest allowed).
    let limited: Value = post(
        "api-keys",
        json!({"name": "bench-limited", "scopes": ["token:bench"], "rate_limit": 100_000}),
    )
    .await?
    .json()
    .await?;
    let limited = limited["key"].as_str().unwrap_or_default().to_owned();
    let signer = identity::Signer::new()?;
    signer.register(&client, &base, &admin_key).await?;
    let jwt = signer.mint(1)?;

    let product = format!("{base}{PATH}");
    let answer = client.get(&product).bearer_auth(&key).send().await?;
    anyhow::ensure!(answer.status() == 200, "no token: {}", answer.status());
    let body = answer.bytes().await?;

    println!("KEY={key}");
    println!("LIMITED_KEY={limited}");
    println!("JWT={jwt}");
    println!(
        "RUNG\tbare axum handler (`axum::serve`, the same bytes and headers)\t{}\t-",
        bare::serve(PATH, body.clone()).await?
    );
    // Held for the life of the process: the accept loops stop when it is dropped.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let serving = ServingSettings::default();
    let mut top = Vec::new();
    for (label, router, caller) in rungs(&state, &body) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}{PATH}", listener.local_addr()?);
        let (serving, stopped) = (serving.clone(), stopped.clone());
        tokio::spawn(async move {
            serve::serve(listener, serve::with_peer(router), &serving, stopped).await
        });
        println!("RUNG\t{label}\t{url}\t{caller}");
        if label.starts_with("the real router") {
            top.push((
                "the product: the running `Application` (limited key)",
                "limited",
            ));
            top.push((
                "the product, with an unlimited key (as `bench/run.sh` measures)",
                "key",
            ));
        }
        if label == "JWT: the real router" {
            top.push(("JWT: the product", "jwt"));
        }
        for (label, caller) in top.drain(..) {
            println!("RUNG\t{label}\t{product}\t{caller}");
        }
    }
    println!("READY=1");
    tokio::signal::ctrl_c().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
