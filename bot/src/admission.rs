//! Admission of turns into the engine: a bounded number run at once, the
//! rest wait in the order they arrived.
//!
//! Why: on a busy instance most turns need little CPU (a repeated question
//! answered from the caches), while a new question waits for the model.
//! Without a gate the cheap turns overtake the queue at the model and take
//! the cores it needs, so new questions and follow-ups wait longest: under
//! 32 clients the overall mean stays the same, but the slow turns make a
//! tail of several times the mean. First come, first served across all
//! turns evens that out: every turn waits about as long as any other, then
//! takes what it needs. `tokio::sync::Semaphore` hands permits out in
//! arrival order, which is the whole of the policy.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// The gate every turn passes before the engine handles it.
#[derive(Debug)]
pub(crate) struct Admission {
    /// `None` admits every turn at once.
    permits: Option<Semaphore>,
    waiting: AtomicUsize,
}

/// A turn's place inside the engine; dropping it lets the next one in.
pub(crate) struct Admitted<'a> {
    _permit: Option<SemaphorePermit<'a>>,
}

/// Counts a turn as waiting until it is admitted or given up (a client that
/// disconnects drops its turn's future while it waits).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// A gate letting `limit` turns run at once; 0 means no limit.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            permits: (limit > 0).then(|| Semaphore::new(limit)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for the turn's place, behind every turn that arrived earlier.
    pub(crate) async fn enter(&self) -> Admitted<'_> {
        let Some(permits) = &self.permits else {
            return Admitted { _permit: None };
        };
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        // The semaphore is never closed, so acquiring only fails if it were:
        // the turn then runs without a permit rather than not at all.
        Admitted {
            _permit: permits.acquire().await.ok(),
        }
    }

    /// Turns waiting to be admitted right now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn turns_beyond_the_limit_wait_and_enter_in_arrival_order() {
        let admission = Arc::new(Admission::new(1));
        let first = admission.enter().await;
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for turn in 0..3 {
            let shared = Arc::clone(&admission);
            let order_tx = order_tx.clone();
            waiters.push(tokio::spawn(async move {
                let _admitted = shared.enter().await;
                order_tx.send(turn).ok();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            // Each waiter queues before the next one is spawned.
            while admission.waiting() <= turn {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(admission.waiting(), 3);
        assert!(
            order_rx.try_recv().is_err(),
            "nobody enters while the place is taken"
        );
        drop(first);
        for waiter in waiters {
            waiter.await.expect("waiter");
        }
        let order: Vec<usize> = std::iter::from_fn(|| order_rx.try_recv().ok()).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(admission.waiting(), 0);
    }

    #[tokio::test]
    async fn a_turn_given_up_while_waiting_is_no_longer_counted() {
        let admission = Admission::new(1);
        let _first = admission.enter().await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), admission.enter()).await;
        assert!(gave_up.is_err());
        assert_eq!(admission.waiting(), 0);
    }

    #[tokio::test]
    async fn no_limit_admits_everyone_at_once() {
        let admission = Admission::new(0);
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(admission.enter().await);
        }
        assert_eq!(admission.waiting(), 0);
    }
}
