//! The WeChat Official Account and WeCom protocols: message crypto and XML
//! (shared by both), and the Official Account endpoint.

pub mod account;
pub mod crypto;
pub mod xml;
