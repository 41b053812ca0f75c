//! Reads of the store kept for the next request, as long as they can still
//! be true: under the write generation they began under, and as long as
//! [`Freshness`] trusts them (see there for stores other instances write).

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;
use parking_lot::Mutex;

use crate::freshness::{ChangeTopic, Freshness, MarkWatch, announce_change, watch_marks};
use crate::store::{PointStore, StoreError};

/// When and under which write generation a read began. Taken before the
/// read, so a write that lands during it makes the result stale at once.
#[derive(Debug, Clone, Copy)]
pub struct ReadStamp {
    at: Instant,
    generation: u64,
}

impl ReadStamp {
    pub(crate) fn new(generation: u64) -> Self {
        Self {
            at: Instant::now(),
            generation,
        }
    }

    /// The write generation the read began under.
    pub(crate) fn generation(self) -> u64 {
        self.generation
    }
}

struct Stamped<V> {
    stamp: ReadStamp,
    value: V,
}

/// A bounded map of reads (least recently used out first).
pub(crate) struct ReadCache<K: Hash + Eq, V: Clone> {
    values: Mutex<LruCache<K, Stamped<V>>>,
    freshness: Arc<Freshness>,
}

impl<K: Hash + Eq, V: Clone> ReadCache<K, V> {
    /// A cache of `capacity` values, trusted as `freshness` says.
    pub(crate) fn new(capacity: usize, freshness: Arc<Freshness>) -> Self {
        Self {
            values: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            freshness,
        }
    }

    /// The value read for `key`, if it is still valid at write `generation`.
    pub(crate) fn get(&self, key: &K, generation: u64) -> Option<V> {
        let mut values = self.values.lock();
        let stamped = values.get(key)?;
        let fresh =
            stamped.stamp.generation == generation && self.freshness.trusts(stamped.stamp.at);
        if !fresh {
            values.pop(key);
            return None;
        }
        Some(stamped.value.clone())
    }

    /// Remembers `value`, read as of `stamp`.
    pub(crate) fn put(&self, key: K, stamp: ReadStamp, value: V) {
        self.values.lock().put(key, Stamped { stamp, value });
    }
}

/// Reads of one [`ChangeTopic`] kept until that topic changes: a change
/// announced here, or on a store other instances write too, a change
/// mark of any instance (`freshness.rs` says how long such reads are
/// trusted). For data outside the knowledge base that is read on every
/// message and rarely changes, such as the engine's notices.
pub struct WatchedCache<K: Hash + Eq, V: Clone> {
    store: Arc<dyn PointStore>,
    freshness: Arc<Freshness>,
    reads: ReadCache<K, V>,
    /// Polls the topic's mark on a shared store; stops when dropped.
    _watch: Option<MarkWatch>,
}

impl<K: Hash + Eq, V: Clone> WatchedCache<K, V> {
    /// A cache of at most `capacity` reads of `topic` from `store`; on a
    /// shared store, starts polling the topic's change mark.
    pub async fn open(
        store: &Arc<dyn PointStore>,
        topic: ChangeTopic,
        capacity: usize,
    ) -> Result<Self, StoreError> {
        let freshness = Arc::new(Freshness::new(store.writers(), topic));
        let watch = watch_marks(store, &freshness).await?;
        Ok(Self {
            store: Arc::clone(store),
            reads: ReadCache::new(capacity, Arc::clone(&freshness)),
            freshness,
            _watch: watch,
        })
    }

    /// Stamps a read about to begin; [`WatchedCache::put`] takes the stamp
    /// with what was read, which a change announced meanwhile makes stale.
    pub fn begin_read(&self) -> ReadStamp {
        ReadStamp::new(self.freshness.current())
    }

    /// What was read for `key`, if no change has been announced since.
    pub fn get(&self, key: &K) -> Option<V> {
        self.reads.get(key, self.freshness.current())
    }

    /// Remembers `value`, read for `key` under `stamp`.
    pub fn put(&self, key: K, stamp: ReadStamp, value: V) {
        self.reads.put(key, stamp, value);
    }

    /// Makes every read kept so far stale, here at once and, on a shared
    /// store, in every instance within a poll of the mark. Call it after
    /// the change is stored. When the mark cannot be written, the error is
    /// returned and only this instance's reads are stale: the others keep
    /// theirs for at most [`crate::SHARED_STORE_READ_MAX_AGE`].
    pub async fn announce_change(&self) -> Result<(), StoreError> {
        announce_change(self.store.as_ref(), &self.freshness).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::{ChangeTopic, SHARED_STORE_READ_TTL};
    use crate::store::Writers;

    fn cache(writers: Writers) -> ReadCache<&'static str, i32> {
        ReadCache::new(
            8,
            Arc::new(Freshness::new(writers, ChangeTopic::KNOWLEDGE_BASE)),
        )
    }

    #[test]
    fn a_write_makes_every_earlier_read_stale() {
        let cache = cache(Writers::ThisProcessOnly);
        cache.put("q", ReadStamp::new(3), 1);
        assert_eq!(cache.get(&"q", 3), Some(1));
        assert_eq!(cache.get(&"q", 4), None);
        // Dropped, not kept for a generation that comes back.
        assert_eq!(cache.get(&"q", 3), None);
    }

    #[test]
    fn reads_from_a_shared_store_expire_without_confirmation() {
        let cache = cache(Writers::Shared);
        let old = ReadStamp {
            at: Instant::now() - SHARED_STORE_READ_TTL,
            generation: 0,
        };
        cache.put("old", old, 1);
        cache.put("new", ReadStamp::new(0), 2);
        assert_eq!(cache.get(&"old", 0), None);
        assert_eq!(cache.get(&"new", 0), Some(2));
    }

    #[test]
    fn reads_from_a_store_only_this_process_writes_do_not_expire() {
        let cache = cache(Writers::ThisProcessOnly);
        let old = ReadStamp {
            at: Instant::now() - 100 * SHARED_STORE_READ_TTL,
            generation: 0,
        };
        cache.put("old", old, 1);
        assert_eq!(cache.get(&"old", 0), Some(1));
    }
}
