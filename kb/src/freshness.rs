//! How long what a knowledge base read from its store can be reused.
//!
//! Every cached read carries the *write generation* it began under; a
//! write moves the generation, so everything read before it is stale.
//! On the embedded store that is the whole story: the data directory is
//! locked, so every write goes through this process.
//!
//! On a store that other instances write too (a Qdrant server), a local
//! generation knows nothing of their writes. So every change made through
//! a knowledge base on such a store ends by leaving a *change mark*: a
//! fresh random value in the point of the `kb_changes` collection that
//! stands for the changed data's [`ChangeTopic`]. Each reader of that data
//! reads the mark every [`POLL_INTERVAL`] and moves its own generation
//! when the mark is new. A cached read is then trusted
//! while the polls keep succeeding: at any moment, a write this instance
//! has not yet noticed was acknowledged less than [`SHARED_STORE_READ_TTL`]
//! ago. When the polls fail (the server unreachable, nobody polling), a
//! read is trusted for [`SHARED_STORE_READ_TTL`] after it began, as if
//! there were no marks at all. Either way, what another instance publishes
//! or retires is answered here within a second.
//!
//! Nothing is trusted beyond [`SHARED_STORE_READ_MAX_AGE`]: a writer that
//! dies between its data and its mark leaves no mark until its journal is
//! replayed, and that bounds how long the others can miss its change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::store::{CollectionSpec, NewPoint, Payload, PointStore, StoreError, Writers};

/// The collection that holds the change mark.
pub(crate) const CHANGES: &str = "kb_changes";

/// How often a knowledge base on a shared store reads the change mark.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a read from a shared store is reused after it began, or after
/// the last poll of the change mark that succeeded, whichever is later.
pub(crate) const SHARED_STORE_READ_TTL: Duration = Duration::from_millis(800);

/// The longest a read from a shared store is reused, whatever the polls say.
pub const SHARED_STORE_READ_MAX_AGE: Duration = Duration::from_secs(30);

/// The point of [`CHANGES`] that holds the knowledge base's mark. Kept
/// from before there were other topics, so that instances of the earlier
/// version and this one see each other's marks during a rolling upgrade.
const KNOWLEDGE_BASE_MARK_POINT: Uuid = Uuid::from_u128(0x6b62_6368_616e_6765);
const MARK_FIELD: &str = "mark";

/// The data a change mark tells of, such as the knowledge base's entries
/// or the engine's notices: each topic has its own mark, so a change to
/// one leaves the reads of the others alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeTopic {
    name: &'static str,
    mark_point: Uuid,
}

impl ChangeTopic {
    /// The knowledge base's entries and search index.
    pub(crate) const KNOWLEDGE_BASE: ChangeTopic = ChangeTopic {
        name: "knowledge base",
        mark_point: KNOWLEDGE_BASE_MARK_POINT,
    };

    /// The topic called `name`; one name, one mark, in every instance.
    pub fn named(name: &'static str) -> Self {
        Self {
            name,
            mark_point: Uuid::new_v5(&KNOWLEDGE_BASE_MARK_POINT, name.as_bytes()),
        }
    }
}

/// The collection of the change mark.
fn changes_spec() -> CollectionSpec {
    CollectionSpec::payload_only(CHANGES)
}

/// The write generation and, on a shared store, what the change-mark polls
/// have confirmed. One per knowledge base, shared with its writing tasks
/// and its poller.
#[derive(Debug)]
pub(crate) struct Freshness {
    writers: Writers,
    topic: ChangeTopic,
    generation: AtomicU64,
    /// The instant the nanosecond counts below start from.
    origin: Instant,
    /// When the last poll that succeeded began, in nanoseconds since
    /// `origin` plus one; 0 while no poll has succeeded.
    confirmed_at: AtomicU64,
    /// The last change mark read or left here; `None` until then, since
    /// reads made before the first mark is known have nothing to be
    /// checked against.
    known_mark: Mutex<Option<Option<String>>>,
}

impl Freshness {
    /// The freshness of reads of `topic` from a store with these `writers`.
    pub(crate) fn new(writers: Writers, topic: ChangeTopic) -> Self {
        Self {
            writers,
            topic,
            generation: AtomicU64::new(0),
            origin: Instant::now(),
            confirmed_at: AtomicU64::new(0),
            known_mark: Mutex::new(None),
        }
    }

    /// Who writes to the store.
    pub(crate) fn writers(&self) -> Writers {
        self.writers
    }

    /// Marks every read made before now as stale.
    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current write generation.
    pub(crate) fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a read that began at `read_at`, under the current
    /// generation, can still be used.
    pub(crate) fn trusts(&self, read_at: Instant) -> bool {
        match self.writers {
            Writers::ThisProcessOnly => true,
            Writers::Shared => {
                let age = read_at.elapsed();
                age < SHARED_STORE_READ_MAX_AGE
                    && (age < SHARED_STORE_READ_TTL
                        || self
                            .since_confirmed()
                            .is_some_and(|since| since < SHARED_STORE_READ_TTL))
            }
        }
    }

    /// How long ago the last successful poll began.
    fn since_confirmed(&self) -> Option<Duration> {
        match self.confirmed_at.load(Ordering::Acquire) {
            0 => None,
            plus_one => {
                let at = self.origin + Duration::from_nanos(plus_one - 1);
                Some(at.elapsed())
            }
        }
    }

    /// Takes in the mark a poll that began at `began` read: a mark not
    /// known here makes every earlier read stale.
    fn mark_read(&self, mark: Option<String>, began: Instant) {
        let mut known = self.known_mark.lock();
        if known.as_ref() != Some(&mark) {
            self.bump();
            *known = Some(mark);
        }
        self.confirm(began);
    }

    /// Takes in the mark this knowledge base has just left. Every read made
    /// until now becomes stale: another instance's mark that this one
    /// overwrote before it was polled came with a change made before now.
    /// The poll that reads this mark back then changes nothing.
    fn mark_left(&self, mark: String) {
        let mut known = self.known_mark.lock();
        self.bump();
        *known = Some(Some(mark));
    }

    /// Records that every mark left before a poll began at `began` has
    /// been taken in.
    fn confirm(&self, began: Instant) {
        let nanos = u64::try_from(began.duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        self.confirmed_at
            .fetch_max(nanos.saturating_add(1), Ordering::AcqRel);
    }
}

/// Marks every read made before now as stale: here at once and, on a
/// shared store, in every instance, by leaving a new change mark. When
/// the mark cannot be written, only this instance's reads are marked.
pub(crate) async fn announce_change(
    store: &dyn PointStore,
    freshness: &Freshness,
) -> Result<(), StoreError> {
    freshness.bump();
    if freshness.writers() == Writers::ThisProcessOnly {
        return Ok(());
    }
    let mark = Uuid::new_v4().simple().to_string();
    let mut payload = Payload::new();
    payload.insert(MARK_FIELD.into(), Value::String(mark.clone()));
    store
        .upsert(
            CHANGES,
            vec![NewPoint {
                id: freshness.topic.mark_point,
                dense: None,
                lexical: None,
                payload,
            }],
        )
        .await?;
    freshness.mark_left(mark);
    Ok(())
}

/// The topic's mark in the store; `None` before anyone has left one.
async fn read_mark(
    store: &dyn PointStore,
    topic: ChangeTopic,
) -> Result<Option<String>, StoreError> {
    let records = store.get(CHANGES, vec![topic.mark_point]).await?;
    Ok(records.into_iter().next().and_then(|record| {
        record
            .payload
            .get(MARK_FIELD)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }))
}

/// The task that polls the change mark; stops when dropped.
pub(crate) struct MarkWatch(JoinHandle<()>);

impl Drop for MarkWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts polling the change mark, on a store other instances write too,
/// creating its collection if missing; `None` on a store only this
/// process writes. The task holds neither the store nor the freshness
/// alive: it ends once the knowledge base is gone.
pub(crate) async fn watch_marks(
    store: &Arc<dyn PointStore>,
    freshness: &Arc<Freshness>,
) -> Result<Option<MarkWatch>, StoreError> {
    if freshness.writers() == Writers::ThisProcessOnly {
        return Ok(None);
    }
    store.ensure_collection(&changes_spec()).await?;
    let store = Arc::downgrade(store);
    let freshness = Arc::downgrade(freshness);
    Ok(Some(MarkWatch(tokio::spawn(poll_marks(store, freshness)))))
}

async fn poll_marks(store: Weak<dyn PointStore>, freshness: Weak<Freshness>) {
    let mut failing = false;
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (Some(store), Some(freshness)) = (store.upgrade(), freshness.upgrade()) else {
            return;
        };
        let began = Instant::now();
        match read_mark(store.as_ref(), freshness.topic).await {
            Ok(mark) => {
                freshness.mark_read(mark, began);
                if std::mem::take(&mut failing) {
                    tracing::info!(
                        topic = freshness.topic.name,
                        "reading the change mark again"
                    );
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        %error,
                        topic = freshness.topic.name,
                        "cannot read the change mark: cached reads \
                         are trusted for {} ms until it can be read",
                        SHARED_STORE_READ_TTL.as_millis()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_only_this_process_writes_trusts_reads_of_any_age() {
        let freshness = Freshness::new(Writers::ThisProcessOnly, ChangeTopic::KNOWLEDGE_BASE);
        let long_ago = Instant::now() - SHARED_STORE_READ_MAX_AGE;
        assert!(freshness.trusts(long_ago));
    }

    #[test]
    fn unconfirmed_reads_from_a_shared_store_expire() {
        let freshness = Freshness::new(Writers::Shared, ChangeTopic::KNOWLEDGE_BASE);
        assert!(freshness.trusts(Instant::now()));
        assert!(!freshness.trusts(Instant::now() - SHARED_STORE_READ_TTL));
    }

    #[test]
    fn a_new_mark_makes_earlier_reads_stale_and_a_known_one_does_not() {
        let freshness = Freshness::new(Writers::Shared, ChangeTopic::KNOWLEDGE_BASE);
        freshness.mark_read(Some("a".into()), Instant::now());
        let before = freshness.current();
        freshness.mark_read(Some("a".into()), Instant::now());
        assert_eq!(freshness.current(), before, "nothing changed");
        freshness.mark_read(Some("b".into()), Instant::now());
        assert!(
            freshness.current() > before,
            "another instance changed something"
        );
        let before = freshness.current();
        freshness.mark_left("c".into());
        assert!(freshness.current() > before, "a change of our own");
        let before = freshness.current();
        freshness.mark_read(Some("c".into()), Instant::now());
        assert_eq!(freshness.current(), before, "our own mark read back");
    }

    #[test]
    fn the_first_mark_read_makes_earlier_reads_stale() {
        let freshness = Freshness::new(Writers::Shared, ChangeTopic::KNOWLEDGE_BASE);
        freshness.mark_read(None, Instant::now());
        assert_eq!(freshness.current(), 1);
    }

    #[test]
    fn a_recent_poll_extends_trust_up_to_the_maximum_age() {
        let freshness = Freshness::new(Writers::Shared, ChangeTopic::KNOWLEDGE_BASE);
        freshness.confirm(Instant::now());
        assert!(freshness.trusts(Instant::now() - 2 * SHARED_STORE_READ_TTL));
        assert!(!freshness.trusts(Instant::now() - SHARED_STORE_READ_MAX_AGE));
    }
}
