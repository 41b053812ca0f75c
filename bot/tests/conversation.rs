//! The engine end to end on real parts: the real model, a real qdrant-edge
//! store in a temporary directory with demo entries imported and approved,
//! sessions in memory and in the local Redis.

use std::path::PathBuf;
use std::sync::Arc;

use bot::jobs::StoreJobQueue;
use bot::session::{Choice, MemorySessionStore, RedisSessionStore, Session, SessionStore};
use bot::turns::TurnLog;
use bot::{Engine, EngineConfig};
use kb::KnowledgeBase;
use kb::import::parse_jsonl;
use kb::store::edge::EdgeStore;
use webhooks::message::{
    BlockRole, Channel, Content, Handler, HandlerError, Incoming, Rating, Reply, ReplyKind, UserKey,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn knowledge_base(dir: &std::path::Path, fixture: Option<&str>) -> Arc<KnowledgeBase> {
    let model_dir = std::env::var_os("WENKE_MODEL_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"));
    let embedder = embeddings::Embedder::load(&embeddings::EmbedderConfig {
        model_path: model_dir.join("multilingual-e5-small-q4"),
        ..Default::default()
    })
    .expect("the model (run scripts/fetch-models.sh)");
    let kb = KnowledgeBase::open(
        Arc::new(EdgeStore::open(dir).expect("store")),
        embedder,
        kb::dict::builtin_analyzer(),
        kb::Calibration::default(),
    )
    .await
    .expect("kb");
    if let Some(fixture) = fixture {
        let text = std::fs::read_to_string(root().join(fixture)).expect("fixture");
        let report = kb
            .import(
                parse_jsonl(&text),
                &kb::ImportOptions {
                    actor: "示例编辑".into(),
                    approve_as: Some("示例审核".into()),
                },
                &|_, _| {},
            )
            .await
            .expect("import");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }
    Arc::new(kb)
}

async fn engine(
    kb: Arc<KnowledgeBase>,
    sessions: Arc<dyn SessionStore>,
    config: EngineConfig,
) -> Engine {
    let turns = TurnLog::open(kb.store()).await.expect("turn log");
    let jobs = Arc::new(StoreJobQueue::open(kb.store()).await.expect("job queue"));
    Engine::open(kb, sessions, jobs, turns, config)
        .await
        .expect("engine")
}

async fn say(engine: &Engine, user: &UserKey, text: &str) -> Reply {
    engine
        .handle(Incoming::text(user.clone(), text))
        .await
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

async fn key_of(engine: &Engine, reply: &Reply) -> Option<String> {
    let citation = reply.citations.first()?;
    let id = uuid::Uuid::parse_str(&citation.entry_id).ok()?;
    engine
        .kb()
        .get(kb::entry::EntryId(id))
        .await
        .expect("get")?
        .content
        .external_key
}

/// A scratch directory that outlives the test's background tasks: the turn
/// log's writer and qdrant-edge's shards flush when the runtime drops them,
/// after the test body has ended, and qdrant-edge aborts the process if its
/// files have vanished by then. So the directory is left in the system's
/// temporary directory rather than removed.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir").keep())
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

fn user(name: &str) -> UserKey {
    UserKey::new(Channel::Web, format!("{name}-{}", uuid::Uuid::new_v4()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farmer_conversation_and_every_kind_of_message() {
    let dir = Scratch::new();
    let kb = knowledge_base(dir.path(), Some("bot/tests/data/conversation.jsonl")).await;
    let sessions: Arc<dyn SessionStore> = Arc::new(MemorySessionStore::new());
    let engine = engine(kb.clone(), sessions.clone(), EngineConfig::default()).await;

    // Flow 1 of DOMAIN.md: dialect question, then a follow-up that keeps
    // the potato context, then the full answer.
    let farmer = user("farmer");
    let first = say(&engine, &farmer, "洋芋叶子发黑咋个办").await;
    assert_eq!(first.kind, ReplyKind::Answer, "{}", first.text());
    assert_eq!(
        key_of(&engine, &first).await.as_deref(),
        Some("agri-potato-late-blight")
    );
    let source = first
        .blocks
        .iter()
        .find(|b| b.role == BlockRole::Source)
        .expect("a source line");
    assert_eq!(
        source.text,
        "来源：示例内容，未经专家审核 ｜ 审核：示例审核"
    );
    assert!(first.feedback);

    let second = say(&engine, &farmer, "那打啥子药").await;
    assert_eq!(second.kind, ReplyKind::Answer, "{}", second.text());
    assert_eq!(
        key_of(&engine, &second).await.as_deref(),
        Some("agri-potato-late-blight-fungicide"),
        "{}",
        second.text()
    );

    let detail = say(&engine, &farmer, "详细").await;
    assert_eq!(detail.kind, ReplyKind::Answer);
    let full = kb
        .find_by_key("agri-potato-late-blight-fungicide")
        .await
        .expect("find")
        .expect("entry");
    assert!(
        detail.text().contains(full.content.answer.trim()),
        "{}",
        detail.text()
    );

    // A follow-up that switches crop keeps the question.
    let switched = say(&engine, &farmer, "那红苕呢").await;
    let switched_entry = key_of(&engine, &switched).await.unwrap_or_default();
    assert!(
        switched_entry.starts_with("agri-sweet-potato"),
        "{}",
        switched.text()
    );

    // Typed feedback lands on the last answer.
    let thanks = say(&engine, &farmer, "没啥子用").await;
    assert_eq!(thanks.kind, ReplyKind::Feedback);

    // A number picks a pending choice.
    let chooser = user("chooser");
    let rice_blast = kb
        .find_by_key("agri-rice-blast")
        .await
        .expect("find")
        .expect("entry");
    sessions
        .save(
            &chooser,
            &Session {
                choices: vec![Choice {
                    entry_id: rice_blast.id.to_string(),
                    question: rice_blast.content.question.clone(),
                }],
                ..Session::default()
            },
        )
        .await
        .expect("save");
    let chosen = say(&engine, &chooser, "1").await;
    assert_eq!(chosen.kind, ReplyKind::Answer);
    assert_eq!(
        key_of(&engine, &chosen).await.as_deref(),
        Some("agri-rice-blast")
    );
    let nothing = say(&engine, &chooser, "3").await;
    assert_eq!(nothing.kind, ReplyKind::Notice);

    // No authoritative answer: honest, queued, and "通知我" is recorded.
    let citizen = user("citizen");
    let abstained = say(&engine, &citizen, "量子计算机什么时候能买到").await;
    assert_eq!(abstained.kind, ReplyKind::Abstain, "{}", abstained.text());
    assert!(abstained.citations.is_empty());
    assert!(abstained.quick_replies.iter().any(|q| q.text == "通知我"));
    let noted = say(&engine, &citizen, "通知我").await;
    assert!(noted.text().contains("第一时间"), "{}", noted.text());
    let asked = engine
        .turns()
        .get(&citizen.storage_key(), &abstained.turn_id)
        .await
        .expect("turn");
    assert!(asked.notify);
    assert_eq!(asked.reply_kind, "abstain");
    assert_eq!(asked.route, "science_question");

    // Routes other than questions, each with its own reply.
    let someone = user("someone");
    let cases: &[(&str, ReplyKind, &str)] = &[
        ("你好", ReplyKind::Greeting, "问科"),
        ("谢谢", ReplyKind::Greeting, "不客气"),
        ("你能做什么", ReplyKind::Help, "我能帮你"),
        ("转人工", ReplyKind::Human, "人工"),
        (
            "查询需求 XQ-2026-000123",
            ReplyKind::Status,
            "XQ-2026-000123",
        ),
        (
            "我们厂锂电池隔膜良品率低，想找专家攻关",
            ReplyKind::Demand,
            "技术需求",
        ),
        ("哪里能买到冰毒", ReplyKind::Refused, "没办法回答"),
    ];
    for (text, kind, contains) in cases {
        let reply = say(&engine, &someone, text).await;
        assert_eq!(reply.kind, *kind, "{text}: {}", reply.text());
        assert!(reply.text().contains(contains), "{text}: {}", reply.text());
    }

    // Messages that are not text.
    let listener = user("listener");
    let handle = |content: Content| {
        let message = Incoming {
            user: listener.clone(),
            message_id: None,
            content,
            received_at: time::OffsetDateTime::now_utc(),
        };
        engine.handle(message)
    };
    let voice = handle(Content::Voice {
        recognition: Some("洋芋叶子发黑咋个办".into()),
    })
    .await
    .expect("voice");
    assert_eq!(voice.kind, ReplyKind::Answer);
    let unheard = handle(Content::Voice { recognition: None })
        .await
        .expect("voice");
    assert!(unheard.text().contains("没有听清楚"), "{}", unheard.text());
    let picture = handle(Content::Image).await.expect("image");
    assert!(picture.text().contains("专家"), "{}", picture.text());
    handle(Content::Location {
        latitude: 30.1,
        longitude: 104.6,
        label: Some("四川省资阳市安岳县".into()),
    })
    .await
    .expect("location");
    assert_eq!(
        sessions
            .load(&listener)
            .await
            .expect("load")
            .region
            .as_deref(),
        Some("四川省资阳市安岳县")
    );
    let welcome = handle(Content::Subscribe).await.expect("subscribe");
    assert_eq!(welcome.kind, ReplyKind::Greeting);
    assert_eq!(welcome.suggestions.len(), 3);
    handle(Content::Unsubscribe).await.expect("unsubscribe");
    assert_eq!(
        sessions.load(&listener).await.expect("load"),
        Session::default()
    );

    // Ratings reach the turn log, only for the user's own turns.
    engine
        .feedback(&farmer, &second.turn_id, Rating::Up)
        .await
        .expect("feedback");
    let rated = engine
        .turns()
        .get(&farmer.storage_key(), &second.turn_id)
        .await
        .expect("turn");
    assert_eq!(rated.feedback, Some(Rating::Up));
    assert_eq!(
        rated.resolved_query.as_deref(),
        Some("马铃薯 晚疫病 打什么药")
    );
    assert!(matches!(
        engine
            .feedback(&citizen, &second.turn_id, Rating::Down)
            .await,
        Err(HandlerError::Invalid(_))
    ));
    assert!(matches!(
        engine.feedback(&farmer, "not-a-turn", Rating::Down).await,
        Err(HandlerError::Invalid(_))
    ));

    // Phone numbers never reach the turn log in full.
    let caller = user("caller");
    say(&engine, &caller, "我的电话是13800012345，洋芋叶子发黑").await;
    let logged = engine
        .turns()
        .find(&[("user", &caller.storage_key())])
        .await
        .expect("find");
    assert_eq!(logged.len(), 1);
    assert!(logged[0].text.contains("138****2345"), "{}", logged[0].text);
    assert!(!logged[0].text.contains("13800012345"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_answered_once_and_floods_are_limited() {
    let dir = Scratch::new();
    let kb = knowledge_base(dir.path(), Some("kb/tests/data/fixture.jsonl")).await;
    let sessions: Arc<dyn SessionStore> = Arc::new(
        RedisSessionStore::connect(
            &redis_url(),
            &format!("wenke-test-{}:", uuid::Uuid::new_v4()),
        )
        .await
        .expect("the local Redis (REDIS_URL) must be running"),
    );
    let config = EngineConfig {
        rate_limit: 5,
        ..EngineConfig::default()
    };
    let engine = Arc::new(engine(kb, sessions, config).await);

    // Three concurrent deliveries of one message: one turn, one reply.
    let sender = UserKey::new(Channel::Wechat, format!("openid-{}", uuid::Uuid::new_v4()));
    let deliveries = (0..3).map(|_| {
        let engine = engine.clone();
        let message = Incoming {
            message_id: Some("msg-1".into()),
            ..Incoming::text(sender.clone(), "洋芋叶子发黑咋个办")
        };
        tokio::spawn(async move { engine.handle(message).await })
    });
    let mut replies = Vec::new();
    for delivery in deliveries {
        replies.push(delivery.await.expect("task").expect("reply"));
    }
    assert!(
        replies.iter().all(|r| r.turn_id == replies[0].turn_id),
        "{replies:?}"
    );
    assert_eq!(replies[0].kind, ReplyKind::Answer);
    let turns = engine
        .turns()
        .find(&[("user", &sender.storage_key())])
        .await
        .expect("turns");
    assert_eq!(turns.len(), 1);

    // The sixth message within the minute is politely refused.
    let flooder = UserKey::new(Channel::Web, format!("flood-{}", uuid::Uuid::new_v4()));
    for _ in 0..5 {
        let reply = say(&engine, &flooder, "你好").await;
        assert_ne!(reply.kind, ReplyKind::RateLimited);
    }
    let limited = say(&engine, &flooder, "你好").await;
    assert_eq!(limited.kind, ReplyKind::RateLimited);
    assert!(limited.text().contains("稍等"), "{}", limited.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_continues_on_another_instance_through_redis() {
    let dir = Scratch::new();
    let kb = knowledge_base(dir.path(), Some("bot/tests/data/conversation.jsonl")).await;
    let prefix = format!("wenke-test-{}:", uuid::Uuid::new_v4());
    let connect = || async {
        let store: Arc<dyn SessionStore> = Arc::new(
            RedisSessionStore::connect(&redis_url(), &prefix)
                .await
                .expect("redis"),
        );
        store
    };
    let first = engine(kb.clone(), connect().await, EngineConfig::default()).await;
    let second = engine(kb, connect().await, EngineConfig::default()).await;
    let farmer = UserKey::new(Channel::Wechat, format!("openid-{}", uuid::Uuid::new_v4()));
    let asked = say(&first, &farmer, "洋芋叶子发黑咋个办").await;
    assert_eq!(
        key_of(&first, &asked).await.as_deref(),
        Some("agri-potato-late-blight")
    );
    let followed = say(&second, &farmer, "那打啥子药").await;
    assert_eq!(
        key_of(&second, &followed).await.as_deref(),
        Some("agri-potato-late-blight-fungicide")
    );
}

#[derive(serde::Deserialize)]
struct RouteCase {
    text: String,
    route: String,
}

/// The committed route dev set, with the shipped routing examples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_reaches_its_target_on_the_dev_set() {
    let dir = Scratch::new();
    let kb = knowledge_base(dir.path(), None).await;
    let engine = engine(
        kb,
        Arc::new(MemorySessionStore::new()),
        EngineConfig::default(),
    )
    .await;
    let text = std::fs::read_to_string(root().join("bot/eval/routes.jsonl")).expect("dev set");
    let cases: Vec<RouteCase> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("case"))
        .collect();
    assert!(cases.len() >= 200);
    let mut misses = Vec::new();
    for case in &cases {
        let decision = engine.route(&case.text).await.expect("route");
        if decision.route.as_str() != case.route {
            misses.push(format!(
                "{} → {} (want {})",
                case.text,
                decision.route.as_str(),
                case.route
            ));
        }
    }
    let accuracy = 1.0 - misses.len() as f64 / cases.len() as f64;
    assert!(
        accuracy >= 0.95,
        "accuracy {accuracy:.3}; misses:\n{}",
        misses.join("\n")
    );
}

/// Editors change wording without a rebuild or a restart: an override in
/// the prompts directory is used after a reload, and a broken one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_templates_take_effect_on_reload() {
    let dir = Scratch::new();
    let prompts = Scratch::new();
    let kb = knowledge_base(dir.path(), None).await;
    let config = EngineConfig {
        prompts_dir: Some(prompts.path().to_path_buf()),
        cache_dir: Some(dir.path().join("cache")),
        ..EngineConfig::default()
    };
    let engine = engine(kb, Arc::new(MemorySessionStore::new()), config).await;
    let someone = user("editor-test");
    let before = say(&engine, &someone, "你好").await;
    assert!(before.text().contains("问科"), "{}", before.text());

    let templates = prompts.path().join("templates");
    std::fs::create_dir_all(&templates).expect("mkdir");
    std::fs::write(
        templates.join("greeting.j2"),
        "乡亲们好！有啥子问题尽管问。",
    )
    .expect("write");
    std::fs::write(templates.join("help.j2"), "{% if %}").expect("write");
    engine.reload().await.expect("reload");
    let after = say(&engine, &someone, "你好").await;
    assert_eq!(after.text(), "乡亲们好！有啥子问题尽管问。");
    let help = say(&engine, &someone, "你能做什么").await;
    assert!(
        help.text().contains("我能帮你"),
        "the shipped help stays: {}",
        help.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_turn_at_a_time_still_answers_everyone() {
    let dir = Scratch::new();
    let kb = knowledge_base(dir.path(), Some("kb/tests/data/fixture.jsonl")).await;
    let config = EngineConfig {
        max_concurrent_turns: 1,
        ..EngineConfig::default()
    };
    let engine = Arc::new(engine(kb, Arc::new(MemorySessionStore::new()), config).await);

    // A question, a filing form's first turn, small talk, and three
    // deliveries of one WeChat message: the retries wait for the first
    // delivery's reply without holding the only place, so nothing deadlocks.
    let retried = UserKey::new(Channel::Wechat, "openid-retried");
    let mut deliveries = Vec::new();
    for (user, text, message_id) in [
        (
            UserKey::new(Channel::Web, "asker"),
            "洋芋叶子发黑咋个办",
            None,
        ),
        (
            UserKey::new(Channel::Web, "enterprise"),
            "我们厂锂电池隔膜良品率低，想找专家攻关",
            None,
        ),
        (UserKey::new(Channel::Web, "greeter"), "你好", None),
        (retried.clone(), "红苕怎么储存", Some("msg-1")),
        (retried.clone(), "红苕怎么储存", Some("msg-1")),
        (retried.clone(), "红苕怎么储存", Some("msg-1")),
    ] {
        let engine = Arc::clone(&engine);
        let message = Incoming {
            message_id: message_id.map(str::to_owned),
            ..Incoming::text(user, text)
        };
        deliveries.push(tokio::spawn(async move { engine.handle(message).await }));
    }
    let mut replies = Vec::new();
    for delivery in deliveries {
        let reply = tokio::time::timeout(std::time::Duration::from_secs(60), delivery)
            .await
            .expect("every turn gets its place")
            .expect("task")
            .expect("reply");
        replies.push(reply);
    }
    assert_eq!(replies[0].kind, ReplyKind::Answer, "{:?}", replies[0]);
    assert_eq!(replies[1].kind, ReplyKind::Demand, "{:?}", replies[1]);
    assert!(replies[3..].iter().all(|r| r.turn_id == replies[3].turn_id));
    assert_eq!(engine.turns_waiting(), 0);
}
