//! Per-IP rate limiting of the routes people and scripts call directly
//! (web chat, its API, the listings API, the console), counted in the
//! session store so every instance shares one budget per address. The
//! channels' webhooks are not limited here: their requests come from the
//! platforms' servers, are signed, and are limited per user by the engine.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::session::SessionStore;

/// How many requests one address may make.
#[derive(Debug, Clone)]
pub struct IpLimit {
    /// Requests per minute from one address.
    pub per_minute: u32,
    /// The header a trusted reverse proxy puts the client's address in
    /// (nginx: `proxy_set_header X-Real-IP $remote_addr`). `None`: the
    /// connection's peer address. Set it only behind a proxy that always
    /// overwrites the header, or clients choose their own address.
    pub client_ip_header: Option<HeaderName>,
}

/// The limiter's state: the limit and the store that counts.
#[derive(Clone)]
pub struct IpLimiter {
    limit: IpLimit,
    sessions: Arc<dyn SessionStore>,
}

impl IpLimiter {
    /// A limiter counting in `sessions`.
    pub fn new(limit: IpLimit, sessions: Arc<dyn SessionStore>) -> Self {
        Self { limit, sessions }
    }

    fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        if let Some(name) = &self.limit.client_ip_header {
            return request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.trim().parse().ok());
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
    }
}

const WINDOW: Duration = Duration::from_secs(60);

/// The counter an address spends from. An IPv6 host is handed a whole /64
/// by its provider and can pick any address in it, so one budget per
/// address would be one budget per request for a script that rotates
/// them; the /64 is what identifies the host. An IPv4 address reaching a
/// dual-stack socket arrives IPv4-mapped and counts as itself.
fn budget_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                format!("ip:{}/64", Ipv6Addr::from(network))
            }
        },
    }
}

/// Middleware: 429 with `Retry-After` once an address is over its budget.
/// A failing session store lets requests through: the routes behind it
/// report the store's failure themselves.
pub async fn limit(State(limiter): State<IpLimiter>, request: Request, next: Next) -> Response {
    let Some(ip) = limiter.client_ip(&request) else {
        // No address to count (a proxy that did not set the header).
        return next.run(request).await;
    };
    let key = budget_key(ip);
    match limiter
        .sessions
        .allow(&key, limiter.limit.per_minute, WINDOW)
        .await
    {
        Ok(true) => next.run(request).await,
        Ok(false) => {
            tracing::info!(%ip, "per-IP rate limit reached");
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    (header::RETRY_AFTER, HeaderValue::from_static("60")),
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    ),
                ],
                "请求太频繁，请一分钟后再试。",
            )
                .into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "per-IP rate limit not counted");
            next.run(request).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_count_alone() {
        assert_eq!(budget_key("203.0.113.7".parse().unwrap()), "ip:203.0.113.7");
        assert_ne!(
            budget_key("203.0.113.7".parse().unwrap()),
            budget_key("203.0.113.8".parse().unwrap())
        );
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        assert_eq!(
            budget_key("::ffff:203.0.113.7".parse().unwrap()),
            "ip:203.0.113.7"
        );
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let one = budget_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let other = budget_key("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        assert_eq!(one, "ip:2001:db8:1:2::/64");
        assert_eq!(one, other);
        assert_ne!(one, budget_key("2001:db8:1:3::1".parse().unwrap()));
    }
}
