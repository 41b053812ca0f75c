//! The wenke conversation engine: channel-neutral messages in, structured
//! replies out. No HTTP here; channels and the web API call [`Engine`].
//!
//! Today the engine answers science questions from the knowledge base
//! (answer, "did you mean", or an honest abstention); routing, sessions and
//! demand intake come with their issues.

pub mod engine;

pub use engine::{Citation, Engine, IncomingText, Reply, ReplyKind};
