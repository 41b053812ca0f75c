//! Shared set-up for wenke's end-to-end tests: a knowledge base with demo
//! entries on a real qdrant-edge store, the real model, and the real HTTP
//! surface listening on a loopback port.

pub mod browser;
pub mod wechat;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bot::jobs::{JobQueue, StoreJobQueue};
use bot::session::{MemorySessionStore, SessionStore};
use bot::turns::TurnLog;
use bot::{Engine, EngineConfig};
use kb::KnowledgeBase;
use kb::import::parse_jsonl;
use kb::store::PointStore;
use kb::store::edge::EdgeStore;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The model directory: `$WENKE_MODEL_DIR` or `./models`.
pub fn model_dir() -> PathBuf {
    std::env::var_os("WENKE_MODEL_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"))
}

/// Where tests leave artifacts (screenshots): `tests/artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    root().join("tests").join("artifacts")
}

/// A fresh directory under the system's temporary directory that is not
/// removed when the test ends: the turn log's writer and qdrant-edge's
/// shards flush when the runtime drops them, after the test body, and
/// qdrant-edge aborts the process if its files have vanished by then.
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    Ok(tempfile::tempdir()?.keep())
}

/// An engine over a fresh knowledge base in `dir`, with the entries of
/// `fixture` (a JSONL file relative to the workspace root) imported and
/// approved, and sessions in memory.
pub async fn engine_with(dir: &Path, fixture: &str) -> anyhow::Result<Arc<Engine>> {
    let engine = engine_on(dir).await?;
    let text = std::fs::read_to_string(root().join(fixture))
        .with_context(|| format!("reading {fixture}"))?;
    let report = engine
        .kb()
        .import(
            parse_jsonl(&text),
            &kb::ImportOptions {
                actor: "示例编辑".into(),
                approve_as: Some("示例审核".into()),
            },
            &|_, _| {},
        )
        .await?;
    anyhow::ensure!(
        report.errors.is_empty(),
        "fixture errors: {:?}",
        report.errors
    );
    // What the engine derives from published entries (the crops and
    // subjects follow-ups are read with) is refreshed as a server does it
    // periodically; without this the entries just imported would be
    // unknown to it.
    engine.reload().await?;
    Ok(engine)
}

/// Where each end-to-end test binary writes its log: one file per process
/// under `target/test-logs/`. `scripts/check-test-logs.sh` greps them after
/// a full test run for phone numbers and the tests' secrets.
pub fn test_log_dir() -> PathBuf {
    root().join("target").join("test-logs")
}

/// Sends this process's `tracing` events to its file under
/// [`test_log_dir`], once per process: wenke's own crates at `trace` (the
/// most any operator could turn on), everything else at `info`. Logging
/// that cannot start is reported and the test goes on: the log check then
/// fails for want of logs, not this test.
pub fn capture_logs() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let dir = test_log_dir();
        let binary = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tests".into());
        let path = dir.join(format!("{binary}.{}.log", std::process::id()));
        let file = match std::fs::create_dir_all(&dir).and_then(|()| std::fs::File::create(&path)) {
            Ok(file) => file,
            Err(error) => {
                eprintln!("no test log at {}: {error}", path.display());
                return;
            }
        };
        let filter = "info,bot=trace,kb=trace,webhooks=trace,embeddings=trace,prompts=trace,\
                      tower_http=trace,qdrant_edge=warn";
        let installed = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
        if let Err(error) = installed {
            eprintln!("no test log: {error}");
        }
    });
}

/// An engine over whatever the embedded store in `dir` holds, with
/// sessions in memory.
pub async fn engine_on(dir: &Path) -> anyhow::Result<Arc<Engine>> {
    capture_logs();
    engine_over(
        Arc::new(EdgeStore::open(dir)?),
        load_embedder()?,
        Arc::new(MemorySessionStore::new()),
        None,
    )
    .await
}

/// The shipped model (`models/multilingual-e5-small-q4`).
pub fn load_embedder() -> anyhow::Result<embeddings::Embedder> {
    embeddings::Embedder::load(&embeddings::EmbedderConfig {
        model_path: model_dir().join("multilingual-e5-small-q4"),
        ..Default::default()
    })
    .context("loading the model (run scripts/fetch-models.sh)")
}

/// An engine as one instance of a deployment: its own knowledge base (and
/// caches) and turn-log writer over `store`, sessions in `sessions`, jobs
/// in `jobs` (`None`: the embedded queue in `store`).
pub async fn engine_over(
    store: Arc<dyn PointStore>,
    embedder: embeddings::Embedder,
    sessions: Arc<dyn SessionStore>,
    jobs: Option<Arc<dyn JobQueue>>,
) -> anyhow::Result<Arc<Engine>> {
    let jobs = match jobs {
        Some(jobs) => jobs,
        None => Arc::new(StoreJobQueue::open(Arc::clone(&store)).await?),
    };
    let kb = KnowledgeBase::open(
        store,
        embedder,
        kb::dict::builtin_analyzer(),
        kb::Calibration::default(),
    )
    .await?;
    let kb = Arc::new(kb);
    let turns = TurnLog::open(kb.store()).await?;
    let engine = Engine::open(kb, sessions, jobs, turns, EngineConfig::default()).await?;
    Ok(Arc::new(engine))
}

/// Another engine on `first`'s knowledge base (its store and caches) and
/// job queue, with other sessions: a restart with fresh memory, or a
/// second instance on a shared session store.
pub async fn engine_sharing_kb(
    first: &Engine,
    sessions: Arc<dyn SessionStore>,
) -> anyhow::Result<Engine> {
    let kb = Arc::clone(first.kb());
    let turns = TurnLog::open(kb.store()).await?;
    let jobs = Arc::clone(first.jobs());
    Ok(Engine::open(kb, sessions, jobs, turns, EngineConfig::default()).await?)
}

/// The id of the first entry a search for `question` finds.
pub async fn first_hit_id(engine: &Engine, question: &str) -> anyhow::Result<String> {
    engine
        .kb()
        .search(question, &kb::SearchFilter::default())
        .await?
        .hits
        .first()
        .map(|hit| hit.entry.id.to_string())
        .with_context(|| format!("nothing found for {question}"))
}

/// `POST /api/chat` on the server at `base` (`http://127.0.0.1:port`): the
/// status and the JSON body.
pub async fn post_chat(
    base: &str,
    user: &str,
    text: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/chat"))
        .json(&serde_json::json!({ "user_id": user, "text": text }))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// Serves the engine's HTTP surface on a free loopback port, on the
/// current runtime, until the runtime stops.
pub async fn serve(engine: Arc<Engine>) -> anyhow::Result<SocketAddr> {
    serve_with(engine, &bot::http::HttpConfig::default()).await
}

/// [`serve`] with channels configured.
pub async fn serve_with(
    engine: Arc<Engine>,
    channels: &bot::http::HttpConfig,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = bot::http::router(Arc::clone(&engine), channels)?;
    // As `wenke serve` does; the workers run as long as the runtime.
    let _workers = bot::jobs::spawn_workers(
        engine,
        bot::jobs::WorkerConfig {
            idle_poll: std::time::Duration::from_millis(100),
            ..Default::default()
        },
    );
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("test server stopped: {error}");
        }
    });
    Ok(addr)
}

/// An editor console over the engine (cookies without `Secure`: the tests
/// speak plain HTTP), with one account per `(username, role)`, all with
/// `password`.
pub async fn console_with(
    engine: &Arc<Engine>,
    accounts: &[(&str, bot::console::accounts::Role)],
    password: &str,
) -> anyhow::Result<Arc<bot::console::Console>> {
    let console = bot::console::Console::open(
        Arc::clone(engine),
        bot::console::ConsoleConfig {
            secure_cookies: false,
            ..Default::default()
        },
    )
    .await?;
    for (username, role) in accounts {
        console
            .accounts()
            .create(bot::console::accounts::NewAccount {
                username: (*username).into(),
                display_name: String::new(),
                roles: vec![*role],
                password: password.into(),
            })
            .await?;
    }
    Ok(console)
}

/// A console client that keeps its cookies like a browser (by hand: reqwest's cookie
/// store is a feature the rest of the workspace does not build with).
pub struct ConsoleClient {
    client: reqwest::Client,
    base: String,
    cookies: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

/// The CSRF token in a page's first form.
pub fn hidden_csrf(html: &str) -> Option<String> {
    hidden_field(html, "csrf")
}

/// The value of the first field named `name` (`name="…" value="…"`).
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

/// Imports the demo listings of one kind (`kb/demo/capabilities.jsonl` or
/// `kb/demo/demands.jsonl`) into the engine, refusing any row error.
pub async fn import_demo_listings(
    engine: &Engine,
    kind: kb::listing::ListingKind,
) -> anyhow::Result<()> {
    let file = match kind {
        kb::listing::ListingKind::Capabilities => "kb/demo/capabilities.jsonl",
        kb::listing::ListingKind::Demands => "kb/demo/demands.jsonl",
    };
    let text = std::fs::read_to_string(root().join(file))?;
    let report = engine
        .listings()
        .import_jsonl(kind, &text, &|_, _| {})
        .await?;
    anyhow::ensure!(report.errors.is_empty(), "{file}: {:?}", report.errors);
    Ok(())
}

impl ConsoleClient {
    /// A client of the console at `base` (`http://127.0.0.1:port`) that
    /// does not follow redirects, so tests see them.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: base.to_owned(),
            cookies: Default::default(),
        })
    }

    /// The `Cookie` header the client sends.
    pub fn cookie_header(&self) -> String {
        let cookies = self.cookies.lock().expect("lock");
        cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&self, response: &reqwest::Response) {
        let mut cookies = self.cookies.lock().expect("lock");
        for header in response.headers().get_all("set-cookie") {
            let Some(pair) = header.to_str().ok().and_then(|h| h.split(';').next()) else {
                continue;
            };
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if value.is_empty() {
                cookies.remove(name.trim());
            } else {
                cookies.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    /// GETs a path; the status and the body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await?;
        self.keep_cookies(&response);
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// POSTs a form; the status, the redirect target and the body.
    pub async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String, String)> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await?;
        self.keep_cookies(&response);
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((status, location, response.text().await?))
    }

    /// Signs in through the login form; the status (303 when it worked).
    pub async fn sign_in(&self, username: &str, password: &str) -> anyhow::Result<u16> {
        let (_, page) = self.get("/console/login").await?;
        let csrf = hidden_csrf(&page).unwrap_or_default();
        let (status, _, _) = self
            .post(
                "/console/login",
                &[
                    ("csrf", &csrf),
                    ("username", username),
                    ("password", password),
                ],
            )
            .await?;
        Ok(status)
    }

    /// The CSRF token of the signed-in session, from the entry list.
    pub async fn csrf(&self) -> anyhow::Result<String> {
        self.csrf_from("/console/entries").await
    }

    /// The CSRF token of the signed-in session, from a page the user may see.
    pub async fn csrf_from(&self, path: &str) -> anyhow::Result<String> {
        let (_, page) = self.get(path).await?;
        hidden_csrf(&page).ok_or_else(|| anyhow::anyhow!("no CSRF token on {path}"))
    }
}
