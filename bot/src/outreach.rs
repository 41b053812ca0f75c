//! Personalised push (精准科普): users opt in by chat ("订阅科普") and out
//! ("退订", or by unfollowing the account); editors send a published entry
//! to the opted-in users of a region and a crop interest, after seeing how
//! many that is.
//!
//! - A subscriber is one record in the point store (a payload-only
//!   collection `subscribers`, keyed by the user): their channel, their
//!   place (from the location they shared) and the crops they asked about
//!   while subscribed. The engine writes it only on opt-in, opt-out and
//!   when a subscriber's question names a crop the record does not hold.
//! - A send is a [`Broadcast`] record, then one message per subscriber
//!   through [`Engine::notify`]: a push where the channel can (WeChat's
//!   customer-service message inside its 48-hour window), else a notice
//!   with the user's next reply. Each user gets at most
//!   [`DAILY_LIMIT_PER_USER`] pushes a day, each send reaches a user once
//!   however often its form is posted, and sends are paced at
//!   [`SEND_INTERVAL`] so a channel's rate limits are not hit.

use std::sync::Arc;
use std::time::Duration;

use kb::PublishedEntry;
use kb::region::Place;
use kb::store::{
    CollectionSpec, Condition, Filter, NewPoint, PointStore, StoreError, scroll_all, to_payload,
};
use serde::{Deserialize, Serialize};
use webhooks::message::UserKey;

use crate::Engine;
use crate::jobs::Task;
use crate::session::SessionStore;

const SUBSCRIBERS: &str = "subscribers";
const BROADCASTS: &str = "broadcasts";
/// Pushes one user receives per day at most, whatever editors send.
pub const DAILY_LIMIT_PER_USER: u32 = 1;
/// The pause between two sends of one broadcast (20 a second).
pub const SEND_INTERVAL: Duration = Duration::from_millis(50);
/// How long a broadcast remembers whom it reached.
const SENT_MARK_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Why an outreach step failed.
#[derive(Debug, thiserror::Error)]
pub enum OutreachError {
    /// The point store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record could not be read back.
    #[error("corrupt {0} record: {1}")]
    Corrupt(&'static str, String),
    /// The session store failed (a send's claims and daily limits).
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    /// The next chunk of a send could not be queued.
    #[error("job queue: {0}")]
    Queue(String),
}

/// One user who opted in (or out again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscriber {
    /// The user's storage key (`wechat:o-…`).
    pub user: String,
    /// The channel.
    pub channel: String,
    /// `subscribed` or `unsubscribed`.
    pub state: String,
    /// Their city or prefecture, when they shared where they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Their county, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
    /// Crops they asked about while subscribed.
    #[serde(default)]
    pub crops: Vec<String>,
    /// When they last opted in or out, Unix seconds.
    pub changed_at: i64,
}

const SUBSCRIBED: &str = "subscribed";
const UNSUBSCRIBED: &str = "unsubscribed";

impl Subscriber {
    /// Whether pushes may go to this user.
    pub fn is_subscribed(&self) -> bool {
        self.state == SUBSCRIBED
    }
}

/// Whom a broadcast goes to: opted-in users matching every field given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audience {
    /// Only users in this city or prefecture.
    #[serde(default)]
    pub city: Option<String>,
    /// Only users in this county.
    #[serde(default)]
    pub county: Option<String>,
    /// Only users who asked about this crop.
    #[serde(default)]
    pub crop: Option<String>,
    /// Only users of this channel.
    #[serde(default)]
    pub channel: Option<String>,
}

/// One send of one entry to one audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    /// Its id: the send form's token, so posting the form twice is one send.
    pub id: String,
    /// The entry sent.
    pub entry_id: String,
    /// Its question, for the list of sends.
    pub question: String,
    /// To whom.
    pub audience: Audience,
    /// Who sent it (console username).
    pub actor: String,
    /// When it started, Unix seconds.
    pub at: i64,
    /// Users in the audience when it started.
    pub audience_size: usize,
    /// Messages handed to the channels (pushed, or waiting for the user's
    /// next message).
    pub sent: usize,
    /// Users skipped because they had their push for the day.
    pub rate_limited: usize,
    /// `sending` or `done`.
    pub status: String,
    /// The message, as rendered when the send started.
    #[serde(default)]
    pub text: String,
    /// The last subscriber (by storage key) a send was started for; a
    /// send resumes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

const SENDING: &str = "sending";
const DONE: &str = "done";

fn subscribers_spec() -> CollectionSpec {
    CollectionSpec {
        keyword_fields: vec!["state", "channel", "city", "county", "crops"],
        ..CollectionSpec::payload_only(SUBSCRIBERS)
    }
}

fn broadcasts_spec() -> CollectionSpec {
    CollectionSpec {
        keyword_fields: vec!["status", "entry_id"],
        integer_fields: vec!["at"],
        ..CollectionSpec::payload_only(BROADCASTS)
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    payload: kb::store::Payload,
) -> Result<T, OutreachError> {
    serde_json::from_value(serde_json::Value::Object(payload))
        .map_err(|e| OutreachError::Corrupt(what, e.to_string()))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Subscribers and broadcasts on the point store.
#[derive(Clone)]
pub struct Outreach {
    store: Arc<dyn PointStore>,
}

impl Outreach {
    /// Opens the collections.
    pub async fn open(store: Arc<dyn PointStore>) -> Result<Self, OutreachError> {
        store.ensure_collection(&subscribers_spec()).await?;
        store.ensure_collection(&broadcasts_spec()).await?;
        Ok(Self { store })
    }

    /// A user's record, if they ever opted in.
    pub async fn subscriber(&self, user: &str) -> Result<Option<Subscriber>, OutreachError> {
        let id = kb::listing::listing_id("subscriber", user);
        let Some(record) = self.store.get(SUBSCRIBERS, vec![id]).await?.pop() else {
            return Ok(None);
        };
        decode("subscriber", record.payload).map(Some)
    }

    async fn save(&self, subscriber: &Subscriber) -> Result<(), OutreachError> {
        let point = NewPoint {
            id: kb::listing::listing_id("subscriber", &subscriber.user),
            dense: None,
            lexical: None,
            payload: to_payload(subscriber),
        };
        Ok(self.store.upsert(SUBSCRIBERS, vec![point]).await?)
    }

    /// Opts a user in, with where they are and what they asked about.
    pub async fn subscribe(
        &self,
        user: &UserKey,
        place: Option<Place>,
        crops: &[String],
    ) -> Result<Subscriber, OutreachError> {
        let key = user.storage_key();
        let mut subscriber = self.subscriber(&key).await?.unwrap_or(Subscriber {
            user: key,
            channel: user.channel.as_str().to_owned(),
            state: SUBSCRIBED.into(),
            city: None,
            county: None,
            crops: Vec::new(),
            changed_at: 0,
        });
        subscriber.state = SUBSCRIBED.into();
        subscriber.changed_at = now();
        if let Some(place) = place {
            subscriber.city = Some(place.city);
            subscriber.county = place.county;
        }
        for crop in crops {
            if !subscriber.crops.contains(crop) {
                subscriber.crops.push(crop.clone());
            }
        }
        self.save(&subscriber).await?;
        Ok(subscriber)
    }

    /// Opts a user out; `false` when they were not subscribed.
    pub async fn unsubscribe(&self, user: &UserKey) -> Result<bool, OutreachError> {
        let Some(mut subscriber) = self.subscriber(&user.storage_key()).await? else {
            return Ok(false);
        };
        if !subscriber.is_subscribed() {
            return Ok(false);
        }
        subscriber.state = UNSUBSCRIBED.into();
        subscriber.changed_at = now();
        self.save(&subscriber).await?;
        Ok(true)
    }

    /// Adds crops and a place to a subscriber's record (a no-op for users
    /// who are not subscribed).
    pub async fn note_interest(
        &self,
        user: &UserKey,
        place: Option<Place>,
        crops: &[String],
    ) -> Result<(), OutreachError> {
        let Some(mut subscriber) = self.subscriber(&user.storage_key()).await? else {
            return Ok(());
        };
        if !subscriber.is_subscribed() {
            return Ok(());
        }
        let mut changed = false;
        for crop in crops {
            if !subscriber.crops.contains(crop) {
                subscriber.crops.push(crop.clone());
                changed = true;
            }
        }
        if let Some(place) = place
            && subscriber.city.as_deref() != Some(place.city.as_str())
        {
            subscriber.city = Some(place.city);
            subscriber.county = place.county;
            changed = true;
        }
        if changed {
            self.save(&subscriber).await?;
        }
        Ok(())
    }

    /// The opted-in users an audience holds.
    pub async fn audience(&self, audience: &Audience) -> Result<Vec<Subscriber>, OutreachError> {
        let mut filter = Filter::must(Condition::keyword("state", SUBSCRIBED));
        let fields = [
            ("city", &audience.city),
            ("county", &audience.county),
            ("crops", &audience.crop),
            ("channel", &audience.channel),
        ];
        for (field, value) in fields {
            if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
                filter = filter.and(Condition::keyword(field, value.trim()));
            }
        }
        let mut subscribers = Vec::new();
        for record in scroll_all(&*self.store, SUBSCRIBERS, filter).await? {
            subscribers.push(decode::<Subscriber>("subscriber", record.payload)?);
        }
        subscribers.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(subscribers)
    }

    /// A broadcast by id.
    pub async fn broadcast(&self, id: &str) -> Result<Option<Broadcast>, OutreachError> {
        let point = kb::listing::listing_id("broadcast", id);
        let Some(record) = self.store.get(BROADCASTS, vec![point]).await?.pop() else {
            return Ok(None);
        };
        decode("broadcast", record.payload).map(Some)
    }

    async fn save_broadcast(&self, broadcast: &Broadcast) -> Result<(), OutreachError> {
        let point = NewPoint {
            id: kb::listing::listing_id("broadcast", &broadcast.id),
            dense: None,
            lexical: None,
            payload: to_payload(broadcast),
        };
        Ok(self.store.upsert(BROADCASTS, vec![point]).await?)
    }

    /// Every broadcast, newest first.
    pub async fn broadcasts(&self) -> Result<Vec<Broadcast>, OutreachError> {
        let mut broadcasts = Vec::new();
        for record in scroll_all(&*self.store, BROADCASTS, Filter::default()).await? {
            broadcasts.push(decode::<Broadcast>("broadcast", record.payload)?);
        }
        broadcasts.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)));
        Ok(broadcasts)
    }
}

/// Starts sending `entry` to the audience and returns the broadcast as
/// started; the messages go out from durable jobs, in paced chunks
/// (`send_chunk`). A broadcast id seen before returns that broadcast and
/// sends nothing more.
pub async fn start_broadcast(
    engine: &Engine,
    id: &str,
    entry: &PublishedEntry,
    audience: Audience,
    actor: &str,
) -> Result<Broadcast, crate::EngineError> {
    let outreach = engine.outreach().clone();
    if let Some(existing) = outreach.broadcast(id).await? {
        return Ok(existing);
    }
    // Two posts of one form at once: only the first starts the send.
    if !engine
        .sessions()
        .claim(&format!("broadcast-start:{id}"), SENT_MARK_TTL)
        .await?
    {
        for _ in 0..50 {
            if let Some(existing) = outreach.broadcast(id).await? {
                return Ok(existing);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        return Err(crate::EngineError::Outreach(OutreachError::Corrupt(
            "broadcast",
            format!("{id} was started but not recorded"),
        )));
    }
    let subscribers = outreach.audience(&audience).await?;
    let text = engine.render(
        "push_entry.j2",
        serde_json::json!({
            "question": entry.content.question,
            "answer": entry.chat_answer(),
            "source": entry.content.source.organisation,
            "reviewer": entry.reviewer,
        }),
    )?;
    let broadcast = Broadcast {
        id: id.to_owned(),
        entry_id: entry.id.to_string(),
        question: entry.content.question.clone(),
        audience,
        actor: actor.to_owned(),
        at: now(),
        audience_size: subscribers.len(),
        sent: 0,
        rate_limited: 0,
        status: SENDING.into(),
        text,
        cursor: None,
    };
    outreach.save_broadcast(&broadcast).await?;
    engine
        .jobs()
        .enqueue(Task::Broadcast {
            id: broadcast.id.clone(),
            after: None,
        })
        .await
        .map_err(|e| OutreachError::Queue(e.to_string()))?;
    Ok(broadcast)
}

/// Subscribers one broadcast job sends to, paced: five seconds of work,
/// well inside a job's lease.
const CHUNK: usize = 100;

/// Sends a broadcast to the next [`CHUNK`] subscribers after `after`,
/// then enqueues the chunk after it or marks the broadcast done.
///
/// Before each subscriber the broadcast record is saved with them as its
/// cursor (and the counts so far), and a chunk run again (its process
/// died) starts after the cursor; each subscriber is also claimed once per
/// broadcast in the session store, which keeps two runs of one chunk on
/// two instances apart. That makes a broadcast at most once per user: a
/// process killed between saving the cursor and storing that user's
/// notice loses that one message rather than sending it twice.
pub(crate) async fn send_chunk(
    engine: &Engine,
    id: &str,
    after: Option<&str>,
) -> Result<(), OutreachError> {
    let outreach = engine.outreach();
    let Some(mut tally) = outreach.broadcast(id).await? else {
        return Err(OutreachError::Corrupt(
            "broadcast",
            format!("{id} is not recorded"),
        ));
    };
    if tally.status == DONE {
        return Ok(());
    }
    let start = match (after, tally.cursor.as_deref()) {
        (Some(after), Some(cursor)) => Some(after.max(cursor).to_owned()),
        (after, cursor) => after.or(cursor).map(str::to_owned),
    };
    // The audience as it is now: someone who opted out since the start is
    // not sent to.
    let subscribers = outreach.audience(&tally.audience).await?;
    let chunk: Vec<&Subscriber> = subscribers
        .iter()
        .filter(|s| start.as_deref().is_none_or(|last| s.user.as_str() > last))
        .take(CHUNK)
        .collect();
    let sessions: &Arc<dyn SessionStore> = engine.sessions();
    for subscriber in &chunk {
        tally.cursor = Some(subscriber.user.clone());
        outreach.save_broadcast(&tally).await?;
        let once = format!("broadcast:{}:{}", tally.id, subscriber.user);
        if !sessions.claim(&once, SENT_MARK_TTL).await? {
            continue;
        }
        let daily = format!("push-daily:{}", subscriber.user);
        let day = Duration::from_secs(24 * 60 * 60);
        if !sessions.allow(&daily, DAILY_LIMIT_PER_USER, day).await? {
            tally.rate_limited += 1;
            continue;
        }
        engine.notify(&subscriber.user, tally.text.clone()).await;
        tally.sent += 1;
        outreach.save_broadcast(&tally).await?;
        tokio::time::sleep(SEND_INTERVAL).await;
    }
    let Some(last) = chunk.last().map(|s| s.user.clone()) else {
        tally.status = DONE.into();
        tracing::info!(
            broadcast = tally.id,
            sent = tally.sent,
            rate_limited = tally.rate_limited,
            "broadcast done"
        );
        outreach.save_broadcast(&tally).await?;
        return Ok(());
    };
    outreach.save_broadcast(&tally).await?;
    engine
        .jobs()
        .enqueue(Task::Broadcast {
            id: tally.id.clone(),
            after: Some(last),
        })
        .await
        .map_err(|e| OutreachError::Queue(e.to_string()))?;
    Ok(())
}
