//! `wenke serve`: the channels' settings, the HTTP surface of
//! [`bot::http`] on one listener, until asked to stop.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::HeaderName;
use bot::Engine;
use bot::http::{HttpConfig, router, watch_prompts};
use bot::ip_limit::IpLimit;
use bot::jobs::{WorkerConfig, spawn_workers};
use bot::retention::{PRUNE_EVERY, TurnRetention, prune_turns};
use bot::turns::TurnLog;
use bot::upkeep::{self, IndexToKeep, keep_index_optimized};
use webhooks::telegram::{TelegramConfig, TelegramMode};
use webhooks::wechat::account::AccountConfig;
use webhooks::wechat::service::{
    DEFAULT_API_BASE, DEFAULT_WECOM_API_BASE, ServiceConfig, ServiceKind,
};

/// What `wenke serve` listens on and which channels it serves. A channel
/// without its token is off, and its path answers 404.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WENKE_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Requests per minute one address may make to the web chat, the APIs
    /// and the console (0: no limit). The channels' webhooks are exempt.
    #[arg(long, env = "WENKE_IP_LIMIT", default_value_t = 600)]
    ip_limit: u32,
    /// The header a trusted reverse proxy sets to the client's address
    /// (e.g. `X-Real-IP`); without it the connection's peer address counts.
    #[arg(long, env = "WENKE_CLIENT_IP_HEADER")]
    client_ip_header: Option<String>,
    /// Days the turn log keeps every turn (0: forever). Of older days it
    /// keeps the report figures and the rated turns.
    #[arg(long, env = "WENKE_TURN_RETENTION_DAYS", default_value_t = 365)]
    turn_retention_days: u32,
    /// The WeChat Official Account's server token (enables `/wechat`).
    #[arg(long, env = "WENKE_WECHAT_TOKEN", hide_env_values = true)]
    wechat_token: Option<String>,
    /// Its 43-character EncodingAESKey (compatible and safe mode).
    #[arg(long, env = "WENKE_WECHAT_AES_KEY", hide_env_values = true)]
    wechat_aes_key: Option<String>,
    /// Its AppID.
    #[arg(long, env = "WENKE_WECHAT_APPID", default_value = "")]
    wechat_appid: String,
    /// Its AppSecret: enables customer-service messages (answers slower
    /// than WeChat's 5 seconds, long answers, notices).
    #[arg(long, env = "WENKE_WECHAT_SECRET", hide_env_values = true)]
    wechat_secret: Option<String>,
    /// The WeChat API's base URL.
    #[arg(long, env = "WENKE_WECHAT_API_BASE", default_value = DEFAULT_API_BASE)]
    wechat_api_base: String,
    /// Milliseconds a passive WeChat or WeCom reply may take before the
    /// answer follows by message API (or waits for the retry).
    #[arg(long, env = "WENKE_WECHAT_REPLY_BUDGET_MS", default_value_t = 4000)]
    wechat_reply_budget_ms: u64,
    /// The WeCom app's callback token (enables `/wecom`).
    #[arg(long, env = "WENKE_WECOM_TOKEN", hide_env_values = true)]
    wecom_token: Option<String>,
    /// The WeCom app's EncodingAESKey.
    #[arg(long, env = "WENKE_WECOM_AES_KEY", hide_env_values = true)]
    wecom_aes_key: Option<String>,
    /// The WeCom corp id (the receive id of its messages).
    #[arg(long, env = "WENKE_WECOM_CORP_ID", default_value = "")]
    wecom_corp_id: String,
    /// The WeCom app's AgentId; with its secret, enables app messages
    /// (late and long answers, notices).
    #[arg(long, env = "WENKE_WECOM_AGENT_ID")]
    wecom_agent_id: Option<i64>,
    /// The WeCom app's Secret.
    #[arg(long, env = "WENKE_WECOM_SECRET", hide_env_values = true)]
    wecom_secret: Option<String>,
    /// The WeCom API's base URL.
    #[arg(long, env = "WENKE_WECOM_API_BASE", default_value = DEFAULT_WECOM_API_BASE)]
    wecom_api_base: String,
    /// The Telegram bot token from @BotFather (enables Telegram).
    #[arg(long, env = "WENKE_TELEGRAM_TOKEN", hide_env_values = true)]
    telegram_token: Option<String>,
    /// The Bot API's base URL (default Telegram's).
    #[arg(long, env = "WENKE_TELEGRAM_API_URL")]
    telegram_api_url: Option<String>,
    /// The public URL Telegram posts updates to, ending in `/telegram`:
    /// webhook mode. Without it the bot uses long polling.
    #[arg(long, env = "WENKE_TELEGRAM_WEBHOOK_URL")]
    telegram_webhook_url: Option<String>,
    /// The webhook's secret token (default: derived from the bot token,
    /// the same on every instance).
    #[arg(long, env = "WENKE_TELEGRAM_SECRET", hide_env_values = true)]
    telegram_secret: Option<String>,
    /// Sends the console's cookies without `Secure`, for plain-HTTP
    /// development only (behind HTTPS, leave it off).
    #[arg(long, env = "WENKE_CONSOLE_INSECURE_COOKIES")]
    console_insecure_cookies: bool,
    /// Bearer token of the staff API (`/api/staff/*`: listings in full,
    /// status changes, claims); the staff API is off without one.
    #[arg(long, env = "WENKE_STAFF_TOKEN", hide_env_values = true)]
    staff_token: Option<String>,
}

/// A setting given as an empty string (an unset variable in a compose
/// file) is no setting.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// The channels as configured, their message APIs registered with the
/// engine. Telegram is built but not started.
async fn http_config(
    engine: &Arc<Engine>,
    args: ServeArgs,
    prompts_dir: Option<PathBuf>,
) -> anyhow::Result<HttpConfig> {
    let reply_budget = Duration::from_millis(args.wechat_reply_budget_ms);
    let interim_text = engine.render("in_progress.j2", ())?;
    let unavailable_text = engine.render("unavailable.j2", ())?;
    let console = bot::console::Console::open(
        Arc::clone(engine),
        bot::console::ConsoleConfig {
            secure_cookies: !args.console_insecure_cookies,
            pages_dir: prompts_dir,
            ..Default::default()
        },
    )
    .await
    .context("opening the editor console")?;
    let client_ip_header = match given(args.client_ip_header) {
        Some(name) => Some(
            HeaderName::try_from(name.trim())
                .with_context(|| format!("WENKE_CLIENT_IP_HEADER is not a header name: {name}"))?,
        ),
        None => None,
    };
    let ip_limit = (args.ip_limit > 0).then(|| IpLimit {
        per_minute: args.ip_limit,
        client_ip_header,
    });
    let mut config = HttpConfig {
        staff_token: given(args.staff_token),
        console: Some(console),
        ip_limit,
        ..Default::default()
    };
    if let Some(token) = given(args.wechat_token) {
        let service = match given(args.wechat_secret) {
            Some(secret) => Some(bot::http::message_service(
                engine,
                ServiceConfig {
                    kind: ServiceKind::OfficialAccount,
                    app_id: args.wechat_appid.clone(),
                    secret,
                    api_base: args.wechat_api_base,
                },
            )?),
            None => None,
        };
        config.wechat = Some(AccountConfig {
            token,
            encoding_aes_key: given(args.wechat_aes_key),
            app_id: args.wechat_appid,
            reply_budget,
            service,
            interim_text: interim_text.clone(),
            unavailable_text: unavailable_text.clone(),
        });
    }
    if let Some(token) = given(args.wecom_token) {
        let aes_key = given(args.wecom_aes_key);
        anyhow::ensure!(
            aes_key.is_some() && !args.wecom_corp_id.is_empty(),
            "WeCom needs WENKE_WECOM_AES_KEY and WENKE_WECOM_CORP_ID as well as the token"
        );
        let service = match (args.wecom_agent_id, given(args.wecom_secret)) {
            (Some(agent_id), Some(secret)) => Some(bot::http::message_service(
                engine,
                ServiceConfig {
                    kind: ServiceKind::WeCom { agent_id },
                    app_id: args.wecom_corp_id.clone(),
                    secret,
                    api_base: args.wecom_api_base,
                },
            )?),
            (None, None) => None,
            _ => anyhow::bail!(
                "WeCom app messages need both WENKE_WECOM_AGENT_ID and WENKE_WECOM_SECRET"
            ),
        };
        config.wecom = Some(AccountConfig {
            token,
            encoding_aes_key: aes_key,
            app_id: args.wecom_corp_id,
            reply_budget,
            service,
            interim_text,
            unavailable_text,
        });
    }
    if let Some(token) = given(args.telegram_token) {
        let mode = match (
            given(args.telegram_webhook_url),
            given(args.telegram_secret),
        ) {
            (Some(public_url), Some(secret)) => TelegramMode::Webhook { public_url, secret },
            (Some(public_url), None) => {
                TelegramMode::webhook_with_derived_secret(public_url, &token)
            }
            (None, _) => TelegramMode::Polling,
        };
        config.telegram = Some(bot::http::telegram_bot(
            engine,
            TelegramConfig {
                token,
                api_url: given(args.telegram_api_url),
                mode,
                texts: bot::http::telegram_texts(engine)?,
            },
        )?);
    }
    Ok(config)
}

/// How long a stopping server waits for running background jobs; what is
/// still running then runs again after the restart.
const JOB_GRACE: Duration = Duration::from_secs(10);

/// Serves until Ctrl-C or SIGTERM, then finishes the requests in flight
/// and the background jobs running.
pub async fn serve(
    engine: Arc<Engine>,
    args: ServeArgs,
    prompts_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let addr = args.addr;
    let retention = NonZeroU32::new(args.turn_retention_days).map(|days| TurnRetention { days });
    let channels = http_config(&engine, args, prompts_dir.clone()).await?;
    let app = router(Arc::clone(&engine), &channels)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    watch_prompts(engine.clone(), prompts_dir);
    eprintln!("wenke listening on http://{addr} (editor console at /console)");
    if channels.wechat.is_some() {
        eprintln!("WeChat Official Account endpoint at http://{addr}/wechat");
    }
    if channels.wecom.is_some() {
        eprintln!("WeCom endpoint at http://{addr}/wecom");
    }
    // Listening first: in webhook mode Telegram may post at once.
    if let Some(telegram) = &channels.telegram {
        telegram
            .start()
            .await
            .context("starting the Telegram bot")?;
        if telegram.uses_webhook() {
            eprintln!("Telegram webhook at http://{addr}/telegram");
        } else {
            eprintln!("Telegram bot polling for updates");
        }
    }
    let workers = spawn_workers(Arc::clone(&engine), WorkerConfig::default());
    let turns = engine.turns().clone();
    let pruning =
        retention.map(|retention| tokio::spawn(prune_periodically(turns.clone(), retention)));
    let index_upkeep = engine.kb().index_needs_optimizing().then(|| {
        let index: Arc<dyn IndexToKeep> = engine.kb().clone();
        tokio::spawn(keep_index_optimized(index, upkeep::CHECK_EVERY))
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    if let Some(pruning) = pruning {
        pruning.abort();
    }
    if let Some(index_upkeep) = index_upkeep {
        index_upkeep.abort();
    }
    workers.stop(JOB_GRACE).await;
    turns.flush().await?;
    Ok(())
}

/// Prunes the turn log now and every [`PRUNE_EVERY`] after. Stopping the
/// task mid-way is safe: each day's tally is stored before its turns go.
async fn prune_periodically(turns: TurnLog, retention: TurnRetention) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match prune_turns(&turns, retention).await {
            Ok(pruned) if pruned.turns > 0 => tracing::info!(
                days = pruned.days.len(),
                turns = pruned.turns,
                "turn log pruned to its retention period"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "pruning the turn log failed; next try later"),
        }
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
