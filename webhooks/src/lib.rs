//! Channel adapters: WeChat Official Account, WeCom, Telegram and the web
//! chat, on axum.
//!
//! This crate owns the channels' protocols and nothing else. Each adapter
//! turns a channel's request into a channel-neutral [`message::Incoming`],
//! hands it to a [`message::Handler`] (the conversation engine, which lives
//! in `bot`), and renders the [`message::Reply`] back in the channel's own
//! format. It knows nothing of retrieval.

pub mod message;
pub mod preview;
pub mod telegram;
pub mod web;
pub mod wechat;
