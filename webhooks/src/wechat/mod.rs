//! The WeChat Official Account and WeCom protocols: message crypto and XML.

pub mod crypto;
pub mod xml;
