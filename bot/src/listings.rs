//! What the engine keeps for listings besides the listings themselves:
//! filing forms in progress, notices waiting for their user, and the
//! serial-number counter.
//!
//! Forms and notices live in the knowledge base's point store (payload-only
//! collections `forms` and `notices`), not in the session store: the
//! embedded default keeps sessions in memory, and a half-filled demand must
//! survive a restart there as well as a switch between instances in server
//! mode (where the point store is the Qdrant cluster). Serial numbers need
//! an atomic counter, which only the session store (Redis) has.

use std::sync::Arc;

use kb::listing::{ListingError, SerialSource};
use kb::store::{
    CollectionSpec, Condition, Filter, NewPoint, PointStore, StoreError, scroll_all, to_payload,
};
use kb::{ChangeTopic, WatchedCache};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use webhooks::message::UserKey;

use crate::intake::Form;
use crate::session::SessionStore;

const FORMS: &str = "forms";
const NOTICES: &str = "notices";
/// A form untouched this long is abandoned: the next message starts afresh.
pub const FORM_TTL_SECONDS: i64 = 24 * 60 * 60;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// A collection of JSON payloads found by the `user` field.
fn by_user_collection(name: &str) -> CollectionSpec {
    CollectionSpec {
        keyword_fields: vec!["user"],
        ..CollectionSpec::payload_only(name)
    }
}

fn user_point(kind: &str, user: &UserKey) -> Uuid {
    kb::listing::listing_id(kind, &user.storage_key())
}

#[derive(Serialize, Deserialize)]
struct StoredForm {
    user: String,
    updated_at: i64,
    form: Form,
}

/// Filing forms in progress, one per user.
#[derive(Clone)]
pub struct FormStore {
    store: Arc<dyn PointStore>,
}

impl FormStore {
    /// Opens the forms collection, creating it if missing.
    pub async fn open(store: Arc<dyn PointStore>) -> Result<Self, StoreError> {
        store.ensure_collection(&by_user_collection(FORMS)).await?;
        Ok(Self { store })
    }

    /// The user's form, unless there is none or it was abandoned.
    pub async fn load(&self, user: &UserKey) -> Result<Option<Form>, StoreError> {
        let id = user_point("form", user);
        let Some(record) = self.store.get(FORMS, vec![id]).await?.pop() else {
            return Ok(None);
        };
        let stored: StoredForm =
            match serde_json::from_value(serde_json::Value::Object(record.payload)) {
                Ok(stored) => stored,
                Err(error) => {
                    // A form written by an older version: start afresh
                    // rather than fail every message of this user.
                    tracing::warn!(%error, "unreadable form dropped");
                    self.store.delete(FORMS, vec![id]).await?;
                    return Ok(None);
                }
            };
        if now() - stored.updated_at > FORM_TTL_SECONDS {
            self.store.delete(FORMS, vec![id]).await?;
            return Ok(None);
        }
        Ok(Some(stored.form))
    }

    /// Stores the user's form; durable on return.
    pub async fn save(&self, user: &UserKey, form: &Form) -> Result<(), StoreError> {
        let stored = StoredForm {
            user: user.storage_key(),
            updated_at: now(),
            form: form.clone(),
        };
        let payload = to_payload(&stored);
        self.store
            .upsert(
                FORMS,
                vec![NewPoint {
                    id: user_point("form", user),
                    dense: None,
                    lexical: None,
                    payload,
                }],
            )
            .await
    }

    /// Ends the user's form.
    pub async fn clear(&self, user: &UserKey) -> Result<(), StoreError> {
        self.store
            .delete(FORMS, vec![user_point("form", user)])
            .await
    }
}

/// A message for a user that no reply carried yet (someone claimed their
/// demand, its status changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Identity.
    pub id: Uuid,
    /// The user's storage key.
    pub user: String,
    /// The text.
    pub text: String,
    /// When, Unix seconds.
    pub at: i64,
}

/// The users last found with no notice waiting that this instance
/// remembers: about 120 bytes each, ~24 MB when full.
const USERS_WITHOUT_NOTICES: usize = 200_000;

/// Notices waiting for their users. Channels that can push (a WeChat
/// customer-service message, Telegram) may deliver them at once; the others
/// get them with the user's next reply or from the web API.
///
/// Every reply asks for the user's notices, and nearly always there are
/// none; on a Qdrant server that would be a query per message for nothing.
/// So a user found without notices is remembered as such until a notice
/// is pushed to anyone: every push leaves a change mark (see
/// [`kb::ChangeTopic`]) that makes every instance forget what it
/// remembered. Delivering (removing) a notice needs no mark: it cannot
/// make "none waiting" untrue.
#[derive(Clone)]
pub struct Notices {
    store: Arc<dyn PointStore>,
    none_waiting: Arc<WatchedCache<String, ()>>,
}

impl Notices {
    /// Opens the notices collection, creating it if missing.
    pub async fn open(store: Arc<dyn PointStore>) -> Result<Self, StoreError> {
        store
            .ensure_collection(&by_user_collection(NOTICES))
            .await?;
        let none_waiting =
            WatchedCache::open(&store, ChangeTopic::named(NOTICES), USERS_WITHOUT_NOTICES).await?;
        Ok(Self {
            store,
            none_waiting: Arc::new(none_waiting),
        })
    }

    /// Queues a notice for a user (by storage key).
    pub async fn push(&self, user: &str, text: String) -> Result<Notice, StoreError> {
        let notice = Notice {
            id: Uuid::now_v7(),
            user: user.to_owned(),
            text,
            at: now(),
        };
        let payload = to_payload(&notice);
        self.store
            .upsert(
                NOTICES,
                vec![NewPoint {
                    id: notice.id,
                    dense: None,
                    lexical: None,
                    payload,
                }],
            )
            .await?;
        if let Err(error) = self.none_waiting.announce_change().await {
            // The notice is stored: it is not lost, only possibly late.
            tracing::warn!(
                %error,
                max_delay_s = kb::SHARED_STORE_READ_MAX_AGE.as_secs(),
                "notice stored without its change mark: other instances may deliver it late"
            );
        }
        Ok(notice)
    }

    /// The user's waiting notices, oldest first, without removing them.
    pub async fn pending(&self, user: &str) -> Result<Vec<Notice>, StoreError> {
        if self.none_waiting.get(&user.to_owned()).is_some() {
            return Ok(Vec::new());
        }
        let read = self.none_waiting.begin_read();
        let records = scroll_all(
            &*self.store,
            NOTICES,
            Filter::must(Condition::keyword("user", user)),
        )
        .await?;
        let mut notices: Vec<Notice> = records
            .into_iter()
            .filter_map(|r| serde_json::from_value(serde_json::Value::Object(r.payload)).ok())
            .collect();
        notices.sort_by_key(|n| n.id);
        if notices.is_empty() {
            self.none_waiting.put(user.to_owned(), read, ());
        }
        Ok(notices)
    }

    /// One notice, unless it was delivered.
    pub async fn get(&self, id: Uuid) -> Result<Option<Notice>, StoreError> {
        let Some(record) = self.store.get(NOTICES, vec![id]).await?.pop() else {
            return Ok(None);
        };
        Ok(serde_json::from_value(serde_json::Value::Object(record.payload)).ok())
    }

    /// Marks notices delivered (removes them).
    pub async fn delivered(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.store.delete(NOTICES, ids).await
    }
}

/// Listing serials counted in the session store: in Redis, shared by every
/// instance; in memory, per process, starting above the highest number
/// stored (which the listing book reads once).
pub struct SessionSerials(pub Arc<dyn SessionStore>);

#[async_trait::async_trait]
impl SerialSource for SessionSerials {
    async fn next(&self, sequence: &str, floor: u64) -> Result<u64, ListingError> {
        self.0
            .next_serial(&format!("serial:{sequence}"), floor)
            .await
            .map_err(|e| ListingError::Serials(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use kb::store::edge::EdgeStore;

    use super::*;

    #[tokio::test]
    async fn a_notice_pushed_after_none_were_found_is_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn PointStore> = Arc::new(EdgeStore::open(dir.path()).expect("store"));
        let notices = Notices::open(store).await.expect("notices");
        assert!(notices.pending("web:u").await.expect("pending").is_empty());
        let pushed = notices
            .push("web:u", "有人认领".into())
            .await
            .expect("push");
        let id = pushed.id;
        assert_eq!(
            notices.pending("web:u").await.expect("pending"),
            vec![pushed]
        );
        notices.delivered(vec![id]).await.expect("delivered");
        assert!(notices.pending("web:u").await.expect("pending").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_notice_pushed_by_another_instance_is_found_within_a_second() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn PointStore> = Arc::new(
            EdgeStore::open(dir.path())
                .expect("store")
                .shared_within_process(),
        );
        let here = Notices::open(Arc::clone(&store)).await.expect("here");
        let there = Notices::open(store).await.expect("there");
        assert!(here.pending("web:u").await.expect("pending").is_empty());
        let pushed = there
            .push("web:u", "需求状态已更新".into())
            .await
            .expect("push");
        let started = Instant::now();
        while here.pending("web:u").await.expect("pending").is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "the notice is still hidden here a second after its push"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(here.pending("web:u").await.expect("pending"), vec![pushed]);
    }
}
