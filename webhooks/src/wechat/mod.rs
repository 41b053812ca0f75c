//! The WeChat Official Account and WeCom protocols: message crypto and XML
//! (shared by both), the Official Account endpoint, and the
//! customer-service message API, and the WeCom endpoint (`work`).

pub mod account;
pub mod crypto;
pub mod service;
pub mod work;
pub mod xml;
