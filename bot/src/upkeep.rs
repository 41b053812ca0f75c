//! Index upkeep: `wenke serve` keeps the embedded store's search index
//! built while it runs.
//!
//! Why: qdrant-edge builds HNSW graphs (and the int8 copies searches walk)
//! only when asked, and a segment nobody optimises is searched by an exact
//! scan of every point, correct but slower with every entry published. A
//! Qdrant server builds its indexes by itself, so this runs only on the
//! embedded store ([`KnowledgeBase::index_needs_optimizing`]).
//!
//! When: once at start (a crash or a stop may have left points unindexed,
//! and a new index collection from a re-index starts unindexed), then
//! every [`CHECK_EVERY`] if the knowledge base has written anything since
//! the last build. Qdrant decides what a build does: nothing while the
//! unindexed points stay below its indexing threshold (~10 MB of vectors,
//! some 900 entries), else it indexes that segment. `wenke kb import` and
//! `wenke kb reindex` build the index before they return, so a large
//! import is indexed before the server starts.
//!
//! Cost: the build runs on a blocking thread; searches go on meanwhile on
//! the existing segments, while writes to the index (publishing,
//! retiring) wait for it to finish (qdrant-edge's flush panics beside
//! it). Most builds are small, but when the store already has as many
//! segments as Qdrant aims for, it indexes new points together with the
//! smallest built segment, which at 100k entries can take minutes (the
//! whole index builds in ~4 minutes here): an editor's publish then waits
//! that long, past the console's request deadline, and completes.
//!
//! Stopping the server waits for a build that is running; killing the
//! process loses nothing (Qdrant builds into new segments and swaps them
//! in; 20 kills at random moments of a build checked by hand,
//! docs/BENCHMARKS.md "Kills during an index build").

use std::sync::Arc;
use std::time::{Duration, Instant};

use kb::{KbError, KnowledgeBase};

/// How often the upkeep looks for new writes.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// What the upkeep needs of the knowledge base; a trait so that the
/// schedule is tested without a model or a store.
#[async_trait::async_trait]
pub trait IndexToKeep: Send + Sync + 'static {
    /// A figure that changes whenever the index may have changed.
    fn write_generation(&self) -> u64;

    /// Builds whatever the index lacks.
    async fn optimize(&self) -> Result<(), KbError>;
}

#[async_trait::async_trait]
impl IndexToKeep for KnowledgeBase {
    fn write_generation(&self) -> u64 {
        KnowledgeBase::write_generation(self)
    }

    async fn optimize(&self) -> Result<(), KbError> {
        KnowledgeBase::optimize(self).await
    }
}

/// Optimises the index now and then after every `every` in which it was
/// written to; runs until the task is aborted.
pub async fn keep_index_optimized(index: Arc<dyn IndexToKeep>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut upkeep = Upkeep::default();
    loop {
        ticks.tick().await;
        upkeep.check(index.as_ref()).await;
    }
}

/// What the upkeep remembers between checks.
#[derive(Debug, Default)]
struct Upkeep {
    /// The write generation the last successful build began at.
    built_at_generation: Option<u64>,
}

/// What one check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Nothing was written since the last build.
    Unchanged,
    /// The index was optimised.
    Built,
    /// The build failed (logged); the next check tries again.
    Failed,
}

impl Upkeep {
    async fn check(&mut self, index: &dyn IndexToKeep) -> Checked {
        // Read before the build: a write during it changes the figure, so
        // the next check builds again.
        let generation = index.write_generation();
        if self.built_at_generation == Some(generation) {
            return Checked::Unchanged;
        }
        let started = Instant::now();
        if let Err(error) = index.optimize().await {
            tracing::warn!(%error, "optimising the search index failed; next try later");
            return Checked::Failed;
        }
        self.built_at_generation = Some(generation);
        let took = started.elapsed();
        if took > Duration::from_secs(1) {
            tracing::info!(seconds = took.as_secs_f64(), "search index optimised");
        }
        Checked::Built
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;

    /// Counts builds; fails the builds it is told to.
    #[derive(Default)]
    struct FakeIndex {
        generation: AtomicU64,
        builds: AtomicUsize,
        failures_left: Mutex<usize>,
    }

    #[async_trait::async_trait]
    impl IndexToKeep for FakeIndex {
        fn write_generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }

        async fn optimize(&self) -> Result<(), KbError> {
            self.builds.fetch_add(1, Ordering::SeqCst);
            let mut failures_left = self.failures_left.lock().unwrap_or_else(|e| e.into_inner());
            if *failures_left > 0 {
                *failures_left -= 1;
                return Err(KbError::Store(kb::store::StoreError::Storage {
                    collection: "index".into(),
                    message: "disk full".into(),
                }));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn builds_at_the_first_check_and_again_only_after_writes() {
        let index = FakeIndex::default();
        let mut upkeep = Upkeep::default();
        assert_eq!(upkeep.check(&index).await, Checked::Built, "at start");
        assert_eq!(upkeep.check(&index).await, Checked::Unchanged);
        assert_eq!(upkeep.check(&index).await, Checked::Unchanged);
        index.generation.fetch_add(1, Ordering::SeqCst);
        assert_eq!(upkeep.check(&index).await, Checked::Built, "after a write");
        assert_eq!(upkeep.check(&index).await, Checked::Unchanged);
        assert_eq!(index.builds.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_build_is_tried_again_at_the_next_check() {
        let index = FakeIndex {
            failures_left: Mutex::new(2),
            ..FakeIndex::default()
        };
        let mut upkeep = Upkeep::default();
        assert_eq!(upkeep.check(&index).await, Checked::Failed);
        assert_eq!(upkeep.check(&index).await, Checked::Failed);
        assert_eq!(upkeep.check(&index).await, Checked::Built);
        assert_eq!(upkeep.check(&index).await, Checked::Unchanged);
        assert_eq!(index.builds.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_write_during_a_build_makes_the_next_check_build_again() {
        /// Writes (bumps the generation) while it builds.
        #[derive(Default)]
        struct WrittenDuringBuild(FakeIndex);

        #[async_trait::async_trait]
        impl IndexToKeep for WrittenDuringBuild {
            fn write_generation(&self) -> u64 {
                self.0.write_generation()
            }
            async fn optimize(&self) -> Result<(), KbError> {
                let built = self.0.optimize().await;
                if self.0.builds.load(Ordering::SeqCst) == 1 {
                    self.0.generation.fetch_add(1, Ordering::SeqCst);
                }
                built
            }
        }

        let index = WrittenDuringBuild::default();
        let mut upkeep = Upkeep::default();
        assert_eq!(upkeep.check(&index).await, Checked::Built);
        assert_eq!(
            upkeep.check(&index).await,
            Checked::Built,
            "the write came mid-build"
        );
        assert_eq!(upkeep.check(&index).await, Checked::Unchanged);
    }
}
