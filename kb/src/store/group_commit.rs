//! Group commit for one embedded collection: writers apply their updates one
//! at a time, and one flush makes every update applied before it durable.
//!
//! qdrant-edge gives two constraints this module is built around:
//! - an update acknowledged to a caller must have been flushed (its
//!   write-ahead log is not replayed on load);
//! - a flush panics if an update runs beside it, so updates and flushes
//!   never overlap.
//!
//! Flushing once per write made every writer of a busy collection wait for
//! its own flush (many `msync`s and an `fsync` per segment) behind the
//! others' flushes. Here a writer applies its update, then waits for a flush
//! that began after it. While a flush runs, newcomers queue; when it ends,
//! they all apply theirs, and the last of them flushes for the whole group.
//!
//! Invariants:
//! - no update and no flush run at the same time, and at most one flush runs;
//! - [`GroupCommit::write`] returns `Ok` only after a flush that started
//!   after its update was applied has finished.
//!
//! Hand-written rather than a crate: the waiting rule (let the queued
//! writers apply before flushing, and never let an update run beside a
//! flush) is this store's own, and a `Condvar` states it in a few lines.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use parking_lot::{Condvar, Mutex, MutexGuard};

/// Most updates one flush waits to gather, so that a steady stream of
/// newcomers cannot postpone a group's flush indefinitely.
const MOST_UPDATES_PER_FLUSH: u64 = 256;

/// The write gate of one collection.
#[derive(Default)]
pub(super) struct GroupCommit {
    progress: Mutex<Progress>,
    /// Signalled when a writer has tried its update (applied, failed or
    /// panicked) and when a flush has ended.
    changed: Condvar,
}

#[derive(Default)]
struct Progress {
    /// Updates applied since the collection was opened.
    applied: u64,
    /// Of those, how many a finished flush covers.
    flushed: u64,
    /// A flush is running, with the lock let go so that newcomers can queue.
    flushing: bool,
    /// Writers that have arrived and not yet applied their update.
    waiting_to_apply: usize,
    /// Flushes run, for tests and diagnostics.
    flushes: u64,
}

impl GroupCommit {
    /// Applies `update` with no other update or flush beside it, then
    /// returns once a flush that started after it has finished. `flush`
    /// runs on this thread if this writer is the last of its group.
    ///
    /// If `update` fails, nothing is flushed for it and its error is
    /// returned; if it panics, the panic reaches this caller. If `flush`
    /// panics, the panic reaches this caller and the writers of its group
    /// flush again themselves.
    pub(super) fn write<E>(
        &self,
        update: impl FnOnce() -> Result<(), E>,
        flush: impl Fn(),
    ) -> Result<(), E> {
        let mut progress = self.progress.lock();
        progress.waiting_to_apply += 1;
        while progress.flushing {
            self.changed.wait(&mut progress);
        }
        progress.waiting_to_apply -= 1;
        let applied = catch_unwind(AssertUnwindSafe(update));
        // A writer about to flush may be waiting for this one to apply,
        // even if the update panicked.
        self.changed.notify_all();
        applied.unwrap_or_else(|panic| resume_unwind(panic))?;
        progress.applied += 1;
        let ticket = progress.applied;
        loop {
            if progress.flushed >= ticket {
                return Ok(());
            }
            let others_about_to_apply = progress.waiting_to_apply > 0
                && progress.applied - progress.flushed < MOST_UPDATES_PER_FLUSH;
            if progress.flushing || others_about_to_apply {
                self.changed.wait(&mut progress);
                continue;
            }
            self.flush_group(&mut progress, &flush);
        }
    }

    /// Runs `work` with no update or flush beside it, then `flush`, which
    /// also covers every update applied so far. For index creation and
    /// optimisation.
    pub(super) fn alone_then_flush<T>(&self, work: impl FnOnce() -> T, flush: impl Fn()) -> T {
        let mut progress = self.progress.lock();
        while progress.flushing {
            self.changed.wait(&mut progress);
        }
        let outcome = work();
        flush();
        progress.flushes += 1;
        progress.flushed = progress.applied;
        self.changed.notify_all();
        outcome
    }

    /// How many flushes have run.
    #[cfg(test)]
    pub(super) fn flushes(&self) -> u64 {
        self.progress.lock().flushes
    }

    fn flush_group(&self, progress: &mut MutexGuard<'_, Progress>, flush: &impl Fn()) {
        progress.flushing = true;
        let covered = progress.applied;
        let flushed = MutexGuard::unlocked(progress, || catch_unwind(AssertUnwindSafe(flush)));
        progress.flushing = false;
        progress.flushes += 1;
        if flushed.is_ok() {
            progress.flushed = covered;
        }
        self.changed.notify_all();
        if let Err(panic) = flushed {
            resume_unwind(panic);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;

    /// A stand-in shard: it records what was applied and what flushed, and
    /// fails the test if an update or a flush overlaps a flush.
    #[derive(Default)]
    struct FakeShard {
        busy: AtomicBool,
        applied: AtomicU64,
        durable: AtomicU64,
    }

    impl FakeShard {
        fn enter(&self) {
            assert!(
                !self.busy.swap(true, Ordering::SeqCst),
                "an update or flush ran beside a flush"
            );
        }

        fn leave(&self) {
            self.busy.store(false, Ordering::SeqCst);
        }

        fn update(&self) -> u64 {
            self.enter();
            let sequence = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
            self.leave();
            sequence
        }

        fn flush(&self) {
            self.enter();
            let applied = self.applied.load(Ordering::SeqCst);
            // A flush takes long enough for others to queue, as a real one does.
            std::thread::sleep(Duration::from_millis(2));
            self.durable.fetch_max(applied, Ordering::SeqCst);
            self.leave();
        }
    }

    /// One write through the gate to the fake shard.
    fn write_one(gate: &GroupCommit, shard: &FakeShard) {
        gate.write::<()>(
            || {
                shard.update();
                Ok(())
            },
            || shard.flush(),
        )
        .expect("the fake update cannot fail");
    }

    #[test]
    fn every_acknowledged_write_is_durable_and_concurrent_writers_share_flushes() {
        const WRITERS: usize = 8;
        const WRITES_EACH: usize = 25;
        let gate = Arc::new(GroupCommit::default());
        let shard = Arc::new(FakeShard::default());
        let start = Arc::new(Barrier::new(WRITERS));
        let threads: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (gate, shard, start) = (gate.clone(), shard.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..WRITES_EACH {
                        let mut sequence = 0;
                        gate.write::<()>(
                            || {
                                sequence = shard.update();
                                Ok(())
                            },
                            || shard.flush(),
                        )
                        .expect("the fake update cannot fail");
                        assert!(
                            shard.durable.load(Ordering::SeqCst) >= sequence,
                            "write {sequence} was acknowledged before a flush covered it"
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a writer panicked");
        }
        let writes = (WRITERS * WRITES_EACH) as u64;
        assert_eq!(shard.applied.load(Ordering::SeqCst), writes);
        assert_eq!(shard.durable.load(Ordering::SeqCst), writes);
        assert!(
            gate.flushes() < writes,
            "{} flushes for {writes} concurrent writes: no group formed",
            gate.flushes()
        );
    }

    #[test]
    fn a_lone_writer_flushes_its_own_write() {
        let gate = GroupCommit::default();
        let shard = FakeShard::default();
        for expected in 1..=3 {
            write_one(&gate, &shard);
            assert_eq!(shard.durable.load(Ordering::SeqCst), expected);
        }
        assert_eq!(gate.flushes(), 3);
    }

    #[test]
    fn a_failed_update_flushes_nothing_and_does_not_block_the_next_writer() {
        let gate = GroupCommit::default();
        let shard = FakeShard::default();
        let failed = gate.write(|| Err("rejected"), || shard.flush());
        assert_eq!(failed, Err("rejected"));
        assert_eq!(gate.flushes(), 0);
        write_one(&gate, &shard);
        assert_eq!(shard.durable.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panicking_flush_leaves_the_gate_usable_and_the_write_unacknowledged() {
        let gate = GroupCommit::default();
        let shard = FakeShard::default();
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            gate.write::<()>(|| Ok(()), || panic!("flush failed"))
        }));
        assert!(panicked.is_err());
        write_one(&gate, &shard);
        assert_eq!(gate.flushes(), 2);
        assert_eq!(shard.durable.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panicking_update_leaves_the_gate_usable() {
        let gate = GroupCommit::default();
        let shard = FakeShard::default();
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            gate.write::<()>(|| panic!("update failed"), || shard.flush())
        }));
        assert!(panicked.is_err());
        write_one(&gate, &shard);
        assert_eq!(gate.flushes(), 1);
        assert_eq!(shard.durable.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn work_alone_waits_for_a_running_flush_and_covers_earlier_updates() {
        let gate = Arc::new(GroupCommit::default());
        let shard = Arc::new(FakeShard::default());
        let writer = {
            let (gate, shard) = (gate.clone(), shard.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    write_one(&gate, &shard);
                }
            })
        };
        for _ in 0..20 {
            gate.alone_then_flush(
                || {
                    shard.enter();
                    shard.leave();
                },
                || shard.flush(),
            );
        }
        writer.join().expect("the writer panicked");
        assert_eq!(shard.durable.load(Ordering::SeqCst), 20);
    }
}
