//! `wenke serve`: binds the HTTP surface of [`bot::http`] and serves until
//! asked to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bot::Engine;
use bot::http::{HttpConfig, router, watch_prompts};

/// Serves until Ctrl-C or SIGTERM, then finishes the requests in flight.
pub async fn serve(
    engine: Arc<Engine>,
    addr: SocketAddr,
    prompts_dir: Option<PathBuf>,
    channels: HttpConfig,
) -> anyhow::Result<()> {
    let app = router(Arc::clone(&engine), &channels)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    watch_prompts(engine.clone(), prompts_dir);
    eprintln!("wenke listening on http://{addr}");
    if channels.wechat.is_some() {
        eprintln!("WeChat Official Account endpoint at http://{addr}/wechat");
    }
    if channels.wecom.is_some() {
        eprintln!("WeCom endpoint at http://{addr}/wecom");
    }
    let turns = engine.turns().clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    turns.flush().await?;
    Ok(())
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
