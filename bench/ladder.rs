//! The hit-path cost ladder (issue 25): `GET /tenants/{id}/token` on a cache hit built up
//! one piece at a time, each rung a real axum app on its own port in this one process,
//! made of tokenvend's own pieces (its accept loop, its middleware `routes::Stack`, the
//! `Caller` extractor over the real `KeyRing` and identity registry, the real `Vendor`
//! and `Metrics`), up to the real router and, at the top, the running `Application`:
//! the product itself. Every rung answers the very bytes and headers of the product.
//!
//! Beside the ladder: the accept loop as it was (hyper's header timer), the hot path in
//! front of the router (`routes::hot`), and the spread rungs: `TENANTS` tenants (10,000 by
//! default, created and fetched at start-up; 0 for none) named at random per request.
//!
//! `bench_ladder` prints `KEY=`, `LIMITED_KEY=`, `JWT=`, `SPREAD_KEY=`, `TENANTS=` and one
//! `RUNG<TAB>label<TAB>url<TAB>caller` line per rung (caller: `-`, `key`, `limited`,
//! `jwt`, `spread-one` or `spread`), then serves until killed. `bench/ladder.sh` loads the
//! rungs with wrk and prints the table.

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
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Request, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{StreamExt as _, TryStreamExt as _};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use tokenvend::config::{ServingSettings, Settings};
use tokenvend::crypto::MasterKey;
use tokenvend::engine::VendingSettings;
use tokenvend::http::auth::Caller;
use tokenvend::http::error::ApiError;
use tokenvend::http::extract::Path;
use tokenvend::http::routes::hot::HotPath;
use tokenvend::http::routes::{self, Stack};
use tokenvend::http::state::AppState;
use tokenvend::outbound::webhooks::WebhookSettings;
use tokenvend::startup::{serve, Application};
use tokenvend::store::{AuditRetention, DatabaseUrl};
use tokenvend::telemetry::{self, LogFormat};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

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
    let held = state.vendor.held(raw_id).map(|h| (h.id().clone(), h.uid()));
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

/// How a rung is served: a router on tokenvend's accept loop, the hot path in front of
/// one, or a router on the accept loop as it was (hyper's header timer).
enum Rung {
    Router(Router),
    HotPath(HotPath),
    HyperTimer(Router),
}

/// The accept loop before issue 25's second round, for comparison: hyper's own header
/// timeout (a timer boxed, registered and removed per request head), the peer address
/// inserted into each request (no connection limit: that costs per connection only).
async fn serve_with_hyper_timer(listener: TcpListener, router: Router, timeout: Duration) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(true);
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            continue;
        };
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                request
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

/// The rungs between the bare handler and the product, each one more piece.
fn rungs(state: &AppState, body: &Bytes) -> Vec<(&'static str, Rung, &'static str)> {
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
    let bare = Router::new().route(
        PATH,
        get({
            let body = body.clone();
            move || {
                let body = body.clone();
                async move { (HEADERS, body) }
            }
        }),
    );
    let hot = HotPath::new(routes::router(state.clone()), state.clone());
    use Rung::{HotPath as Hot, HyperTimer, Router as R};
    vec![
        ("bare handler on the accept loop as it was (hyper's header timer per request)", HyperTimer(bare.clone()), "-"),
        ("bare handler on tokenvend's accept loop (header deadline, connection limit, peer address)", R(bare), "-"),
        ("+ routing: `/tenants/{id}/token`, the path's id, the query", R(routed()), "-"),
        ("+ request id (a new one per request, echoed in `x-request-id`)", R(with(id_only)), "-"),
        ("+ request timeout (30 s)", R(with(timeout)), "-"),
        ("+ body limit", R(with(limit)), "-"),
        ("+ trace span and log line (the whole middleware)", R(with(Stack::ALL)), "-"),
        ("+ caller authentication: `tv_` key (SHA-256, key map, constant-time compare)",
         R(full(Router::new().route(ROUTE, get(authed.clone())))), "key"),
        ("+ the key's rate limit (a limited key, GCRA)",
         R(full(Router::new().route(ROUTE, get(authed.clone())))), "limited"),
        ("+ scope check, slot lookup, the token's answer built",
         R(full(Router::new().route(ROUTE, get(looked_up(false))))), "limited"),
        ("+ metrics (the hit counter was in the last rung; now the latency histogram)",
         R(full(Router::new().route(ROUTE, get(looked_up(true))))), "limited"),
        ("the real router (`routes::router`, every route)", R(routes::router(state.clone())), "limited"),
        ("the hot path in front of the real router (`routes::hot`)", Hot(hot), "limited"),
        ("JWT: + caller authentication: a cached workload identity JWT",
         R(full(Router::new().route(ROUTE, get(authed)))), "jwt"),
        ("JWT: + scope check, slot lookup, the token's answer, metrics",
         R(full(Router::new().route(ROUTE, get(looked_up(true))))), "jwt"),
        ("JWT: the real router", R(routes::router(state.clone())), "jwt"),
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
        // The bench's issuer is local: no budget of edX calls, so that the spread rungs'
        // tenants all get their tokens at once.
        vending: VendingSettings {
            upstream_rate: None,
            caller_fetch_rate: None,
            ..VendingSettings::default()
        },
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

    // The spread rungs: TENANTS tenants (`s0`…), each holding its token, and a key for
    // all of them; wrk names one at random per request (`bench/spread.lua`).
    let tenants: usize = std::env::var("TENANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let spread_key: Value = post(
        "api-keys",
        json!({"name": "bench-spread", "scopes": ["token:*"]}),
    )
    .await?
    .json()
    .await?;
    let spread_key = spread_key["key"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    let token_url = issuer_server.token_url();
    futures::stream::iter(0..tenants)
        .map(|i| {
            let (client, base, admin_key, spread_key, token_url) =
                (&client, &base, &admin_key, &spread_key, &token_url);
            async move {
                let created = client
                    .post(format!("{base}/tenants"))
                    .bearer_auth(admin_key)
                    .json(
                        &json!({"id": format!("s{i}"), "name": "Spread", "client_id": CLIENT_ID,
                                  "client_secret": CLIENT_SECRET, "token_url": token_url}),
                    )
                    .send()
                    .await?;
                anyhow::ensure!(created.status() == 201, "tenant s{i}: {}", created.status());
                let fetched = client
                    .get(format!("{base}/tenants/s{i}/token"))
                    .bearer_auth(spread_key)
                    .send()
                    .await?;
                anyhow::ensure!(
                    fetched.status() == 200,
                    "token of s{i}: {}",
                    fetched.status()
                );
                Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    eprintln!(
        "{tenants} tenants with their tokens in {:?}",
        started.elapsed()
    );

    let product = format!("{base}{PATH}");
    let answer = client.get(&product).bearer_auth(&key).send().await?;
    anyhow::ensure!(answer.status() == 200, "no token: {}", answer.status());
    let body = answer.bytes().await?;

    println!("KEY={key}");
    println!("LIMITED_KEY={limited}");
    println!("JWT={jwt}");
    println!("SPREAD_KEY={spread_key}");
    println!("TENANTS={tenants}");
    println!(
        "RUNG\tbare axum handler (`axum::serve`, the same bytes and headers)\t{}\t-",
        bare::serve(PATH, body.clone()).await?
    );
    // Held for the life of the process: the accept loops stop when it is dropped.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let serving = ServingSettings::default();
    let mut top = Vec::new();
    for (label, rung, caller) in rungs(&state, &body) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}{PATH}", listener.local_addr()?);
        let (serving, stopped) = (serving.clone(), stopped.clone());
        match rung {
            Rung::Router(router) => tokio::spawn(async move {
                serve::serve(listener, serve::with_peer(router), &serving, stopped).await
            }),
            Rung::HotPath(hot) => tokio::spawn(async move {
                serve::serve(listener, hot.per_peer(), &serving, stopped).await
            }),
            Rung::HyperTimer(router) => tokio::spawn(async move {
                serve_with_hyper_timer(listener, router, serving.header_timeout).await;
                Ok(())
            }),
        };
        println!("RUNG\t{label}\t{url}\t{caller}");
        if label.starts_with("the hot path") {
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
            if tenants > 0 {
                top.push((
                    "the product, one tenant named through `bench/spread.lua` (as the next)",
                    "spread-one",
                ));
                top.push((
                    "the product, spread: a random one of TENANTS tenants per request",
                    "spread",
                ));
            }
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
