//! Conversation state that outlives one message: the topic of the last
//! answer, pending "你是想问" choices, the user's region; plus per-user rate
//! limits and per-message dedup, which need the same kind of store.
//!
//! [`SessionStore`] has two implementations: [`MemorySessionStore`]
//! (in-process, the embedded default) and [`RedisSessionStore`] (shared by
//! every instance of a multi-instance deployment). Both expire sessions
//! after a period of silence.
//!
//! Two messages of one user handled at the same moment each load the
//! session, and the later save wins. Chat users wait for a reply before
//! writing again, so this is accepted rather than locked against.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use webhooks::message::UserKey;

/// How long a silent session is kept.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);

/// What the conversation is about: the last answered or offered entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// The question the user asked, after follow-up resolution.
    pub query: String,
    /// The entry that answered it, if one did.
    pub entry_id: Option<String>,
    /// That entry's question.
    pub entry_question: Option<String>,
    /// Crops or animals the conversation is about (standard names).
    pub crops: Vec<String>,
    /// Other subject words (diseases, pests, hazards) of the topic.
    pub subjects: Vec<String>,
}

/// One candidate of a "你是想问".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// The entry.
    pub entry_id: String,
    /// Its question, as shown.
    pub question: String,
}

/// The state of one user's conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The current topic, for follow-ups.
    #[serde(default)]
    pub topic: Option<Topic>,
    /// Candidates offered by the last "你是想问", answered by a number.
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// The entry last answered, for "详细".
    #[serde(default)]
    pub last_answer: Option<String>,
    /// The turn last answered, for feedback typed as text.
    #[serde(default)]
    pub last_answer_turn: Option<String>,
    /// The last turn without an answer, for "有答案时通知我".
    #[serde(default)]
    pub last_abstain_turn: Option<String>,
    /// Where the user is, from a shared location or a stated region.
    #[serde(default)]
    pub region: Option<String>,
    /// Whether the user has a filing form open, as far as this session
    /// knows (the form itself is kept elsewhere; see `listings`).
    #[serde(default)]
    pub form: FormPresence,
}

/// What a session knows of its user's filing form, so that the form
/// store is read only when a form may be open. The form store stays the
/// truth: a session lost or expired knows nothing, and the store is read.
///
/// The invariant: a session says [`FormPresence::Absent`] only after the
/// store was found without a form, or the form was ended, with no form
/// saved since. Two messages of one user handled at once can break it
/// (the later session save wins, as for the rest of the session); the
/// form is then overlooked until the session expires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormPresence {
    /// Not known: read the form store.
    #[default]
    Unknown,
    /// No form is open.
    Absent,
    /// A form was saved and not yet ended.
    Open,
}

/// Errors from a session store.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Redis failed or timed out.
    #[error("session store: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored session could not be read back.
    #[error("corrupt session for {key}: {message}")]
    Corrupt {
        /// The storage key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Where sessions, rate limits and dedup marks live.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The store's kind, for logs and health checks.
    fn kind(&self) -> &'static str;

    /// The user's session, or a fresh one.
    async fn load(&self, user: &UserKey) -> Result<Session, SessionError>;

    /// Stores the user's session for [`SESSION_TTL`].
    async fn save(&self, user: &UserKey, session: &Session) -> Result<(), SessionError>;

    /// Drops the user's session (they unfollowed).
    async fn forget(&self, user: &UserKey) -> Result<(), SessionError>;

    /// Counts one event against `key`'s budget of `limit` per `window`
    /// (a fixed window starting at the first event); false when over it.
    async fn allow(&self, key: &str, limit: u32, window: Duration) -> Result<bool, SessionError>;

    /// Claims `key` for `ttl`; true for the first claim only.
    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, SessionError>;

    /// Gives up a claim, so the next claim of `key` succeeds.
    async fn release(&self, key: &str) -> Result<(), SessionError>;

    /// Stores a value under `key` for `ttl`.
    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionError>;

    /// The value stored under `key`, if it has not expired.
    async fn get(&self, key: &str) -> Result<Option<String>, SessionError>;

    /// The next value of the counter `key`, and at least `floor + 1`;
    /// never the same value twice for one store. Counters do not expire.
    async fn next_serial(&self, key: &str, floor: u64) -> Result<u64, SessionError>;
}

fn session_key(user: &UserKey) -> String {
    format!("session:{}", user.storage_key())
}

fn decode(key: &str, text: &str) -> Result<Session, SessionError> {
    serde_json::from_str(text).map_err(|e| SessionError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

fn encode(session: &Session) -> String {
    // A struct of strings and vectors always serialises.
    serde_json::to_string(session).unwrap_or_else(|_| "{}".to_owned())
}

/// The session store as the channels' shared cache (WeChat's access token,
/// send windows, follow-up claims; Telegram's long button texts and
/// answered updates). A failing store reads as empty and
/// drops writes: the channel then fetches a token again or keeps a text for
/// later, which is safe.
pub struct SessionCache(pub std::sync::Arc<dyn SessionStore>);

#[async_trait::async_trait]
impl webhooks::message::SharedCache for SessionCache {
    async fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).await.ok().flatten()
    }

    async fn put(&self, key: &str, value: &str, ttl: Duration) {
        if let Err(error) = self.0.put(key, value, ttl).await {
            tracing::warn!(%error, "shared cache write dropped");
        }
    }

    async fn claim(&self, key: &str, ttl: Duration) -> bool {
        self.0.claim(key, ttl).await.unwrap_or(false)
    }
}

// ----- in memory -----

struct Slot {
    value: String,
    expires: Instant,
}

/// Sessions in this process's memory: the embedded default. Lost on
/// restart, which for a chat session (a topic, pending choices) only means
/// the next message starts afresh.
#[derive(Default)]
pub struct MemorySessionStore {
    slots: Mutex<HashMap<String, Slot>>,
    counters: Mutex<HashMap<String, (u32, Instant)>>,
    serials: Mutex<HashMap<String, u64>>,
    writes: std::sync::atomic::AtomicU64,
}

/// Expired slots are swept once every this many writes, so memory stays
/// bounded by the number of users active within the TTL.
const SWEEP_EVERY: u64 = 4096;

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&self, key: &str, value: String, ttl: Duration) {
        let now = Instant::now();
        let mut slots = self.slots.lock();
        slots.insert(
            key.to_owned(),
            Slot {
                value,
                expires: now + ttl,
            },
        );
        let writes = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if writes.is_multiple_of(SWEEP_EVERY) {
            slots.retain(|_, slot| slot.expires > now);
            self.counters.lock().retain(|_, (_, end)| *end > now);
        }
    }

    fn value(&self, key: &str) -> Option<String> {
        let slots = self.slots.lock();
        let slot = slots.get(key)?;
        (slot.expires > Instant::now()).then(|| slot.value.clone())
    }
}

#[async_trait::async_trait]
impl SessionStore for MemorySessionStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, user: &UserKey) -> Result<Session, SessionError> {
        let key = session_key(user);
        match self.value(&key) {
            Some(text) => decode(&key, &text),
            None => Ok(Session::default()),
        }
    }

    async fn save(&self, user: &UserKey, session: &Session) -> Result<(), SessionError> {
        self.set(&session_key(user), encode(session), SESSION_TTL);
        Ok(())
    }

    async fn forget(&self, user: &UserKey) -> Result<(), SessionError> {
        self.slots.lock().remove(&session_key(user));
        Ok(())
    }

    async fn allow(&self, key: &str, limit: u32, window: Duration) -> Result<bool, SessionError> {
        let now = Instant::now();
        let mut counters = self.counters.lock();
        let (count, end) = counters.entry(key.to_owned()).or_insert((0, now + window));
        if *end <= now {
            *count = 0;
            *end = now + window;
        }
        *count += 1;
        Ok(*count <= limit)
    }

    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, SessionError> {
        let now = Instant::now();
        let mut slots = self.slots.lock();
        if slots.get(key).is_some_and(|slot| slot.expires > now) {
            return Ok(false);
        }
        slots.insert(
            key.to_owned(),
            Slot {
                value: String::new(),
                expires: now + ttl,
            },
        );
        Ok(true)
    }

    async fn release(&self, key: &str) -> Result<(), SessionError> {
        self.slots.lock().remove(key);
        Ok(())
    }

    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionError> {
        self.set(key, value.to_owned(), ttl);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, SessionError> {
        Ok(self.value(key))
    }

    async fn next_serial(&self, key: &str, floor: u64) -> Result<u64, SessionError> {
        let mut serials = self.serials.lock();
        let last = serials.entry(key.to_owned()).or_insert(0);
        *last = (*last).max(floor) + 1;
        Ok(*last)
    }
}

// ----- Redis -----

/// How long one Redis command may take before the engine gives up on it:
/// a slow Redis must not push a reply past WeChat's budget.
const REDIS_TIMEOUT: Duration = Duration::from_millis(800);

/// A reconnecting connection to `url` whose commands fail after
/// [`REDIS_TIMEOUT`] (shared by the session store and the job queue).
pub(crate) async fn connect_redis(
    url: &str,
) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(1);
    redis::aio::ConnectionManager::new_with_config(client, config).await
}

/// Sessions in Redis, shared by every instance. Keys are prefixed, so one
/// Redis can serve several deployments (or test runs) side by side.
#[derive(Clone)]
pub struct RedisSessionStore {
    connection: redis::aio::ConnectionManager,
    prefix: String,
}

impl RedisSessionStore {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`); every key starts
    /// with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, SessionError> {
        let connection = connect_redis(url).await?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn ttl_seconds(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

#[async_trait::async_trait]
impl SessionStore for RedisSessionStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn load(&self, user: &UserKey) -> Result<Session, SessionError> {
        let key = self.key(&session_key(user));
        let text: Option<String> = self.connection.clone().get(&key).await?;
        match text {
            Some(text) => decode(&key, &text),
            None => Ok(Session::default()),
        }
    }

    async fn save(&self, user: &UserKey, session: &Session) -> Result<(), SessionError> {
        let key = self.key(&session_key(user));
        let _: () = self
            .connection
            .clone()
            .set_ex(key, encode(session), ttl_seconds(SESSION_TTL))
            .await?;
        Ok(())
    }

    async fn forget(&self, user: &UserKey) -> Result<(), SessionError> {
        let _: () = self
            .connection
            .clone()
            .del(self.key(&session_key(user)))
            .await?;
        Ok(())
    }

    async fn allow(&self, key: &str, limit: u32, window: Duration) -> Result<bool, SessionError> {
        let key = self.key(key);
        // INCR and EXPIRE NX in one round trip: the window starts with the
        // first event and is not extended by later ones.
        let (count,): (u32,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl_seconds(window))
            .arg("NX")
            .ignore()
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(count <= limit)
    }

    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, SessionError> {
        let claimed: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg("")
            .arg("NX")
            .arg("EX")
            .arg(ttl_seconds(ttl))
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(claimed.is_some())
    }

    async fn release(&self, key: &str) -> Result<(), SessionError> {
        let _: () = self.connection.clone().del(self.key(key)).await?;
        Ok(())
    }

    async fn put(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SessionError> {
        let _: () = self
            .connection
            .clone()
            .set_ex(self.key(key), value, ttl_seconds(ttl))
            .await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, SessionError> {
        Ok(self.connection.clone().get(self.key(key)).await?)
    }

    async fn next_serial(&self, key: &str, floor: u64) -> Result<u64, SessionError> {
        // One atomic step: count up, and jump above the floor if the
        // counter is behind what is stored (a fresh or restored Redis).
        static NEXT: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                r"local v = redis.call('INCR', KEYS[1])
                  local floor = tonumber(ARGV[1])
                  if v <= floor then
                    v = floor + 1
                    redis.call('SET', KEYS[1], v)
                  end
                  return v",
            )
        });
        let value: u64 = NEXT
            .key(self.key(key))
            .arg(floor)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use webhooks::message::Channel;

    use super::*;

    fn redis_url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    #[test]
    fn a_session_saved_before_forms_were_noted_knows_nothing_of_them() {
        let session: Session =
            serde_json::from_str(r#"{"region":"宜宾市"}"#).expect("an older session");
        assert_eq!(session.form, FormPresence::Unknown);
    }

    /// The same behaviour from both stores.
    async fn behaves_like_a_session_store(store: &dyn SessionStore) {
        let user = UserKey::new(Channel::Web, format!("u-{}", uuid::Uuid::new_v4()));
        assert_eq!(store.load(&user).await.expect("load"), Session::default());
        let session = Session {
            region: Some("广元市".into()),
            choices: vec![Choice {
                entry_id: "e1".into(),
                question: "问一".into(),
            }],
            form: FormPresence::Open,
            ..Session::default()
        };
        store.save(&user, &session).await.expect("save");
        assert_eq!(store.load(&user).await.expect("load"), session);
        store.forget(&user).await.expect("forget");
        assert_eq!(store.load(&user).await.expect("load"), Session::default());

        let limit_key = format!("rate:{}", uuid::Uuid::new_v4());
        for _ in 0..3 {
            assert!(
                store
                    .allow(&limit_key, 3, Duration::from_secs(60))
                    .await
                    .expect("allow")
            );
        }
        assert!(
            !store
                .allow(&limit_key, 3, Duration::from_secs(60))
                .await
                .expect("allow")
        );

        let claim_key = format!("claim:{}", uuid::Uuid::new_v4());
        assert!(
            store
                .claim(&claim_key, Duration::from_secs(60))
                .await
                .expect("claim")
        );
        assert!(
            !store
                .claim(&claim_key, Duration::from_secs(60))
                .await
                .expect("claim")
        );
        store.release(&claim_key).await.expect("release");
        assert!(
            store
                .claim(&claim_key, Duration::from_secs(60))
                .await
                .expect("claim")
        );

        let value_key = format!("value:{}", uuid::Uuid::new_v4());
        assert_eq!(store.get(&value_key).await.expect("get"), None);
        store
            .put(&value_key, "回复", Duration::from_secs(60))
            .await
            .expect("put");
        assert_eq!(
            store.get(&value_key).await.expect("get").as_deref(),
            Some("回复")
        );

        let serial_key = format!("serial:{}", uuid::Uuid::new_v4());
        assert_eq!(store.next_serial(&serial_key, 0).await.expect("serial"), 1);
        assert_eq!(store.next_serial(&serial_key, 0).await.expect("serial"), 2);
        // A floor above the counter (numbers stored before the counter
        // existed) moves it up; one below is ignored.
        assert_eq!(
            store.next_serial(&serial_key, 40).await.expect("serial"),
            41
        );
        assert_eq!(store.next_serial(&serial_key, 5).await.expect("serial"), 42);
    }

    #[tokio::test]
    async fn memory_store() {
        behaves_like_a_session_store(&MemorySessionStore::new()).await;
    }

    #[tokio::test]
    async fn redis_store() {
        let store = RedisSessionStore::connect(&redis_url(), "wenke-test:")
            .await
            .expect("the local Redis (REDIS_URL, default redis://127.0.0.1:6379) must be running");
        behaves_like_a_session_store(&store).await;
    }

    #[tokio::test]
    async fn concurrent_claims_of_one_message_have_one_winner() {
        let store = std::sync::Arc::new(
            RedisSessionStore::connect(&redis_url(), "wenke-test:")
                .await
                .expect("redis"),
        );
        let key = format!("claim:{}", uuid::Uuid::new_v4());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .claim(&key, Duration::from_secs(60))
                    .await
                    .expect("claim")
            }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.expect("task"));
        }
        assert_eq!(winners, 1);
    }
}
