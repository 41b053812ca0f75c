//! The editor console at `/console`: server-rendered pages (no script at
//! all, so every control is a link, a field or a button, usable by
//! keyboard) over the knowledge base's editorial workflow.
//!
//! - Accounts with roles ([`accounts`]): editor, reviewer, service staff,
//!   admin; passwords hashed with argon2id; the first admin comes from
//!   `wenke console add-user`.
//! - Sessions: a random token in an HttpOnly, SameSite=Strict cookie
//!   (Secure unless configured off for plain-HTTP development), stored in
//!   the session store by its SHA-256 (Redis in server mode, so any
//!   instance serves any editor).
//! - CSRF: every state-changing request is a POST carrying the session's
//!   CSRF token in a form field ([`Posted`] checks it before the handler
//!   runs); the login form uses a double-submit cookie.
//! - Sign-in attempts are limited per username (5 per 15 minutes).
//! - Without a session every page answers 401 with the sign-in form; with
//!   one but without the role, 403.
//!
//! Pages are templates in `prompts/console/` (overridable like the chat
//! texts); errors render `error.html`.

pub mod accounts;
mod demands;
mod dictionary;
mod entries;
mod feedback;
mod hit_test;
mod import;
mod jobs;
mod markdown;
mod push;
mod reports;
mod unanswered;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Engine;
use accounts::{Account, AccountStore, Role};

/// The session cookie.
const SESSION_COOKIE: &str = "wenke_console";
/// The login form's double-submit cookie.
const LOGIN_CSRF_COOKIE: &str = "wenke_login_csrf";
/// Sign-in attempts allowed per username per [`LOGIN_WINDOW`].
const LOGIN_ATTEMPTS: u32 = 5;
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Form bodies larger than this are refused (an entry is far smaller).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// How the console behaves.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Mark cookies `Secure` (only sent over HTTPS). Off only for plain-HTTP
    /// development and tests.
    pub secure_cookies: bool,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// A directory overriding the shipped pages (`<dir>/console/*.html`).
    pub pages_dir: Option<std::path::PathBuf>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            secure_cookies: true,
            session_ttl: Duration::from_secs(8 * 60 * 60),
            pages_dir: None,
        }
    }
}

/// The console's state.
pub struct Console {
    engine: Arc<Engine>,
    accounts: AccountStore,
    pages: prompts::ConsolePages,
    config: ConsoleConfig,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a console request failed; rendered as `error.html` (or, for 401, the
/// sign-in form) with its status.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No valid session.
    #[error("请先登录")]
    Unauthorized,
    /// Signed in, but without the role (or a wrong CSRF token).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (a workflow rule).
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts.
    #[error("尝试次数过多，请 15 分钟后再试")]
    TooManyAttempts,
    /// A store or the model failed.
    #[error("服务暂时不可用：{0}")]
    Unavailable(String),
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<kb::KbError> for ConsoleError {
    fn from(error: kb::KbError) -> Self {
        match error {
            kb::KbError::Workflow(error) => Self::Conflict(error.to_string()),
            kb::KbError::NotFound(id) => Self::NotFound(format!("没有条目 {id}")),
            kb::KbError::BadFilter(message) => Self::BadRequest(message),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<accounts::AccountError> for ConsoleError {
    fn from(error: accounts::AccountError) -> Self {
        match error {
            accounts::AccountError::Store(error) => Self::Unavailable(error.to_string()),
            other => Self::BadRequest(other.to_string()),
        }
    }
}

impl From<crate::session::SessionError> for ConsoleError {
    fn from(error: crate::session::SessionError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<prompts::PromptError> for ConsoleError {
    fn from(error: prompts::PromptError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// The error as it travels from a handler to [`render_errors`], which has
/// the state to render it.
#[derive(Clone)]
struct ErrorPage {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status(),
            message: self.to_string(),
        };
        let mut response = (page.status, page.message.clone()).into_response();
        response.extensions_mut().insert(page);
        response
    }
}

/// Renders every [`ConsoleError`] as a page.
async fn render_errors(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let Some(page) = response.extensions().get::<ErrorPage>().cloned() else {
        return response;
    };
    if page.status == StatusCode::UNAUTHORIZED {
        return console.login_page(page.status, None);
    }
    let html = console
        .pages
        .render(
            "error.html",
            serde_json::json!({ "status": page.status.as_u16(), "message": page.message }),
        )
        .unwrap_or_else(|_| page.message.clone());
    (page.status, Html(html)).into_response()
}

/// A time as the console shows it: `2026-12-02 10:16`, China time.
fn china_time(at: time::OffsetDateTime) -> String {
    crate::china::minute(at)
}

/// A form or query field's text, trimmed; `None` when blank.
fn non_blank(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A city or prefecture field: `None` when blank, else the full name of a
/// city of the province ("广元" → "广元市"); any other name is a bad request.
fn city_field(text: &str) -> Result<Option<String>, ConsoleError> {
    let Some(name) = non_blank(text) else {
        return Ok(None);
    };
    kb::region::Regions::builtin()
        .city(&name)
        .map(Some)
        .ok_or_else(|| ConsoleError::BadRequest(format!("没有市州 {name}")))
}

/// A channel's name for staff.
fn channel_label(channel: webhooks::message::Channel) -> &'static str {
    use webhooks::message::Channel;
    match channel {
        Channel::Wechat => "微信公众号",
        Channel::Wecom => "企业微信",
        Channel::Telegram => "Telegram",
        Channel::Web => "网页",
        Channel::Cli => "命令行",
    }
}

/// A Unix time as the console shows it; empty when out of range.
fn unix_time(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .map(china_time)
        .unwrap_or_default()
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn session_key(token: &str) -> String {
    format!(
        "console:session:{}",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What a signed-in session holds.
#[derive(serde::Serialize, Deserialize)]
struct StoredSession {
    username: String,
    csrf: String,
}

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Their account.
    pub account: Account,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    session_key: String,
}

impl Signed {
    /// Refuses users without the role.
    pub fn require(&self, role: Role) -> Result<(), ConsoleError> {
        if self.account.has(role) {
            return Ok(());
        }
        Err(ConsoleError::Forbidden(format!(
            "这个操作需要“{}”角色",
            role.label()
        )))
    }

    /// The user as page templates see them.
    fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "username": self.account.username,
            "display_name": self.account.display_name,
            "roles": self.account.roles.iter().map(|r| r.label()).collect::<Vec<_>>(),
            "editor": self.account.has(Role::Editor),
            "reviewer": self.account.has(Role::Reviewer),
            "admin": self.account.has(Role::Admin),
            "staff": self.account.has(Role::Staff),
        })
    }
}

impl FromRequestParts<Arc<Console>> for Signed {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(ConsoleError::Unauthorized);
        };
        let key = session_key(&token);
        let Some(stored) = console.engine.sessions().get(&key).await? else {
            return Err(ConsoleError::Unauthorized);
        };
        let Ok(stored) = serde_json::from_str::<StoredSession>(&stored) else {
            return Err(ConsoleError::Unauthorized);
        };
        let Some(account) = console.accounts.get(&stored.username).await? else {
            return Err(ConsoleError::Unauthorized);
        };
        if account.disabled {
            return Err(ConsoleError::Unauthorized);
        }
        Ok(Self {
            account,
            csrf: stored.csrf,
            session_key: key,
        })
    }
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// A signed-in user's form post whose CSRF token matched: handlers of
/// state-changing requests take this, so none can forget the check.
pub struct Posted<T> {
    /// Who posted.
    pub user: Signed,
    /// The form.
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<Console>> for Posted<T> {
    type Rejection = ConsoleError;

    async fn from_request(
        request: Request,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let user = Signed::from_request_parts(&mut parts, console).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), console)
            .await
            .map_err(|_| ConsoleError::BadRequest("表单过大或无法读取".into()))?;
        let field: CsrfField = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| ConsoleError::BadRequest("表单格式不对".into()))?;
        if !same(&field.csrf, &user.csrf) {
            return Err(ConsoleError::Forbidden(
                "页面已过期（CSRF 校验失败），请刷新后重试".into(),
            ));
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|error| ConsoleError::BadRequest(format!("表单格式不对：{error}")))?;
        Ok(Self { user, form })
    }
}

impl Console {
    /// The console over the engine; accounts in the engine's point store.
    pub async fn open(
        engine: Arc<Engine>,
        config: ConsoleConfig,
    ) -> Result<Arc<Self>, ConsoleError> {
        let accounts = AccountStore::open(engine.kb().store())
            .await
            .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
        let (pages, problems) = prompts::ConsolePages::load(config.pages_dir.as_deref());
        for problem in problems {
            tracing::warn!(%problem, "console page override ignored");
        }
        Ok(Arc::new(Self {
            engine,
            accounts,
            pages,
            config,
        }))
    }

    /// The accounts.
    pub fn accounts(&self) -> &AccountStore {
        &self.accounts
    }

    fn cookie_attributes(&self) -> &'static str {
        if self.config.secure_cookies {
            "Path=/console; HttpOnly; SameSite=Strict; Secure"
        } else {
            "Path=/console; HttpOnly; SameSite=Strict"
        }
    }

    /// A page for a signed-in user: the template gets `user`, `csrf` and
    /// the context's fields.
    fn page(
        &self,
        user: &Signed,
        template: &str,
        mut context: serde_json::Value,
    ) -> Result<Response, ConsoleError> {
        if let Some(map) = context.as_object_mut() {
            map.insert("user".into(), user.view());
            map.insert("csrf".into(), user.csrf.clone().into());
        }
        Ok(Html(self.pages.render(template, context)?).into_response())
    }

    /// The sign-in form with a fresh double-submit token.
    fn login_page(&self, status: StatusCode, error: Option<&str>) -> Response {
        let token = random_token();
        let html = self
            .pages
            .render(
                "login.html",
                serde_json::json!({ "csrf": token, "error": error }),
            )
            .unwrap_or_else(|e| e.to_string());
        let mut response = (status, Html(html)).into_response();
        let cookie = format!(
            "{LOGIN_CSRF_COOKIE}={token}; {}; Max-Age=3600",
            self.cookie_attributes()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }
}

async fn login_form(State(console): State<Arc<Console>>) -> Response {
    console.login_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn login(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return Err(ConsoleError::BadRequest("表单格式不对".into()));
    };
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&form.csrf, &expected) {
        return Ok(console.login_page(StatusCode::FORBIDDEN, Some("页面已过期，请重新登录")));
    }
    let username = form.username.trim().to_ascii_lowercase();
    let attempts_key = format!("console:login:{username}");
    if !console
        .engine
        .sessions()
        .allow(&attempts_key, LOGIN_ATTEMPTS, LOGIN_WINDOW)
        .await?
    {
        tracing::warn!(username, "console: sign-in attempts over the limit");
        return Err(ConsoleError::TooManyAttempts);
    }
    let Some(account) = console
        .accounts
        .authenticate(&username, &form.password)
        .await?
    else {
        tracing::info!(username, "console: sign-in refused");
        return Ok(console.login_page(StatusCode::UNAUTHORIZED, Some("用户名或密码不对")));
    };
    let token = random_token();
    let stored = StoredSession {
        username: account.username.clone(),
        csrf: random_token(),
    };
    let stored = serde_json::to_string(&stored).unwrap_or_default();
    console
        .engine
        .sessions()
        .put(&session_key(&token), &stored, console.config.session_ttl)
        .await?;
    tracing::info!(username = account.username, "console: signed in");
    let mut response = Redirect::to("/console/entries").into_response();
    let cookies = [
        format!(
            "{SESSION_COOKIE}={token}; {}; Max-Age={}",
            console.cookie_attributes(),
            console.config.session_ttl.as_secs()
        ),
        format!(
            "{LOGIN_CSRF_COOKIE}=; {}; Max-Age=0",
            console.cookie_attributes()
        ),
    ];
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

#[derive(Deserialize)]
struct Empty {}

async fn logout(
    State(console): State<Arc<Console>>,
    posted: Posted<Empty>,
) -> Result<Response, ConsoleError> {
    console
        .engine
        .sessions()
        .release(&posted.user.session_key)
        .await?;
    let mut response = Redirect::to("/console/login").into_response();
    let cookie = format!(
        "{SESSION_COOKIE}=; {}; Max-Age=0",
        console.cookie_attributes()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn home(_user: Signed) -> Redirect {
    Redirect::to("/console/entries")
}

/// Pages never leave the console: no script, no frames, no other origins.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The console's routes, each with the role it needs (besides being signed
/// in), for the access tests; `None`: any signed-in user, or (login) anyone.
pub const ROUTES: &[(&str, &str, Option<Role>)] = &[
    ("GET", "/console", None),
    ("GET", "/console/entries", None),
    ("GET", "/console/entries/new", Some(Role::Editor)),
    ("POST", "/console/entries", Some(Role::Editor)),
    ("GET", "/console/entries/{id}", None),
    ("GET", "/console/entries/{id}/edit", Some(Role::Editor)),
    ("POST", "/console/entries/{id}/edit", Some(Role::Editor)),
    ("POST", "/console/entries/{id}/submit", Some(Role::Editor)),
    ("POST", "/console/entries/{id}/restore", Some(Role::Editor)),
    (
        "POST",
        "/console/entries/{id}/approve",
        Some(Role::Reviewer),
    ),
    ("POST", "/console/entries/{id}/reject", Some(Role::Reviewer)),
    ("POST", "/console/entries/{id}/retire", Some(Role::Reviewer)),
    ("GET", "/console/review", Some(Role::Reviewer)),
    ("GET", "/console/unanswered", Some(Role::Editor)),
    ("POST", "/console/unanswered/draft", Some(Role::Editor)),
    ("GET", "/console/import", Some(Role::Editor)),
    ("POST", "/console/import", Some(Role::Editor)),
    ("GET", "/console/hit-test", Some(Role::Editor)),
    ("GET", "/console/feedback", Some(Role::Editor)),
    ("GET", "/console/dictionary", Some(Role::Editor)),
    ("GET", "/console/push", Some(Role::Editor)),
    ("POST", "/console/push", Some(Role::Editor)),
    ("POST", "/console/dictionary", Some(Role::Editor)),
    ("GET", "/console/demands", Some(Role::Staff)),
    ("GET", "/console/demands/{number}", Some(Role::Staff)),
    (
        "POST",
        "/console/demands/{number}/update",
        Some(Role::Staff),
    ),
    ("POST", "/console/demands/{number}/claim", Some(Role::Staff)),
    ("GET", "/console/capabilities", Some(Role::Staff)),
    ("GET", "/console/reports", Some(Role::Staff)),
    ("GET", "/console/reports/export", Some(Role::Staff)),
    ("GET", "/console/jobs", Some(Role::Admin)),
    ("POST", "/console/jobs/retry", Some(Role::Admin)),
    ("POST", "/console/logout", None),
];

/// The console's routes over its state.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/console", get(home))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/entries", get(entries::list).post(entries::create))
        .route("/console/entries/new", get(entries::new_form))
        .route("/console/entries/{id}", get(entries::show))
        .route(
            "/console/entries/{id}/edit",
            get(entries::edit_form).post(entries::save),
        )
        .route("/console/entries/{id}/submit", post(entries::submit))
        .route("/console/entries/{id}/restore", post(entries::restore))
        .route("/console/entries/{id}/approve", post(entries::approve))
        .route("/console/entries/{id}/reject", post(entries::reject))
        .route("/console/entries/{id}/retire", post(entries::retire))
        .route("/console/review", get(entries::review_queue))
        .route("/console/unanswered", get(unanswered::groups))
        .route("/console/unanswered/draft", post(unanswered::draft))
        .route(
            "/console/import",
            get(import::form)
                .post(import::import)
                .layer(axum::extract::DefaultBodyLimit::max(
                    import::MAX_IMPORT_BYTES,
                )),
        )
        .route("/console/hit-test", get(hit_test::page))
        .route("/console/feedback", get(feedback::page))
        .route("/console/push", get(push::page).post(push::send))
        .route(
            "/console/dictionary",
            get(dictionary::page).post(dictionary::edit),
        )
        .route("/console/demands", get(demands::board))
        .route("/console/demands/{number}", get(demands::show))
        .route("/console/demands/{number}/update", post(demands::update))
        .route("/console/demands/{number}/claim", post(demands::claim))
        .route("/console/capabilities", get(demands::capabilities))
        .route("/console/reports", get(reports::page))
        .route("/console/reports/export", get(reports::export))
        .route("/console/jobs", get(jobs::page))
        .route("/console/jobs/retry", post(jobs::retry))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            render_errors,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(console)
}
