//! Store faults on the fetch path: a pool whose connections are all in use is not a store
//! that is down, so fetches keep asking it for the lock and for the fleet's budget.

use std::sync::atomic::Ordering;

use super::{engine, LIFETIME};
use crate::engine::memory::FakeEdx;
use crate::engine::port::StoreFault;

#[tokio::test]
async fn a_busy_lock_pool_is_not_taken_for_a_store_that_is_down() {
    let e = engine(FakeEdx::new(LIFETIME));
    let (acme, beta) = (e.tenant("acme", "client-a"), e.tenant("beta", "client-b"));
    e.add(&acme);
    e.add(&beta);
    e.store.lock_faults.lock().push_back(StoreFault::Busy);
    e.token(&acme.id).await.expect("fetched without the lock");
    e.token(&beta.id).await.expect("a token");
    assert_eq!(
        e.store.lock_calls.load(Ordering::Relaxed),
        2,
        "the next fetch asks the store again (and so takes from the fleet's budget there)"
    );
}

#[tokio::test]
async fn an_unreachable_store_is_skipped_for_a_while() {
    let e = engine(FakeEdx::new(LIFETIME));
    let (acme, beta) = (e.tenant("acme", "client-a"), e.tenant("beta", "client-b"));
    e.add(&acme);
    e.add(&beta);
    e.store
        .lock_faults
        .lock()
        .push_back(StoreFault::Unavailable("connection refused".to_owned()));
    e.token(&acme.id).await.expect("fetched without the lock");
    e.token(&beta.id).await.expect("a token");
    assert_eq!(
        e.store.lock_calls.load(Ordering::Relaxed),
        1,
        "a store that is down is not asked again at once"
    );
}
