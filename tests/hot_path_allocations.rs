//! Heap allocations on the hit path: the service as deployed — the hot path
//! (`routes::hot`) in front of the real router (`routes::router`, the whole middleware) —
//! answers `GET /tenants/{id}/token` from memory, driven in this thread with
//! `tower::ServiceExt::oneshot` (no sockets, so hyper's own work is not counted), and every
//! allocation this thread makes while it does is counted (`allocation-counter`: a counting
//! wrapper around the system allocator, installed as this test binary's global
//! allocator). The subscriber is installed as deployed (info level), so that the span
//! and the log line cost what they cost in production. The router's own hit (a JWT
//! caller's, which the hot path leaves to it) is counted too.

#[path = "hot_path/setup.rs"]
#[allow(dead_code)] // the equivalence test's parts (`hot_path.rs`)
mod setup;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::{Service, ServiceExt};

use setup::{hit, service_with_a_held_token};
use tokenvend::telemetry::{self, LogFormat};

/// The allocations of a cache hit served by the hot path (24 through the router before):
/// - 2: the answer's header map (its index table and its entries: hyper takes the answer
///   as an `http::Response`, which owns one);
/// - 3: the answer itself: its buffer (`HeldToken::response_json`, the tenant id and the
///   seconds left written around the token's prebuilt JSON), the shared handle `Bytes`
///   makes of a buffer with room to spare, and its length's digits (`content-length`).
///   Kept per token for the second instead, they would cost nothing per hit but a copy of
///   every used tenant's answer in memory (a kilobyte a JWT, 100 MB at 100,000 tenants);
/// - nothing else per hit: the request id is a slice of a batch made 64 at a time (two
///   allocations per batch, `telemetry::request_id`), the body is the answer's bytes as
///   they are (no box), and the key's check, the scope check, the slot lookup, the rate
///   limit, the counters, the histogram, the span (disabled at info) and the log line
///   (likewise) allocate nothing.
const HOT_PER_HIT: u64 = 5;

/// The allocations of a cache hit through the router (24 before issue 25's second round;
/// what a JWT caller's hit, which the hot path leaves to the router, still pays). Gone
/// since: the request id's 36 bytes (now a slice of a batch), the `x-request-id` name
/// copied into the request's and the answer's header maps (now a `HeaderName` constant).
/// What is left is the answer's buffer and the shared handle `Bytes` makes of it, and
/// axum's (`bench/ladder.rs` builds it up step by
/// step): the matched route's boxed service clone and boxed future, its handler's boxed
/// future, the extensions map and the `MatchedPath` in it, the path parameter
/// (`UrlParams`: its name and decoded value), the layered route boxed again for the
/// middleware (`routes::Stack`; the layer itself, its timeout and its span allocate
/// nothing), the answer's body box and header map, and the request's header map growing
/// for the request id.
const ROUTER_PER_HIT: u64 = 21;

/// Allocations of `serve`ing `N` requests, after as many of warm-up: `per_hit` each,
/// plus the request-id batches (two allocations per 64 ids, wherever the batch stands).
fn assert_allocations(
    name: &str,
    per_hit: u64,
    mut serve: impl FnMut(Vec<Request<Body>>),
    key: &str,
) {
    const N: u64 = 256;
    // Warm-up: lazily built parts (thread-locals, span call sites, buffers) are built once.
    serve((0..N).map(|_| hit(key)).collect());
    let requests: Vec<_> = (0..N).map(|_| hit(key)).collect();
    let counted = allocation_counter::measure(|| serve(requests));
    // The requests themselves were built before counting; freeing them is not counted
    // as an allocation. 256 ids are 4 batches, whatever the first one's position.
    let batches = 2 * N.div_ceil(64);
    let total = counted.count_total;
    assert!(
        total >= per_hit * N && total <= per_hit * N + batches,
        "{name}: allocations per cache hit: {} (expected {per_hit}, and at most {batches} \
         for the request ids' batches); {counted:?}",
        total as f64 / N as f64
    );
}

#[test]
fn a_cache_hit_allocates_only_what_is_named() {
    telemetry::init(LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let service = runtime.block_on(service_with_a_held_token(dir.path()));
    let mut hot = service.hot.clone();
    assert_allocations(
        "the hot path",
        HOT_PER_HIT,
        |requests| {
            runtime.block_on(async {
                for request in requests {
                    let response = Service::<Request<Body>>::call(&mut hot, request).await;
                    let response = response.expect("infallible");
                    assert_eq!(response.status(), StatusCode::OK);
                    assert!(response.headers().contains_key("x-request-id"));
                    assert!(matches!(response.body(), http_body_util::Either::Left(_)));
                }
            })
        },
        &service.key,
    );
    let router = service.router.clone();
    assert_allocations(
        "the router",
        ROUTER_PER_HIT,
        |requests| {
            runtime.block_on(async {
                for request in requests {
                    let response = router.clone().oneshot(request).await.expect("infallible");
                    assert_eq!(response.status(), StatusCode::OK);
                    assert!(response.headers().contains_key("x-request-id"));
                }
            })
        },
        &service.key,
    );
}
