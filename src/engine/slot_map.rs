//! The served tenants' slots, for two kinds of reader:
//! - the hot path looks a tenant up by id without taking a lock: the ids are spread over
//!   shards, each an immutable map swapped whole (`ArcSwap`) when it changes, so that a
//!   change copies one shard (a few hundred slots at 100,000 tenants), not every slot;
//! - status pages, the scheduler and metrics walk the slots in id order: a `BTreeMap`
//!   behind a read-write lock, so that a page costs a search and the page.
//!
//! Changes come in batches (`SlotMap::batch`): each touched shard is copied once per
//! batch, so that loading 100,000 tenants is linear. Writers are serialised by the
//! engine (`Core::writes`); readers never wait on a shard.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher as _;
use std::ops::Bound;
use std::sync::Arc;

use arc_swap::ArcSwap;
use foldhash::fast::FixedState;
use parking_lot::{RwLock, RwLockReadGuard};

use super::slot::Slot;
use crate::domain::TenantId;

/// A power of two; enough that a shard stays small at the largest deployments.
const SHARDS: usize = 256;

type Shard = HashMap<TenantId, Arc<Slot>>;

pub struct SlotMap {
    shards: Box<[ArcSwap<Shard>]>,
    ordered: RwLock<BTreeMap<TenantId, Arc<Slot>>>,
}

impl Default for SlotMap {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| ArcSwap::default()).collect(),
            ordered: RwLock::default(),
        }
    }
}

/// Which shard holds an id: foldhash's fast hash with a fixed seed (ids are short; this
/// is cheaper than a second SipHash, and the shard's own map still hashes with a random
/// key).
fn shard_of(id: &str) -> usize {
    const SHARD_HASH: FixedState = FixedState::with_seed(0);
    (SHARD_HASH.hash_one(id) as usize) & (SHARDS - 1)
}

impl SlotMap {
    /// The slot of `id`, if it is served (lock-free).
    pub fn get(&self, id: &str) -> Option<Arc<Slot>> {
        self.shards[shard_of(id)].load().get(id).cloned()
    }

    /// Every slot in id order, read-locked for the guard's life (keep it short: writers
    /// wait for it).
    pub fn ordered(&self) -> RwLockReadGuard<'_, BTreeMap<TenantId, Arc<Slot>>> {
        self.ordered.read()
    }

    /// The slots whose id sorts after `after` (byte order; any string, not only an id),
    /// in id order.
    pub fn after<'a>(
        ordered: &'a BTreeMap<TenantId, Arc<Slot>>,
        after: Option<&str>,
    ) -> impl Iterator<Item = &'a Arc<Slot>> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        ordered
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, slot)| slot)
    }

    /// A batch of changes, published when the batch is (shard by shard).
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            map: self,
            copies: HashMap::new(),
            changes: Vec::new(),
        }
    }
}

/// Changes to a `SlotMap`: each touched shard is copied once, and readers see the changes
/// when `publish` runs (dropping a batch unpublished discards it).
pub struct Batch<'a> {
    map: &'a SlotMap,
    copies: HashMap<usize, Shard>,
    /// For the ordered index, in order: a slot added (or replacing its id's), or an id
    /// removed.
    changes: Vec<Result<Arc<Slot>, TenantId>>,
}

impl Batch<'_> {
    fn shard(&mut self, id: &str) -> &mut Shard {
        let index = shard_of(id);
        let shards = &self.map.shards;
        self.copies
            .entry(index)
            .or_insert_with(|| Shard::clone(&shards[index].load()))
    }

    /// The slot of `id` as the batch has it so far.
    pub fn get(&mut self, id: &str) -> Option<Arc<Slot>> {
        match self.copies.get(&shard_of(id)) {
            Some(copy) => copy.get(id).cloned(),
            None => self.map.get(id),
        }
    }

    /// Adds or replaces the slot of its tenant id; returns the one replaced.
    pub fn insert(&mut self, slot: Arc<Slot>) -> Option<Arc<Slot>> {
        self.changes.push(Ok(slot.clone()));
        self.shard(slot.id.as_str()).insert(slot.id.clone(), slot)
    }

    pub fn remove(&mut self, id: &TenantId) -> Option<Arc<Slot>> {
        let removed = self.shard(id.as_str()).remove(id.as_str());
        if removed.is_some() {
            self.changes.push(Err(id.clone()));
        }
        removed
    }

    /// Makes the changes visible: the ordered index first (under its write lock, held for
    /// the map updates only), then each copied shard.
    pub fn publish(self) {
        if self.changes.is_empty() {
            return;
        }
        {
            let mut ordered = self.map.ordered.write();
            for change in self.changes {
                match change {
                    Ok(slot) => ordered.insert(slot.id.clone(), slot),
                    Err(id) => ordered.remove(&id),
                };
            }
        }
        for (index, shard) in self.copies {
            self.map.shards[index].store(Arc::new(shard));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TenantId, TenantUid};
    use crate::engine::config::TenantConfig;
    use crate::engine::port::TenantKey;

    fn slot(id: &str) -> Arc<Slot> {
        let config = TenantConfig {
            key: TenantKey {
                id: TenantId::parse(id).unwrap(),
                uid: TenantUid::generate(),
                credentials_version: 1,
            },
            version: 1,
            jwks_url: None,
            api_base: Err("none".into()),
            upstream: Err("none".into()),
            token_type: crate::domain::TokenType::Jwt,
        };
        Arc::new(Slot::new(config, chrono::Utc::now()))
    }

    fn ids_after(map: &SlotMap, after: Option<&str>) -> Vec<String> {
        SlotMap::after(&map.ordered(), after)
            .map(|s| s.id.to_string())
            .collect()
    }

    #[test]
    fn ids_spread_over_every_shard() {
        let mut counts = [0usize; SHARDS];
        for n in 0..(SHARDS * 64) {
            counts[shard_of(&format!("tenant-{n}"))] += 1;
        }
        let (least, most) = (counts.iter().min(), counts.iter().max());
        assert!(least.is_some_and(|&n| n >= 32), "{counts:?}");
        assert!(most.is_some_and(|&n| n <= 112), "{counts:?}");
    }

    #[test]
    fn a_batch_is_seen_only_once_published_and_in_id_order() {
        let map = SlotMap::default();
        let mut batch = map.batch();
        for id in ["c", "a", "b"] {
            batch.insert(slot(id));
        }
        assert!(batch.get("a").is_some(), "the batch sees its own changes");
        assert!(map.get("a").is_none(), "readers do not, yet");
        batch.publish();
        assert!(map.get("a").is_some() && map.get("c").is_some());
        assert_eq!(ids_after(&map, None), ["a", "b", "c"]);
        assert_eq!(ids_after(&map, Some("a")), ["b", "c"]);
        assert_eq!(ids_after(&map, Some("a\u{0}")), ["b", "c"], "any string");
        assert_eq!(ids_after(&map, Some("zz")), Vec::<String>::new());

        let mut batch = map.batch();
        let replaced = slot("b");
        let old = batch.insert(replaced.clone()).expect("b was there");
        assert!(!Arc::ptr_eq(&old, &replaced));
        assert!(batch.remove(&TenantId::parse("a").unwrap()).is_some());
        assert!(batch.remove(&TenantId::parse("x").unwrap()).is_none());
        batch.publish();
        assert!(map.get("a").is_none());
        assert!(Arc::ptr_eq(&map.get("b").unwrap(), &replaced));
        assert_eq!(ids_after(&map, None), ["b", "c"]);
        assert_eq!(map.ordered().len(), 2);
    }

    #[test]
    fn many_tenants_spread_over_the_shards_and_all_are_found() {
        let map = SlotMap::default();
        let mut batch = map.batch();
        for n in 0..5_000 {
            batch.insert(slot(&format!("t{n:05}")));
        }
        batch.publish();
        assert_eq!(map.ordered().len(), 5_000);
        assert!((0..5_000).all(|n| map.get(&format!("t{n:05}")).is_some()));
        let busiest = map.shards.iter().map(|s| s.load().len()).max().unwrap();
        assert!(
            busiest < 60,
            "a shard holds {busiest} of 5,000 (about 20 expected)"
        );
    }
}
#[cfg(test)]
mod sizes {
    use std::mem::size_of;

    use crate::engine::config::TenantConfig;
    use crate::engine::slot::Slot;
    use crate::engine::token::HeldToken;

    /// A deployment holds 100,000 of each: what is rare is boxed apart (`Seldom`, errors,
    /// the previous secret's time), shared URLs are `Arc`s. BENCHMARKS.md has the bytes
    /// per tenant these make.
    #[test]
    fn a_tenant_s_parts_stay_small() {
        assert!(
            size_of::<Slot>() <= 192,
            "Slot: {} bytes",
            size_of::<Slot>()
        );
        let config = size_of::<TenantConfig>();
        assert!(config <= 192, "TenantConfig: {config} bytes");
        let token = size_of::<HeldToken>();
        assert!(
            token <= 192,
            "HeldToken: {token} bytes (the token is on the heap)"
        );
    }
}
