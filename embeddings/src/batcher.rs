//! Micro-batching of concurrent request-path texts on a dedicated thread.
//!
//! The worker blocks for the first request, then takes every request already
//! waiting (up to the batch limit) and runs them as one forward pass. A lone
//! query therefore pays no added delay, and under load the batch grows by
//! itself while the previous batch computes: no timer to tune.
//!
//! Queries and single passages (a demand being filed) share the queue: a
//! forward pass already keeps every core busy, and two passes run side by
//! side on the same cores only slow each other (their workers wait on each
//! other's barriers).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::model::EmbeddingModel;
use crate::{EmbedError, Embedding, TextKind};

struct Request {
    text: String,
    kind: TextKind,
    reply: oneshot::Sender<Result<Embedding, EmbedError>>,
}

pub(crate) struct QueryBatcher {
    sender: mpsc::Sender<Request>,
    /// Texts sent and not yet taken into a batch: the queue depth.
    waiting: Arc<AtomicUsize>,
}

impl QueryBatcher {
    /// Starts the worker thread; it ends when the batcher is dropped.
    pub(crate) fn start(model: Arc<EmbeddingModel>, max_batch: usize) -> Self {
        let (sender, receiver) = mpsc::channel::<Request>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let taken = Arc::clone(&waiting);
        let spawned = std::thread::Builder::new()
            .name("embed-queries".to_owned())
            .spawn(move || run_worker(&model, &receiver, max_batch, &taken));
        if let Err(error) = spawned {
            // Without the thread every submit fails with WorkerStopped, which callers report.
            tracing::error!(%error, "could not start the query embedding thread");
        }
        Self { sender, waiting }
    }

    pub(crate) async fn submit(
        &self,
        text: String,
        kind: TextKind,
    ) -> Result<Embedding, EmbedError> {
        let (reply, response) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if self.sender.send(Request { text, kind, reply }).is_err() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(EmbedError::WorkerStopped);
        }
        response.await.map_err(|_| EmbedError::WorkerStopped)?
    }

    /// How many texts wait for the worker (not counting the batch it is
    /// computing).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

fn run_worker(
    model: &EmbeddingModel,
    receiver: &mpsc::Receiver<Request>,
    max_batch: usize,
    waiting: &AtomicUsize,
) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        let texts: Vec<(&str, TextKind)> = batch
            .iter()
            .map(|request| (request.text.as_str(), request.kind))
            .collect();
        match model.embed_mixed(&texts) {
            Ok(vectors) => {
                for (request, vector) in batch.into_iter().zip(vectors) {
                    // The caller may have given up (timeout); nothing to do then.
                    let _ = request.reply.send(Ok(vector));
                }
            }
            Err(error) => {
                let message = error.to_string();
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(EmbedError::BatchFailed(message.clone())));
                }
            }
        }
    }
}
