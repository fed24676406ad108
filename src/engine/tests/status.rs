//! Token status pages: every tenant once, in id order, in the states asked for.

use super::*;

/// Pages through every status of the given states, `limit` at a time.
fn all_pages(vendor: &Vendor, states: &[TokenState], limit: usize) -> Vec<Vec<String>> {
    let mut pages: Vec<Vec<String>> = Vec::new();
    loop {
        let after = pages.last().and_then(|page| page.last());
        let page = vendor
            .status_view()
            .statuses(after.map(String::as_str), states, limit);
        pages.push(page.items.into_iter().map(|s| s.tenant_id).collect());
        if !page.more {
            return pages;
        }
    }
}

#[tokio::test]
async fn status_pages_hold_every_tenant_once_in_id_order_in_the_states_asked_for() {
    let e = engine(FakeEdx::new(LIFETIME));
    for n in (0..25).rev() {
        let tenant = e.tenant(&format!("t{n:02}"), "client");
        e.add(&tenant);
        if n % 3 == 0 {
            e.edx.fail_next(rejected());
        }
        if n % 3 != 2 {
            let _ = e.token(&tenant.id).await; // the others are never asked for: missing
        }
    }
    e.delete(&TenantId::parse("t07").unwrap());
    let ids = |keep: fn(u32) -> bool| -> Vec<String> {
        let kept = (0..25).filter(|n| *n != 7 && keep(*n)); // t07 was deleted
        kept.map(|n| format!("t{n:02}")).collect()
    };
    let pages = all_pages(&e.vendor, &[], 10);
    assert_eq!((pages.len(), pages.concat()), (3, ids(|_| true)));
    let failing = all_pages(&e.vendor, &[TokenState::Failing], 9);
    assert_eq!(failing, [ids(|n| n % 3 == 0)]);
    let pages = all_pages(&e.vendor, &[TokenState::Missing, TokenState::Failing], 5);
    assert_eq!((pages.len(), pages.concat()), (4, ids(|n| n % 3 != 1)));
    assert_eq!(all_pages(&e.vendor, &[TokenState::Expired], 9), [[""; 0]]);
    let page = e.vendor.status_view().statuses(Some("t05x"), &[], 2); // any string is a position
    assert!(page.more && page.items[0].tenant_id == "t06");
}

/// Pages at 10,000 tenants, and the whole list as before paging, for BENCHMARKS.md.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn a_page_of_statuses_at_10_000_tenants() {
    let e = engine(FakeEdx::new(LIFETIME));
    for n in 0..10_000 {
        let tenant = e.tenant(&format!("tenant-{n:05}"), "client");
        e.add(&tenant);
        e.token(&tenant.id).await.unwrap();
    }
    let (all, failing): (&[_], &[_]) = (&[], &[TokenState::Failing]);
    for (name, after, states, limit) in [
        ("1000 from the start", None, all, 1000),
        ("1000 from the middle", Some("tenant-05000"), all, 1000),
        ("state=failing, none (a full scan)", None, failing, 1000),
        ("all 10,000, as before paging", None, all, usize::MAX),
    ] {
        let started = std::time::Instant::now();
        let page = |_| e.vendor.status_view().statuses(after, states, limit).items;
        let bytes = (0..20).fold(0, |_, n| serde_json::to_vec(&page(n)).unwrap().len());
        println!("{name}: {:?} a page, {bytes} bytes", started.elapsed() / 20);
    }
}
