//! Process metrics in the Prometheus text format, served at `GET /metrics`.
//!
//! One registry per process (as Prometheus clients are meant to be used):
//! every engine and router in the process counts into the same families,
//! and each instance of a deployment is scraped on its own. Counting is a
//! few atomic adds; nothing here does IO.
//!
//! Families:
//! - `wenke_http_requests_total{route, status}` and
//!   `wenke_http_request_duration_seconds{route}`: every HTTP request, by
//!   the route pattern that matched (`/api/chat`, not the raw path, so user
//!   ids in paths cannot blow up the label set; unmatched paths count as
//!   `unmatched`).
//! - `wenke_replies_total{channel, kind}`: every reply of the engine
//!   (answer, suggest, abstain, form, …), the answered/abstained counters.
//! - `wenke_engine_step_duration_seconds{step}`: `vector` (the message's
//!   query vector, a cache hit or one embedding) and `search` (the
//!   knowledge-base search after it).
//! - `wenke_embedding_queue_depth`, `wenke_turns_waiting` and
//!   `wenke_turn_log_pending`: texts (queries, single passages) waiting
//!   for the embedding thread, messages waiting for their place in the
//!   engine (see `max_concurrent_turns`) and turns waiting for the turn
//!   log's writer, read at scrape time. A queue that keeps growing is an
//!   instance past its capacity.
//! - `wenke_jobs_total{kind,outcome}`: background job runs (`done`,
//!   `retried`, `buried`); `wenke_job_queue{state}`: jobs `ready`,
//!   `delayed` (waiting to retry), `running` and `dead` (buried, waiting
//!   for an operator: `wenke jobs dead`), read at scrape time.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Engine;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplyLabels {
    channel: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

/// A step of the engine that is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The message's query vector (cache hit or embedding).
    Vector,
    /// The knowledge-base search.
    Search,
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Search => "search",
        }
    }
}

/// Latency buckets from 0.5 ms to ~16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The process's metric families.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    replies: Family<ReplyLabels, Counter>,
    step_seconds: Family<StepLabels, Histogram>,
    embedding_queue: Gauge,
    turns_waiting: Gauge,
    turn_log_pending: Gauge,
    jobs: Family<JobLabels, Counter>,
    job_states: Family<JobStateLabels, Gauge>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "wenke_http_requests",
            "HTTP requests by matched route and status",
            requests.clone(),
        );
        let request_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "wenke_http_request_duration_seconds",
            "HTTP request time by matched route",
            request_seconds.clone(),
        );
        let replies = Family::<ReplyLabels, Counter>::default();
        registry.register(
            "wenke_replies",
            "Replies of the engine by channel and kind",
            replies.clone(),
        );
        let step_seconds =
            Family::<StepLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "wenke_engine_step_duration_seconds",
            "Time of the engine's steps: the query vector and the search",
            step_seconds.clone(),
        );
        let embedding_queue = Gauge::default();
        registry.register(
            "wenke_embedding_queue_depth",
            "Texts (queries, single passages) waiting for the embedding thread",
            embedding_queue.clone(),
        );
        let turns_waiting = Gauge::default();
        registry.register(
            "wenke_turns_waiting",
            "Messages waiting for their place in the engine",
            turns_waiting.clone(),
        );
        let turn_log_pending = Gauge::default();
        registry.register(
            "wenke_turn_log_pending",
            "Turns waiting for the turn log's writer",
            turn_log_pending.clone(),
        );
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "wenke_jobs",
            "Background job runs by kind and outcome (done, retried, buried)",
            jobs.clone(),
        );
        let job_states = Family::<JobStateLabels, Gauge>::default();
        registry.register(
            "wenke_job_queue",
            "Background jobs by state (ready, delayed, running, dead), read at scrape time",
            job_states.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            replies,
            step_seconds,
            embedding_queue,
            turns_waiting,
            turn_log_pending,
            jobs,
            job_states,
        }
    }

    /// Counts one reply of the engine.
    pub fn reply(&self, channel: &str, kind: &str) {
        self.replies
            .get_or_create(&ReplyLabels {
                channel: channel.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one run of a background job.
    pub fn job(&self, kind: &'static str, outcome: &'static str) {
        self.jobs.get_or_create(&JobLabels { kind, outcome }).inc();
    }

    /// Records how long a step took.
    pub fn step(&self, step: Step, took: Duration) {
        self.step_seconds
            .get_or_create(&StepLabels { step: step.label() })
            .observe(took.as_secs_f64());
    }

    fn request(&self, route: &str, status: StatusCode, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status: status.as_u16(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn saturating_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Middleware that counts and times every request by its matched route.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    global().request(&route, response.status(), started.elapsed());
    response
}

/// `GET /metrics`. The queue gauges are read from the engine at scrape time
/// rather than kept up to date on every change.
pub async fn serve(State(engine): State<Arc<Engine>>) -> Response {
    let metrics = global();
    metrics
        .embedding_queue
        .set(saturating_i64(engine.kb().embedder().queued_queries()));
    metrics
        .turns_waiting
        .set(saturating_i64(engine.turns_waiting()));
    metrics
        .turn_log_pending
        .set(saturating_i64(engine.turns().pending()));
    // A slow queue store must not stall the scrape; the gauges then keep
    // their last values.
    let depth = tokio::time::timeout(Duration::from_secs(1), engine.jobs().depth()).await;
    match depth {
        Ok(Ok(depth)) => {
            for (state, count) in [
                ("ready", depth.ready),
                ("delayed", depth.delayed),
                ("running", depth.running),
                ("dead", depth.dead),
            ] {
                metrics
                    .job_states
                    .get_or_create(&JobStateLabels { state })
                    .set(saturating_i64(count));
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "metrics: job queue depth unavailable"),
        Err(_) => tracing::warn!("metrics: job queue depth timed out"),
    }
    match metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
