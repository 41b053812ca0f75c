//! The wenke conversation engine: channel-neutral messages in, structured
//! replies out. No HTTP here; channels and the web API call [`Engine`]
//! through the [`webhooks::message::Handler`] trait.
//!
//! - [`engine`]: the pipeline of one message.
//! - `admission`: turns beyond the concurrency limit wait in arrival order.
//! - [`routing`]: what a message wants (rules plus nearest labelled examples).
//! - [`context`]: follow-up questions read against the conversation's topic.
//! - [`session`]: conversation state, rate limits and dedup, in memory or Redis.
//! - [`safety`]: the sensitive-word filter.
//! - [`dictionary`]: editors' edits of the synonym and sensitive-word lists.
//! - [`turns`]: the durable turn log.
//! - [`http`]: the HTTP surface (web chat, API, health).
//! - [`ip_limit`]: the per-address rate limit of the directly called routes.
//! - [`intake`]: the filing conversation of demands and capabilities.
//! - [`listings`]: forms in progress, notices, listing serial numbers.
//! - [`jobs`]: the durable queue of background work, and its workers.
//! - [`listings_http`]: the listings API, public and staff.
//! - [`outreach`]: personalised push (精准科普) to opted-in users.
//! - [`report`]: analytics and the weekly report from the turn log.
//! - [`china`]: China days, in which everything is counted.
//! - [`upkeep`]: the embedded store's search index kept built while serving.

mod admission;
pub mod china;
pub mod console;
pub mod context;
pub mod dictionary;
pub mod engine;
pub mod http;
pub mod intake;
pub mod ip_limit;
pub mod jobs;
pub mod listings;
pub mod listings_http;
pub mod metrics;
pub mod outreach;
pub mod report;
pub mod retention;
pub mod routing;
pub mod safety;
pub mod session;
pub mod turns;
pub mod upkeep;

pub use engine::{Engine, EngineConfig, EngineError};
