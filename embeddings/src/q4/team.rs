//! A team of threads for one forward pass: contiguous shares of the tokens,
//! a spinning barrier, and the one buffer they share.
//!
//! Why not rayon: a forward needs its workers to wait for each other once per
//! layer, and a rayon task that waits on another task may wait forever when
//! that task sits queued behind it on a busy pool; with scoped threads every
//! worker is guaranteed to run. A thread costs ~20 µs to start, against
//! milliseconds of work per forward.

use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A worker of the team panicked; the forward has no result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerFailed;

impl std::fmt::Display for WorkerFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an encoder worker thread panicked")
    }
}

/// Splits `0..total` into `parts` contiguous ranges whose lengths differ by at most one.
pub(crate) fn split(total: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1);
    (0..parts)
        .map(|part| total * part / parts..total * (part + 1) / parts)
        .collect()
}

/// Runs `work` once per range, the first on the calling thread and the others
/// on scoped threads, and returns the results in range order. A panicking
/// worker poisons `barrier`, so the others stop waiting for it.
pub(crate) fn run<T: Send>(
    ranges: &[Range<usize>],
    barrier: &SpinBarrier,
    work: impl Fn(Range<usize>) -> Result<T, WorkerFailed> + Sync,
) -> Result<Vec<T>, WorkerFailed> {
    let guarded = |range: Range<usize>| {
        let _poison_on_panic = PoisonOnPanic(barrier);
        work(range)
    };
    let Some((first, others)) = ranges.split_first() else {
        return Ok(Vec::new());
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .iter()
            .map(|range| {
                let range = range.clone();
                let guarded = &guarded;
                std::thread::Builder::new()
                    .name("embed-worker".to_owned())
                    .spawn_scoped(scope, move || guarded(range))
            })
            .collect();
        let spawned_all = handles.iter().all(Result::is_ok);
        if !spawned_all {
            // The workers that did start would wait for the missing ones.
            barrier.poison();
        }
        let mut results = Vec::with_capacity(ranges.len());
        let first_result = if spawned_all {
            catch_unwind(AssertUnwindSafe(|| guarded(first.clone()))).unwrap_or(Err(WorkerFailed))
        } else {
            Err(WorkerFailed)
        };
        results.push(first_result);
        for handle in handles {
            let result = match handle {
                Ok(handle) => handle.join().unwrap_or(Err(WorkerFailed)),
                Err(_) => Err(WorkerFailed),
            };
            results.push(result);
        }
        results.into_iter().collect()
    })
}

/// Poisons the barrier if dropped during a panic.
struct PoisonOnPanic<'a>(&'a SpinBarrier);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison();
        }
    }
}

/// A reusable barrier that spins, then yields.
///
/// Waits here are short (the workers of a forward do equal work between two
/// barriers), and a futex sleep and wake-up would cost more than the wait;
/// after 2¹⁴ spins (tens to hundreds of microseconds, by the CPU's `pause`)
/// a waiter yields its core, in case the other worker is not running at all
/// (more busy threads than cores).
pub(crate) struct SpinBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl SpinBarrier {
    pub(crate) fn new(parties: usize) -> Self {
        Self {
            parties: parties.max(1),
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Waits until all parties have arrived, or fails if one of them panicked.
    pub(crate) fn wait(&self) -> Result<(), WorkerFailed> {
        const SPINS_BEFORE_YIELDING: u32 = 1 << 14;
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            // Reset before releasing: nobody arrives for the next round
            // before seeing the new generation.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return Ok(());
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Relaxed) {
                return Err(WorkerFailed);
            }
            if spins < SPINS_BEFORE_YIELDING {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::Relaxed);
    }
}

/// A row-major f32 matrix that workers write by disjoint rows and then, after
/// a barrier, all read.
///
/// The borrow checker cannot see a barrier, so access is `unsafe` and each
/// caller states why no write overlaps another access.
pub(crate) struct SharedRows<'a> {
    start: *mut f32,
    len: usize,
    row_len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: the pointer comes from a `&mut [f32]` borrowed for 'a; the access
// rules on `rows_mut` and `all` make every concurrent use data-race free.
unsafe impl Send for SharedRows<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedRows<'_> {}

impl<'a> SharedRows<'a> {
    pub(crate) fn new(values: &'a mut [f32], row_len: usize) -> Self {
        Self {
            start: values.as_mut_ptr(),
            len: values.len(),
            row_len,
            _borrow: PhantomData,
        }
    }

    /// Rows `rows`, to write.
    ///
    /// # Safety
    /// While the returned slice lives, no other thread may access these rows,
    /// and no thread may hold the slice of [`SharedRows::all`].
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn rows_mut(&self, rows: Range<usize>) -> &mut [f32] {
        let start = rows.start * self.row_len;
        let len = rows.len() * self.row_len;
        assert!(start + len <= self.len, "rows outside the matrix");
        // SAFETY: in bounds (checked); exclusive by the caller's guarantee.
        unsafe { std::slice::from_raw_parts_mut(self.start.add(start), len) }
    }

    /// Every row, to read.
    ///
    /// # Safety
    /// While the returned slice lives, no thread may hold a slice of
    /// [`SharedRows::rows_mut`].
    pub(crate) unsafe fn all(&self) -> &[f32] {
        // SAFETY: the whole borrowed slice; no writer by the caller's guarantee.
        unsafe { std::slice::from_raw_parts(self.start, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_everything_evenly() {
        for total in [0, 1, 5, 15, 2048] {
            for parts in 1..=4 {
                let ranges = split(total, parts);
                assert_eq!(ranges.len(), parts);
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[parts - 1].end, total);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let (min, max) = ranges.iter().fold((usize::MAX, 0), |(lo, hi), r| {
                    (lo.min(r.len()), hi.max(r.len()))
                });
                assert!(max - min <= 1);
            }
        }
    }

    #[test]
    fn workers_see_each_others_rows_after_the_barrier() {
        let ranges = split(8, 2);
        let barrier = SpinBarrier::new(2);
        let mut buffer = vec![0f32; 8];
        let shared = SharedRows::new(&mut buffer, 1);
        let totals = run(&ranges, &barrier, |range| {
            let mut seen = Vec::new();
            for round in 1..=100 {
                // SAFETY: each worker writes only its own rows, and reads
                // happen between two barriers with no writes in flight.
                unsafe {
                    shared
                        .rows_mut(range.clone())
                        .iter_mut()
                        .for_each(|v| *v = round as f32);
                }
                barrier.wait()?;
                // SAFETY: see above.
                seen.push(unsafe { shared.all() }.iter().sum::<f32>());
                barrier.wait()?;
            }
            Ok(seen)
        })
        .expect("no worker fails");
        for seen in totals {
            let expected: Vec<f32> = (1..=100).map(|round| 8.0 * round as f32).collect();
            assert_eq!(seen, expected);
        }
    }

    #[test]
    fn a_panicking_worker_fails_the_team_instead_of_hanging_it() {
        let ranges = split(2, 2);
        let barrier = SpinBarrier::new(2);
        let result = run(&ranges, &barrier, |range| {
            if range.start == 1 {
                panic!("worker failure (expected by this test)");
            }
            barrier.wait()?;
            Ok(())
        });
        assert!(result.is_err());
    }
}
