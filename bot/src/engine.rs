//! The conversation engine: one message in, one reply out, whatever the
//! channel.
//!
//! Per message: dedup (a channel's retry of a message already handled gets
//! the same reply, without doing the work twice) → rate limit → by kind of
//! message: text (and recognised voice) goes through normalisation → the
//! safety filter → a filing form in progress takes it (unless it asks for a
//! person, or is a science question, answered while the form waits) →
//! commands from quick replies ("详细", "通知我") → routing → the route's
//! handler (a technical demand or capability offer opens a form); other
//! kinds (pictures, locations, follows, menu taps) get their own replies →
//! render through templates → save the session → waiting notices go first
//! → log the turn.
//!
//! Every user-facing text comes from a template in `prompts/`; every answer
//! comes from a [`PublishedEntry`], so no unpublished text can reach a user.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use embeddings::TextKind;
use kb::entry::{Entry, EntryId};
use kb::listing::{Demand, Filer, ListingBook, ListingError, NewClaim, StaffUpdate, mask_phones};
use kb::region::Regions;
use kb::{Decision, KnowledgeBase, PublishedEntry, SearchFilter, SearchOutcome};
use parking_lot::RwLock;
use prompts::Prompts;
use serde::Serialize;
use uuid::Uuid;
use webhooks::message::{
    Block, BlockRole, Channel, Citation, Content, FollowUp, Handler, HandlerError, Incoming, Push,
    QuickReply, Rating, Reply, ReplyKind, ReplyTiming, UserKey,
};

use crate::admission::Admission;
use crate::china;
use crate::context::{self, Vocabulary};
use crate::dictionary::{self, Dictionary, DictionaryError, WordEdit};
use crate::intake::{Form, FormKind, IntakeContext, IntakeWords, Step};
use crate::jobs::{JobQueue, Task};
use crate::listings::{FormStore, Notices, SessionSerials};
use crate::routing::{Route, RouteDecision, Router, RouterError, Signals};
use crate::safety::SafetyFilter;
use crate::session::{Choice, FormPresence, Session, SessionError, SessionStore, Topic};
use crate::turns::{TurnLog, TurnLogError, TurnRecord};

/// Most candidates offered in a "你是想问".
const MAX_SUGGESTIONS: usize = 3;
/// Most related questions under an answer.
const MAX_RELATED: usize = 3;
/// Related questions shown under an answer must reach this confidence, so
/// the list is about the same thing rather than whatever ranked next.
const RELATED_MIN_CONFIDENCE: f32 = 0.05;
/// A message routed to a technical demand with less confidence than this
/// is answered as a question instead of opening a filing form.
const FORM_MIN_CONFIDENCE: f32 = 0.05;
/// A question asked during a form is answered (rather than read as the
/// form's answer) when routed to science questions with this confidence.
const FORM_ESCAPE_MIN_CONFIDENCE: f32 = 0.1;
/// Capabilities shown when a demand is filed.
const MAX_MATCHES: usize = 3;
/// A user's demands listed by "查询需求" without a number.
const MAX_LISTED_DEMANDS: usize = 5;
/// Example questions in the welcome text.
const WELCOME_EXAMPLES: &[&str] = &["洋芋叶子发黑咋个办", "隔夜菜会致癌吗", "高温天气怎么防暑"];

/// How the engine behaves; the defaults suit a public deployment.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory overriding the shipped texts: `templates/*.j2`,
    /// `routes/*.txt`, `safety/sensitive.txt` (the layout of `prompts/`).
    pub prompts_dir: Option<PathBuf>,
    /// Messages one user may send per [`Self::rate_window`].
    pub rate_limit: u32,
    /// The rate-limit window.
    pub rate_window: Duration,
    /// How long a message id is remembered for dedup.
    pub dedup_ttl: Duration,
    /// How long a retry of a message still being handled waits for its reply.
    pub duplicate_wait: Duration,
    /// Where routing-example vectors are cached between runs (embedded
    /// mode); `None` embeds them at every start.
    pub cache_dir: Option<PathBuf>,
    /// How many turns are handled at once; later ones wait in arrival
    /// order (0: no limit). See `admission` for why.
    pub max_concurrent_turns: usize,
}

/// Turns per core that [`EngineConfig::max_concurrent_turns`] lets in by
/// default: enough to fill the model's batches and hide store round
/// trips, few enough that the queue forms in front of the engine, where it
/// is fair, rather than at the model. More turns in flight make bigger
/// batches (more new questions per second) and a longer tail for the
/// rest; the realistic-mix and fresh-mix runs in docs/BENCHMARKS.md chose
/// this value.
pub const DEFAULT_TURNS_PER_CORE: usize = 3;

/// The default of [`EngineConfig::max_concurrent_turns`]:
/// [`DEFAULT_TURNS_PER_CORE`] for each core this process may use (a
/// container's CPU limit counts).
pub fn default_max_concurrent_turns() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    DEFAULT_TURNS_PER_CORE * cores
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            prompts_dir: None,
            rate_limit: 30,
            rate_window: Duration::from_secs(60),
            dedup_ttl: Duration::from_secs(15 * 60),
            duplicate_wait: Duration::from_millis(4500),
            cache_dir: None,
            max_concurrent_turns: default_max_concurrent_turns(),
        }
    }
}

/// Errors from building or running the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The knowledge base failed.
    #[error(transparent)]
    Kb(#[from] kb::KbError),
    /// A template failed.
    #[error(transparent)]
    Prompt(#[from] prompts::PromptError),
    /// The session store failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The turn log failed.
    #[error(transparent)]
    Turns(#[from] TurnLogError),
    /// The routing examples are unusable.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The model failed.
    #[error("embedding failed: {0}")]
    Embed(#[from] embeddings::EmbedError),
    /// The listings failed.
    #[error(transparent)]
    Listing(#[from] ListingError),
    /// The point store failed (forms, notices).
    #[error(transparent)]
    Store(#[from] kb::store::StoreError),
    /// The intake vocabulary is unusable.
    #[error("intake vocabulary: {0}")]
    Intake(String),
    /// The editors' word edits could not be read.
    #[error(transparent)]
    Dictionary(#[from] DictionaryError),
    /// The subscribers or broadcasts failed.
    #[error(transparent)]
    Outreach(#[from] crate::outreach::OutreachError),
}

impl From<EngineError> for HandlerError {
    fn from(error: EngineError) -> Self {
        HandlerError::Unavailable(error.to_string())
    }
}

/// Texts and word lists that editors change without a restart.
struct Editable {
    prompts: Prompts,
    router: Router,
    safety: SafetyFilter,
    vocabulary: Vocabulary,
    intake: IntakeWords,
}

/// What handling a message produced, before it becomes a [`Reply`] and a
/// logged turn.
#[derive(Debug, Clone, Default)]
struct Handled {
    kind: Option<ReplyKind>,
    blocks: Vec<Block>,
    citations: Vec<Citation>,
    suggestions: Vec<String>,
    quick_replies: Vec<QuickReply>,
    confidence: f32,
    feedback: bool,
    route: String,
    route_confidence: f32,
    resolved_query: Option<String>,
}

impl Handled {
    fn into_reply(self, turn_id: String) -> Reply {
        Reply {
            turn_id,
            kind: self.kind.unwrap_or(ReplyKind::Notice),
            blocks: self.blocks,
            citations: self.citations,
            suggestions: self.suggestions,
            quick_replies: self.quick_replies,
            confidence: self.confidence,
            feedback: self.feedback,
            timing: None,
        }
    }

    fn notice(kind: ReplyKind, route: &str, text: String) -> Self {
        Self {
            kind: Some(kind),
            blocks: vec![Block::new(BlockRole::Body, text)],
            route: route.to_owned(),
            route_confidence: 1.0,
            ..Self::default()
        }
    }
}

/// What the engine knows about one message while handling it.
struct Turn<'a> {
    id: String,
    user: &'a UserKey,
    session: Session,
    /// How long this turn's routing waited for its query vector (the
    /// model, or its cache), reported to the web client beside the total.
    /// A follow-up's resolved question, embedded inside the KB's search,
    /// is not counted here: it shows as engine time, so the split never
    /// flatters the engine.
    vector_time: Duration,
}

/// Commands that quick-reply buttons send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Detail,
    NotifyMe,
    Subscribe,
    Unsubscribe,
}

fn command(normalised: &str) -> Option<Command> {
    let text: String = normalised
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_ascii_punctuation() && !"。！？，".contains(*c))
        .collect();
    match text.as_str() {
        "详细" | "详情" | "看详细" | "详细解答" | "完整答案" | "详细点" => {
            Some(Command::Detail)
        }
        "通知我" | "有答案通知我" | "有了通知我" | "通知" => {
            Some(Command::NotifyMe)
        }
        "订阅" | "订阅科普" | "订阅推送" | "精准科普" | "订阅精准科普" => {
            Some(Command::Subscribe)
        }
        "退订" | "取消订阅" | "不要推送" | "别推送了" | "td" => {
            Some(Command::Unsubscribe)
        }
        _ => None,
    }
}

/// Words that mark typed feedback as negative.
const NEGATIVE_FEEDBACK: &[&str] = &[
    "没用",
    "不对",
    "错",
    "答非所问",
    "不是我",
    "看不懂",
    "差评",
    "不满意",
    "没效果",
    "过时",
    "太长",
    "太复杂",
    "太专业",
    "慢",
    "牛头不对马嘴",
    "有问题",
    "有误",
    "不准",
    "没帮助",
    "没得用",
    "没啥子用",
    "不一样",
];

const THANKS: &[&str] = &["谢", "感谢", "辛苦"];
const FAREWELL: &[&str] = &["再见", "拜拜", "晚安", "再会", "下次"];

/// Words that make a message a question rather than an answer to one of
/// the form's questions (an organisation, a budget, a name has none).
const QUESTION_WORDS: &[&str] = &[
    "吗",
    "呢",
    "?",
    "？",
    "咋",
    "怎么",
    "如何",
    "什么",
    "啥",
    "为什么",
    "为啥",
    "哪些",
    "能不能",
    "会不会",
    "是不是",
    "要不要",
];

fn looks_like_a_question(normalised: &str) -> bool {
    QUESTION_WORDS.iter().any(|w| normalised.contains(w))
}

/// Full-width letters and digits to half-width, as chat keyboards type
/// them; nothing else changes (the analyzer's normalisation folds repeated
/// characters, which would break phone numbers such as 13800012345).
fn tidy(text: &str) -> String {
    text.chars().map(kb::text::to_half_width).collect()
}

/// What personalised push learns from a conversation: where the user is
/// (their shared location, read through the region table) and the crops
/// of its topic.
fn interest(session: &Session) -> (Option<kb::region::Place>, Vec<String>) {
    let place = session
        .region
        .as_deref()
        .and_then(|label| Regions::builtin().find(label));
    let crops = session
        .topic
        .as_ref()
        .map(|topic| topic.crops.clone())
        .unwrap_or_default();
    (place, crops)
}

/// The route name a form's turns are logged under.
fn form_route(kind: FormKind) -> &'static str {
    match kind {
        FormKind::Demand => "tech_demand",
        FormKind::Capability => "capability_offer",
    }
}

/// What a form has gathered, for the templates.
fn form_summary(form: &Form) -> serde_json::Value {
    let draft = &form.draft;
    serde_json::json!({
        "problem": draft.problem,
        "title": draft.problem.as_deref().map(crate::intake::title_of),
        "field": draft.field,
        "budget": draft.budget.map(|b| b.describe()),
        "deadline": draft.deadline.as_ref().map(|d| match d {
            Some(deadline) => deadline.text.clone(),
            None => "不限".to_owned(),
        }),
        "region": draft.city,
        "county": draft.county,
        "organisation": draft.organisation,
        "contact_name": draft.contact_name,
        "phone": draft.phone,
    })
}

fn message_kind(content: &Content) -> &'static str {
    match content {
        Content::Text { .. } => "text",
        Content::Voice { .. } => "voice",
        Content::Image => "image",
        Content::Video => "video",
        Content::Location { .. } => "location",
        Content::Link { .. } => "link",
        Content::Subscribe => "subscribe",
        Content::Unsubscribe => "unsubscribe",
        Content::Menu { .. } => "menu",
    }
}

fn citation(entry: &Entry, confidence: f32) -> Citation {
    Citation {
        entry_id: entry.id.to_string(),
        question: entry.content.question.clone(),
        source: entry.content.source.organisation.clone(),
        reviewer: entry.reviewer.clone(),
        confidence,
    }
}

/// What [`Engine::hit_test`] found.
#[derive(Debug, Clone)]
pub struct HitTest {
    /// How the text was read: normalised, rewritten (synonyms and dialect
    /// words applied, listed in `rewrites`), segmented.
    pub query: kb::text::AnalyzedQuery,
    /// Whether the text is a quick-reply command (详细, 通知我, 订阅科普,
    /// 退订), answered from the user's own state without routing.
    pub command: bool,
    /// The sensitive word that refuses the message, if any.
    pub refused_word: Option<String>,
    /// The route, with every route's score (absent when refused).
    pub route: Option<RouteDecision>,
    /// The knowledge-base search, for questions.
    pub outcome: Option<SearchOutcome>,
    /// The reply someone new would get; `None` for routes that depend on
    /// the user's own state (a numbered choice, feedback, a demand's status).
    pub reply: Option<Reply>,
}

/// The conversation engine.
pub struct Engine {
    kb: Arc<KnowledgeBase>,
    /// Channels that can message a user outside a reply.
    pushers: RwLock<std::collections::HashMap<Channel, Arc<dyn Push>>>,
    listings: Arc<ListingBook>,
    forms: FormStore,
    notices: Notices,
    sessions: Arc<dyn SessionStore>,
    jobs: Arc<dyn JobQueue>,
    turns: TurnLog,
    config: EngineConfig,
    editable: RwLock<Arc<Editable>>,
    sources: EditableSources,
    outreach: crate::outreach::Outreach,
    admission: Admission,
}

/// Where the editable texts and word lists come from, besides the prompts
/// directory.
struct EditableSources {
    /// Routing-example vectors by text, so a reload embeds only new examples.
    example_cache: tokio::sync::Mutex<ExampleCache>,
    /// Editors' word edits.
    dictionary: Dictionary,
    /// The analyzer the knowledge base opened with, before the word edits.
    base_analyzer: Arc<kb::text::Analyzer>,
}

/// The file, in [`EngineConfig::cache_dir`], of the routing-example vectors.
const EXAMPLE_CACHE_FILE: &str = "route-examples.json";

/// The routing examples' vectors, cached as JSON by model id and text.
#[derive(serde::Deserialize, Serialize, Default)]
struct ExampleCache {
    model: String,
    vectors: std::collections::HashMap<String, Vec<f32>>,
}

impl Engine {
    /// Builds the engine: loads the texts, embeds the routing examples and
    /// reads the knowledge base's vocabulary.
    pub async fn open(
        kb: Arc<KnowledgeBase>,
        sessions: Arc<dyn SessionStore>,
        jobs: Arc<dyn JobQueue>,
        turns: TurnLog,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let model = kb.embedder().model_id().to_owned();
        let cache = config
            .cache_dir
            .as_ref()
            .and_then(|dir| std::fs::read(dir.join(EXAMPLE_CACHE_FILE)).ok())
            .and_then(|bytes| serde_json::from_slice::<ExampleCache>(&bytes).ok())
            .filter(|cache| cache.model == model)
            .unwrap_or(ExampleCache {
                model,
                vectors: std::collections::HashMap::new(),
            });
        let sources = EditableSources {
            example_cache: tokio::sync::Mutex::new(cache),
            dictionary: Dictionary::open(kb.store(), Arc::clone(&sessions)).await?,
            base_analyzer: kb.analyzer(),
        };
        let editable = Self::load_editable(&kb, &config, &sources).await?;
        let listings = ListingBook::open(
            kb.store(),
            kb.embedder().clone(),
            kb.analyzer(),
            Arc::new(SessionSerials(Arc::clone(&sessions))),
        )
        .await?;
        let forms = FormStore::open(kb.store()).await?;
        let notices = Notices::open(kb.store()).await?;
        let outreach = crate::outreach::Outreach::open(kb.store()).await?;
        Ok(Self {
            kb,
            pushers: RwLock::default(),
            listings: Arc::new(listings),
            forms,
            notices,
            sessions,
            jobs,
            turns,
            admission: Admission::new(config.max_concurrent_turns),
            config,
            editable: RwLock::new(Arc::new(editable)),
            sources,
            outreach,
        })
    }

    /// Reloads templates, routing examples, sensitive words and the
    /// vocabulary; on error the old ones stay in use.
    pub async fn reload(&self) -> Result<(), EngineError> {
        let editable = Self::load_editable(&self.kb, &self.config, &self.sources).await?;
        *self.editable.write() = Arc::new(editable);
        Ok(())
    }

    async fn load_editable(
        kb: &KnowledgeBase,
        config: &EngineConfig,
        sources: &EditableSources,
    ) -> Result<Editable, EngineError> {
        let cache = &sources.example_cache;
        let edits = sources.dictionary.edits().await?;
        let dir = config.prompts_dir.as_deref();
        let prompts = match dir {
            Some(dir) => {
                let (prompts, problems) = Prompts::load(&dir.join("templates"));
                for problem in problems {
                    tracing::warn!(%problem, "template override ignored");
                }
                prompts
            }
            None => Prompts::builtin(),
        };
        let examples = prompts::route_examples(dir.map(|d| d.join("routes")).as_deref())?;
        let cues = prompts::route_cues(dir.map(|d| d.join("routes")).as_deref())?;
        let safety = SafetyFilter::new(dictionary::merged_sensitive_words(
            prompts::sensitive_words(dir.map(|d| d.join("safety")).as_deref())?,
            &edits,
        ));
        let analyzer = kb.analyzer();
        let texts: Vec<String> = examples
            .iter()
            .map(|e| analyzer.embedding_text(&e.text))
            .collect();
        let vectors = Self::example_vectors(kb, config, cache, texts).await?;
        let router = Router::new(
            examples
                .into_iter()
                .zip(vectors)
                .map(|(example, vector)| (example.route, vector))
                .collect(),
            cues,
        )?;
        let vocabulary = Vocabulary::from_kb(kb.vocabulary().await?);
        let intake_dir = dir.map(|d| d.join("intake"));
        let intake = IntakeWords::from_tables(
            &prompts::intake_table(intake_dir.as_deref(), "fields.tsv")?,
            &prompts::intake_table(intake_dir.as_deref(), "words.tsv")?,
        )
        .map_err(EngineError::Intake)?;
        // Last, so a failure above leaves the old analyzer in use too.
        Self::apply_synonym_edits(kb, &sources.base_analyzer, &edits).await;
        Ok(Editable {
            prompts,
            router,
            safety,
            vocabulary,
            intake,
        })
    }

    /// Gives the knowledge base an analyzer with the editors' synonym edits
    /// over the base dictionary, when they differ from the one in use.
    /// Building one loads the segmenter's dictionary (tens of
    /// milliseconds), so it runs on a blocking thread and only on change.
    async fn apply_synonym_edits(
        kb: &KnowledgeBase,
        base: &Arc<kb::text::Analyzer>,
        edits: &[WordEdit],
    ) {
        let wanted = dictionary::merged_synonyms(base.synonyms().pairs().iter().cloned(), edits);
        let mut current = kb.analyzer().synonyms().pairs().to_vec();
        current.sort();
        if current == wanted {
            return;
        }
        let base = Arc::clone(base);
        let built = tokio::task::spawn_blocking(move || {
            kb::text::Analyzer::new(
                base.terms().map(str::to_owned).collect::<Vec<_>>(),
                kb::text::Synonyms::new(wanted),
                base.subjects().subjects().to_vec(),
            )
        })
        .await;
        match built {
            Ok(analyzer) => {
                tracing::info!(
                    synonyms = analyzer.synonyms().pairs().len(),
                    "synonym edits applied"
                );
                kb.set_analyzer(analyzer);
            }
            Err(error) => {
                tracing::error!(%error, "building the analyzer failed; the old one stays")
            }
        }
    }

    /// The sensitive words in use (shipped, overridden and edited).
    pub fn sensitive_words(&self) -> Vec<String> {
        self.editable.read().safety.words().to_vec()
    }

    /// Subscribers and broadcasts of personalised push.
    pub fn outreach(&self) -> &crate::outreach::Outreach {
        &self.outreach
    }

    /// The editors' word edits.
    pub fn dictionary(&self) -> &Dictionary {
        &self.sources.dictionary
    }

    /// Embeds the routing examples, reusing cached vectors of the same model.
    async fn example_vectors(
        kb: &KnowledgeBase,
        config: &EngineConfig,
        cache: &tokio::sync::Mutex<ExampleCache>,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut cache = cache.lock().await;
        let missing: Vec<String> = texts
            .iter()
            .filter(|t| !cache.vectors.contains_key(*t))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            tracing::info!(examples = missing.len(), "embedding routing examples");
            let vectors = kb
                .embedder()
                .embed_many(missing.clone(), TextKind::Query)
                .await?;
            cache.vectors.extend(missing.into_iter().zip(vectors));
            if let Some(dir) = &config.cache_dir {
                write_cache(&dir.join(EXAMPLE_CACHE_FILE), &cache);
            }
        }
        Ok(texts
            .iter()
            .map(|t| cache.vectors.get(t).cloned().unwrap_or_default())
            .collect())
    }

    /// The knowledge base.
    pub fn kb(&self) -> &Arc<KnowledgeBase> {
        &self.kb
    }

    /// The demand and capability listings.
    pub fn listings(&self) -> &Arc<ListingBook> {
        &self.listings
    }

    /// Notices waiting for users.
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    /// Records a claim (揭榜) of a demand and tells the demand's filer.
    pub async fn claim_demand(&self, number: &str, claim: NewClaim) -> Result<Demand, EngineError> {
        let before = self.listings.demand(number).await?;
        let demand = self.listings.claim(number, claim).await?;
        let is_new = before.is_none_or(|b| b.claims.len() < demand.claims.len());
        if is_new && let (Some(filer), Some(claim)) = (&demand.filed_by, demand.claims.last()) {
            let prompts = Arc::clone(&self.editable.read());
            let text = prompts.prompts.render(
                "demand_claimed.j2",
                serde_json::json!({
                    "number": demand.number,
                    "title": demand.content.title,
                    "capability": claim.capability_name,
                    "note": claim.note,
                }),
            )?;
            self.notify(&filer.user, text).await;
        }
        Ok(demand)
    }

    /// Applies a staff member's change to a demand (一单一策) and tells the
    /// demand's filer what changed.
    pub async fn update_demand(
        &self,
        number: &str,
        update: StaffUpdate,
        actor: &str,
    ) -> Result<Demand, EngineError> {
        let before = self.listings.demand(number).await?;
        let demand = self.listings.update_demand(number, update, actor).await?;
        let logged = before.is_none_or(|b| b.log.len() < demand.log.len());
        if logged && let (Some(filer), Some(line)) = (&demand.filed_by, demand.last_log()) {
            let prompts = Arc::clone(&self.editable.read());
            let text = prompts.prompts.render(
                "demand_updated.j2",
                serde_json::json!({
                    "number": demand.number,
                    "status": demand.status.as_str(),
                    "staff": demand.staff,
                    "text": line.text,
                }),
            )?;
            self.notify(&filer.user, text).await;
        }
        Ok(demand)
    }

    /// Lets the engine message users of `channel` outside a reply.
    pub fn register_push(&self, channel: Channel, push: Arc<dyn Push>) {
        self.pushers.write().insert(channel, push);
    }

    /// Renders one of the editable templates (for channel texts such as the
    /// WeChat interim reply).
    pub fn render(&self, template: &str, context: impl Serialize) -> Result<String, EngineError> {
        let editable = Arc::clone(&self.editable.read());
        Ok(editable.prompts.render(template, context)?)
    }

    /// Tells a user something outside a reply: stored as a notice for the
    /// user's next reply, and pushed by a job where the channel can.
    ///
    /// The change it tells of is already saved, so a failure here is
    /// logged, not returned: the caller must not retry (and repeat) the
    /// change because a notice could not be queued.
    pub async fn notify(&self, user_key: &str, text: String) {
        let notice = match self.notices.push(user_key, text).await {
            Ok(notice) => notice,
            Err(error) => {
                tracing::error!(%error, user = user_key, "notice lost: the notices store failed");
                return;
            }
        };
        let pushable = UserKey::from_storage_key(user_key)
            .is_some_and(|user| self.pushers.read().contains_key(&user.channel));
        if !pushable {
            return;
        }
        let task = Task::PushNotice {
            user: user_key.to_owned(),
            notice: notice.id,
        };
        if let Err(error) = self.jobs.enqueue(task).await {
            tracing::warn!(%error, "notice kept for the next contact: its push was not queued");
        }
    }

    /// The channel's push, where this process has one.
    pub(crate) fn pusher(&self, channel: Channel) -> Option<Arc<dyn Push>> {
        self.pushers.read().get(&channel).cloned()
    }

    /// The background job queue.
    pub fn jobs(&self) -> &Arc<dyn JobQueue> {
        &self.jobs
    }

    /// The reply to a message whose channel stopped waiting for it: the
    /// one its first handling stored, `None` while that is still being
    /// computed, or with `afresh` a new answer (for when the handling
    /// died with its process).
    pub(crate) async fn late_reply(
        &self,
        message: Incoming,
        afresh: bool,
    ) -> Result<Option<Reply>, EngineError> {
        let Some(message_id) = message.message_id.clone() else {
            return self.handle_once(message).await.map(Some);
        };
        let reply_key = reply_key(&message.user, &message_id);
        if let Some(reply) = self.stored_reply(&reply_key).await? {
            return Ok(Some(reply));
        }
        if !afresh {
            return Ok(None);
        }
        let reply = self.handle_once(message).await?;
        self.store_reply(&reply_key, &reply).await?;
        Ok(Some(reply))
    }

    /// The session store.
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// The turn log.
    pub fn turns(&self) -> &TurnLog {
        &self.turns
    }

    /// Routes a text as the engine would, without answering it (for
    /// `wenke eval --routes` and hit testing).
    pub async fn route(&self, text: &str) -> Result<RouteDecision, EngineError> {
        let query = self.kb.analyzer().analyze_query(text);
        if let Some(decision) = Router::by_rule(&query.normalised) {
            return Ok(decision);
        }
        let editable = Arc::clone(&self.editable.read());
        self.decide(&query, &editable).await
    }

    /// What the bot would do with a message from someone new, for the
    /// console's hit testing: how the text was read, the route, the ranked
    /// entries with their evidence, and the reply. It has no side effect:
    /// no session is read or saved, no turn is logged, no form is opened,
    /// no rate limit counts.
    pub async fn hit_test(&self, text: &str) -> Result<HitTest, EngineError> {
        let editable = Arc::clone(&self.editable.read());
        let prompts = &editable.prompts;
        let query = self.kb.analyzer().analyze_query(text);
        let mut test = HitTest {
            query: query.clone(),
            command: false,
            refused_word: None,
            route: None,
            outcome: None,
            reply: None,
        };
        if let Some(word) = editable.safety.find(&query.normalised) {
            test.refused_word = Some(word.to_owned());
            let refused = Handled::notice(
                ReplyKind::Refused,
                "refused",
                prompts.render("refused.j2", ())?,
            );
            test.reply = Some(refused.into_reply(String::new()));
            return Ok(test);
        }
        if command(&query.normalised).is_some() {
            // 详细, 通知我, 订阅科普, 退订: quick-reply commands, answered
            // from the user's own state before any routing.
            test.command = true;
            return Ok(test);
        }
        let decision = match Router::by_rule(&query.normalised) {
            Some(decision) => decision,
            None => self.decide(&query, &editable).await?,
        };
        let user = UserKey::new(Channel::Web, "console-hit-test");
        let mut turn = Turn {
            id: String::new(),
            user: &user,
            session: Session::default(),
            vector_time: Duration::ZERO,
        };
        let answered_as_question = decision.route == Route::ScienceQuestion
            || (decision.route == Route::TechDemand && decision.confidence < FORM_MIN_CONFIDENCE);
        let handled = if answered_as_question {
            // Someone new has no topic: the question is searched as it is.
            let outcome = self
                .kb
                .search(&query.rewritten, &SearchFilter::default())
                .await?;
            let handled = self.render_outcome(&outcome, &mut turn, &editable).await?;
            test.outcome = Some(outcome);
            Some(handled)
        } else {
            match decision.route {
                Route::Greeting | Route::Help | Route::Human => Some(Self::fixed_reply(
                    decision.route,
                    &query.normalised,
                    prompts,
                )?),
                Route::TechDemand | Route::CapabilityOffer => {
                    let kind = if decision.route == Route::TechDemand {
                        FormKind::Demand
                    } else {
                        FormKind::Capability
                    };
                    let context = Self::intake_context(&editable, china::today());
                    let (form, step) = Form::start(String::new(), kind, &tidy(text), &context);
                    Some(Self::render_form_step(&form, &step, &editable)?)
                }
                // These read the user's own state (their last reply, their
                // demands): there is nothing to show for someone new.
                Route::ScienceQuestion | Route::Choice | Route::Feedback | Route::DemandStatus => {
                    None
                }
            }
        };
        test.reply = handled.map(|handled| handled.into_reply(String::new()));
        test.route = Some(decision);
        Ok(test)
    }

    fn signals(editable: &Editable, rewritten: &str) -> Signals {
        let vocabulary = &editable.vocabulary;
        Signals {
            names_subject: !vocabulary.crops_in(rewritten).is_empty()
                || !vocabulary.subjects_in(rewritten).is_empty(),
        }
    }

    /// Routes an analysed text by the nearest labelled examples and cues
    /// (the rules having said nothing); embeds it once, and the KB's cache
    /// serves the same vector to the search that may follow.
    async fn decide(
        &self,
        query: &kb::text::AnalyzedQuery,
        editable: &Editable,
    ) -> Result<RouteDecision, EngineError> {
        Ok(self.decide_timed(query, editable).await?.0)
    }

    /// [`Self::decide`] within a turn, which counts the query vector's time.
    async fn decide_in_turn(
        &self,
        query: &kb::text::AnalyzedQuery,
        editable: &Editable,
        turn: &mut Turn<'_>,
    ) -> Result<RouteDecision, EngineError> {
        let (decision, vector_time) = self.decide_timed(query, editable).await?;
        turn.vector_time += vector_time;
        Ok(decision)
    }

    /// The decision and how long its query vector took.
    async fn decide_timed(
        &self,
        query: &kb::text::AnalyzedQuery,
        editable: &Editable,
    ) -> Result<(RouteDecision, Duration), EngineError> {
        let analyzer = self.kb.analyzer();
        let started = Instant::now();
        let vector = self
            .kb
            .embed_query(&analyzer.embedding_text(&query.rewritten))
            .await?;
        let vector_time = started.elapsed();
        crate::metrics::global().step(crate::metrics::Step::Vector, vector_time);
        let signals = Self::signals(editable, &query.rewritten);
        Ok((
            editable.router.route(&query.normalised, &vector, signals),
            vector_time,
        ))
    }

    /// Turns waiting for their place in the engine right now.
    pub fn turns_waiting(&self) -> usize {
        self.admission.waiting()
    }

    async fn handle_once(&self, message: Incoming) -> Result<Reply, EngineError> {
        // The wait counts in the turn's latency: it is what the user waits.
        let started = Instant::now();
        let _admitted = self.admission.enter().await;
        let session = self.sessions.load(&message.user).await?;
        let mut turn = Turn {
            id: TurnLog::new_turn_id(),
            user: &message.user,
            session,
            vector_time: Duration::ZERO,
        };
        let rate_key = format!("rate:{}", message.user.storage_key());
        let allowed = self
            .sessions
            .allow(&rate_key, self.config.rate_limit, self.config.rate_window)
            .await?;
        let editable = Arc::clone(&self.editable.read());
        let (handled, logged_text) = if allowed {
            self.dispatch(&message, &mut turn, &editable).await?
        } else {
            let text = editable.prompts.render("rate_limited.j2", ())?;
            (
                Handled::notice(ReplyKind::RateLimited, "rate_limited", text),
                message.content.text().unwrap_or_default().to_owned(),
            )
        };
        if !matches!(message.content, Content::Unsubscribe) {
            self.sessions.save(&message.user, &turn.session).await?;
        }
        let mut handled = handled;
        // An opt-out reply carries nothing pushed: a queued broadcast would
        // be the very thing refused.
        if allowed
            && !matches!(message.content, Content::Unsubscribe)
            && handled.route != "unsubscribe"
        {
            self.deliver_notices(&message.user, &mut handled).await?;
        }
        let kind = handled.kind.unwrap_or(ReplyKind::Notice);
        crate::metrics::global().reply(message.user.channel.as_str(), kind.as_str());
        let route = std::mem::take(&mut handled.route);
        let route_confidence = handled.route_confidence;
        let resolved_query = handled.resolved_query.take();
        let mut reply = handled.into_reply(turn.id.clone());
        let vector_time = turn.vector_time;
        let latency_ms = started.elapsed().as_secs_f32() * 1000.0;
        let record = TurnRecord {
            turn_id: turn.id,
            at: message.received_at.unix_timestamp(),
            day: china::day(message.received_at),
            channel: message.user.channel.as_str().to_owned(),
            user: message.user.storage_key(),
            message_kind: message_kind(&message.content).to_owned(),
            text: mask_phones(&logged_text),
            resolved_query: resolved_query.map(|q| mask_phones(&q)),
            route,
            route_confidence,
            reply_kind: kind.as_str().to_owned(),
            entry_ids: reply.citations.iter().map(|c| c.entry_id.clone()).collect(),
            confidence: reply.confidence,
            latency_ms,
            region: turn.session.region.clone(),
            notify: false,
            feedback: None,
        };
        tracing::info!(
            turn = record.turn_id,
            channel = record.channel,
            route = record.route,
            reply = record.reply_kind,
            confidence = record.confidence,
            resolved = record.resolved_query.as_deref().unwrap_or(""),
            // Rounded: the f32 widened to f64 prints binary noise digits
            // ("99.13330078125"), which the log check can take for a phone
            // number.
            latency_ms = %format_args!("{latency_ms:.1}"),
            "turn"
        );
        self.turns.record(record).await?;
        reply.timing = Some(ReplyTiming {
            vector: vector_time,
            engine: started.elapsed(),
        });
        Ok(reply)
    }

    /// Puts the user's waiting notices (a claim of their demand, a status
    /// change) before the reply, and marks them delivered.
    async fn deliver_notices(
        &self,
        user: &UserKey,
        handled: &mut Handled,
    ) -> Result<(), EngineError> {
        let pending = self.notices.pending(&user.storage_key()).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let ids = pending.iter().map(|n| n.id).collect();
        let blocks = pending
            .into_iter()
            .map(|notice| Block::new(BlockRole::Body, notice.text));
        handled.blocks.splice(0..0, blocks);
        self.notices.delivered(ids).await?;
        Ok(())
    }

    /// Handles a message by its kind; returns what was done and the text to log.
    async fn dispatch(
        &self,
        message: &Incoming,
        turn: &mut Turn<'_>,
        editable: &Editable,
    ) -> Result<(Handled, String), EngineError> {
        let prompts = &editable.prompts;
        let handled = match &message.content {
            Content::Text { text }
            | Content::Voice {
                recognition: Some(text),
            } if !text.trim().is_empty() => {
                return Ok((self.on_text(text, turn, editable).await?, text.clone()));
            }
            Content::Text { .. } | Content::Voice { .. } => Handled::notice(
                ReplyKind::Notice,
                "voice_unrecognised",
                prompts.render("voice_unrecognised.j2", ())?,
            ),
            Content::Image | Content::Video => {
                let what = if matches!(message.content, Content::Image) {
                    "图片"
                } else {
                    "视频"
                };
                Handled::notice(
                    ReplyKind::Notice,
                    "media",
                    prompts.render("media_received.j2", serde_json::json!({ "what": what }))?,
                )
            }
            Content::Location { label, .. } => {
                if let Some(label) = label.as_ref().filter(|l| !l.trim().is_empty()) {
                    turn.session.region = Some(label.trim().to_owned());
                    self.note_interest(turn).await?;
                }
                Handled::notice(
                    ReplyKind::Notice,
                    "location",
                    prompts.render("location.j2", serde_json::json!({ "label": label }))?,
                )
            }
            Content::Link { title, .. } => Handled::notice(
                ReplyKind::Notice,
                "link",
                prompts.render("link.j2", serde_json::json!({ "title": title }))?,
            ),
            Content::Subscribe => self.welcome(prompts)?,
            Content::Unsubscribe => {
                // Unfollowing ends personalised push too.
                self.outreach.unsubscribe(turn.user).await?;
                self.sessions.forget(turn.user).await?;
                Handled::notice(ReplyKind::Notice, "unsubscribe", String::new())
            }
            Content::Menu { key } => match key.to_ascii_uppercase().as_str() {
                "HELP" => Handled::notice(ReplyKind::Help, "help", prompts.render("help.j2", ())?),
                "EXAMPLES" | "WELCOME" => self.welcome(prompts)?,
                "HUMAN" => {
                    Handled::notice(ReplyKind::Human, "human", prompts.render("human.j2", ())?)
                }
                "DEMAND" => {
                    self.start_form(FormKind::Demand, "", turn, editable)
                        .await?
                }
                _ => Handled::notice(
                    ReplyKind::Notice,
                    "menu",
                    prompts.render("unknown_menu.j2", ())?,
                ),
            },
        };
        let logged = match &message.content {
            Content::Menu { key } => format!("[menu:{key}]"),
            Content::Link { title, url } => format!("[link] {title} {url}"),
            other => format!("[{}]", message_kind(other)),
        };
        Ok((handled, logged))
    }

    fn welcome(&self, prompts: &Prompts) -> Result<Handled, EngineError> {
        let text = prompts.render(
            "welcome.j2",
            serde_json::json!({ "examples": WELCOME_EXAMPLES }),
        )?;
        let mut handled = Handled::notice(ReplyKind::Greeting, "subscribe", text);
        handled.suggestions = WELCOME_EXAMPLES.iter().map(|q| (*q).to_owned()).collect();
        Ok(handled)
    }

    async fn on_text(
        &self,
        text: &str,
        turn: &mut Turn<'_>,
        editable: &Editable,
    ) -> Result<Handled, EngineError> {
        let prompts = &editable.prompts;
        let analyzer = self.kb.analyzer();
        let query = analyzer.analyze_query(text);
        let normalised = query.normalised.as_str();

        if let Some(word) = editable.safety.find(normalised) {
            tracing::info!(turn = turn.id, word, "message refused by the safety filter");
            return Ok(Handled::notice(
                ReplyKind::Refused,
                "refused",
                prompts.render("refused.j2", ())?,
            ));
        }
        if let Some(form) = self.open_form(turn).await? {
            let rule = Router::by_rule(normalised);
            let wants_person = rule.as_ref().is_some_and(|d| d.route == Route::Human);
            if !wants_person {
                // A science question asked in the middle of a form is
                // answered, and the form waits for its answer.
                if rule.is_none() && looks_like_a_question(normalised) {
                    let decision = self.decide_in_turn(&query, editable, turn).await?;
                    if decision.route == Route::ScienceQuestion
                        && decision.confidence >= FORM_ESCAPE_MIN_CONFIDENCE
                    {
                        let mut handled = self
                            .answer_question(&query.rewritten, turn, editable)
                            .await?;
                        let kind = match form.kind {
                            FormKind::Demand => "demand",
                            FormKind::Capability => "capability",
                        };
                        handled.blocks.push(Block::new(
                            BlockRole::Hint,
                            prompts
                                .render("intake_paused.j2", serde_json::json!({ "kind": kind }))?,
                        ));
                        handled.route = decision.route.as_str().to_owned();
                        handled.route_confidence = decision.confidence;
                        return Ok(handled);
                    }
                }
                return self.continue_form(form, text, turn, editable).await;
            }
        }
        match command(normalised) {
            Some(Command::Detail) => return self.detail(turn, prompts).await,
            Some(Command::NotifyMe) => return self.notify_me(turn, prompts).await,
            Some(Command::Subscribe) => return self.subscribe(turn, prompts).await,
            Some(Command::Unsubscribe) => return self.unsubscribe(turn, prompts).await,
            None => {}
        }

        let decision = match Router::by_rule(normalised) {
            Some(decision) => decision,
            None => self.decide_in_turn(&query, editable, turn).await?,
        };
        let mut handled = match decision.route {
            Route::ScienceQuestion => {
                let handled = self
                    .answer_question(&query.rewritten, turn, editable)
                    .await?;
                self.note_interest(turn).await?;
                handled
            }
            Route::Choice => {
                self.choose(decision.choice.unwrap_or(0), turn, editable)
                    .await?
            }
            Route::TechDemand if decision.confidence < FORM_MIN_CONFIDENCE => {
                // Barely a demand ("家里天然气泄漏了第一步该干啥" came close):
                // answering costs nothing, a form the user did not want does.
                self.answer_question(&query.rewritten, turn, editable)
                    .await?
            }
            Route::TechDemand => {
                self.start_form(FormKind::Demand, text, turn, editable)
                    .await?
            }
            Route::CapabilityOffer => {
                self.start_form(FormKind::Capability, text, turn, editable)
                    .await?
            }
            Route::Greeting | Route::Help | Route::Human => {
                Self::fixed_reply(decision.route, normalised, prompts)?
            }
            Route::Feedback => self.typed_feedback(normalised, turn, prompts).await?,
            Route::DemandStatus => {
                self.demand_status(decision.demand_number.as_deref(), turn, prompts)
                    .await?
            }
        };
        handled.route = decision.route.as_str().to_owned();
        handled.route_confidence = decision.confidence;
        Ok(handled)
    }

    /// The reply of a route that depends on nothing but the words: small
    /// talk, help, the hand-over to a person.
    fn fixed_reply(
        route: Route,
        normalised: &str,
        prompts: &Prompts,
    ) -> Result<Handled, EngineError> {
        Ok(match route {
            Route::Greeting => {
                let thanks = THANKS.iter().any(|w| normalised.contains(w));
                let farewell = FAREWELL.iter().any(|w| normalised.contains(w));
                Handled::notice(
                    ReplyKind::Greeting,
                    "greeting",
                    prompts.render(
                        "greeting.j2",
                        serde_json::json!({ "thanks": thanks, "farewell": farewell }),
                    )?,
                )
            }
            Route::Human => {
                Handled::notice(ReplyKind::Human, "human", prompts.render("human.j2", ())?)
            }
            _ => Handled::notice(ReplyKind::Help, "help", prompts.render("help.j2", ())?),
        })
    }

    fn intake_context<'a>(editable: &'a Editable, today: time::Date) -> IntakeContext<'a> {
        IntakeContext {
            words: &editable.intake,
            regions: Regions::builtin(),
            today,
        }
    }

    /// The user's open filing form. The form store is read only when the
    /// session does not know that there is none (see [`FormPresence`]).
    async fn open_form(&self, turn: &mut Turn<'_>) -> Result<Option<Form>, EngineError> {
        if turn.session.form == FormPresence::Absent {
            return Ok(None);
        }
        let form = self.forms.load(turn.user).await?;
        turn.session.form = if form.is_some() {
            FormPresence::Open
        } else {
            FormPresence::Absent
        };
        Ok(form)
    }

    /// Saves the user's form. A session that says there is no form is
    /// first saved saying there is one: a crash between the two saves must
    /// not leave a form that the session hides.
    async fn save_form(&self, form: &Form, turn: &mut Turn<'_>) -> Result<(), EngineError> {
        if turn.session.form != FormPresence::Open {
            turn.session.form = FormPresence::Open;
            self.sessions.save(turn.user, &turn.session).await?;
        }
        self.forms.save(turn.user, form).await?;
        Ok(())
    }

    /// Ends the user's form.
    async fn end_form(&self, turn: &mut Turn<'_>) -> Result<(), EngineError> {
        self.forms.clear(turn.user).await?;
        turn.session.form = FormPresence::Absent;
        Ok(())
    }

    /// Opens a filing form from the message that asked for it.
    async fn start_form(
        &self,
        kind: FormKind,
        text: &str,
        turn: &mut Turn<'_>,
        editable: &Editable,
    ) -> Result<Handled, EngineError> {
        let context = Self::intake_context(editable, china::today());
        let (form, step) = Form::start(Uuid::now_v7().to_string(), kind, &tidy(text), &context);
        self.after_step(form, step, turn, editable).await
    }

    async fn continue_form(
        &self,
        mut form: Form,
        text: &str,
        turn: &mut Turn<'_>,
        editable: &Editable,
    ) -> Result<Handled, EngineError> {
        let context = Self::intake_context(editable, china::today());
        let step = form.answer(&tidy(text), &context);
        self.after_step(form, step, turn, editable).await
    }

    /// Keeps or ends the form after a step and renders what it asks for.
    async fn after_step(
        &self,
        form: Form,
        step: Step,
        turn: &mut Turn<'_>,
        editable: &Editable,
    ) -> Result<Handled, EngineError> {
        match step {
            Step::Confirm { .. } => {
                // The summary is what "确认" files: its vector can be
                // computed while the user reads it.
                if form.kind == FormKind::Demand
                    && let Some(content) = form.demand()
                {
                    self.listings.prepare_demand(&content);
                }
                self.save_form(&form, turn).await?;
            }
            Step::Ask { .. } => self.save_form(&form, turn).await?,
            Step::Cancelled => self.end_form(turn).await?,
            Step::File => {
                let mut handled = self.file_form(&form, turn, &editable.prompts).await?;
                self.end_form(turn).await?;
                handled.route = form_route(form.kind).to_owned();
                handled.route_confidence = 1.0;
                return Ok(handled);
            }
        }
        Self::render_form_step(&form, &step, editable)
    }

    /// What the form says after a step that files nothing (a question, the
    /// summary, the cancellation); [`Step::File`] renders as the summary.
    fn render_form_step(
        form: &Form,
        step: &Step,
        editable: &Editable,
    ) -> Result<Handled, EngineError> {
        let prompts = &editable.prompts;
        let route = form_route(form.kind);
        let kind = match form.kind {
            FormKind::Demand => "demand",
            FormKind::Capability => "capability",
        };
        let summary = form_summary(form);
        let mut handled = match step {
            Step::Ask {
                slot,
                retry,
                corrected,
            } => {
                let text = prompts.render(
                    "intake_ask.j2",
                    serde_json::json!({
                        "kind": kind,
                        "slot": slot.as_str(),
                        "retry": retry.map(|r| r.as_str()),
                        "corrected": corrected,
                        "first": form.turns == 1,
                        "fields": editable.intake.field_names(),
                        "draft": summary,
                    }),
                )?;
                let mut handled = Handled::notice(ReplyKind::Demand, route, text);
                handled.quick_replies = vec![QuickReply::new("取消", "取消")];
                handled
            }
            Step::Confirm { changed } => {
                let text = prompts.render(
                    "intake_summary.j2",
                    serde_json::json!({ "kind": kind, "changed": changed, "draft": summary }),
                )?;
                let mut handled = Handled::notice(ReplyKind::Demand, route, text);
                handled.quick_replies = vec![
                    QuickReply::new("确认提交", "确认"),
                    QuickReply::new("取消", "取消"),
                ];
                handled
            }
            Step::File => {
                let text = prompts.render(
                    "intake_summary.j2",
                    serde_json::json!({ "kind": kind, "changed": false, "draft": summary }),
                )?;
                Handled::notice(ReplyKind::Demand, route, text)
            }
            Step::Cancelled => Handled::notice(
                ReplyKind::Demand,
                route,
                prompts.render("intake_cancelled.j2", serde_json::json!({ "kind": kind }))?,
            ),
        };
        handled.route = route.to_owned();
        handled.route_confidence = 1.0;
        Ok(handled)
    }

    /// Files the listing a confirmed form describes. The listing's id comes
    /// from the form's, so filing again (a crash before the form was
    /// cleared) returns the listing filed the first time.
    async fn file_form(
        &self,
        form: &Form,
        turn: &mut Turn<'_>,
        prompts: &Prompts,
    ) -> Result<Handled, EngineError> {
        let filer = Filer {
            channel: turn.user.channel.as_str().to_owned(),
            user: turn.user.storage_key(),
        };
        match form.kind {
            FormKind::Demand => {
                let Some(content) = form.demand() else {
                    return Err(EngineError::Intake("confirmed form is incomplete".into()));
                };
                let (demand, matches) = self
                    .listings
                    .file_demand_and_match(&form.id, content, Some(filer), MAX_MATCHES)
                    .await?;
                let shown: Vec<serde_json::Value> = matches
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "capability": m.capability.public_view(),
                            "reasons": m.reasons,
                        })
                    })
                    .collect();
                tracing::info!(turn = turn.id, number = demand.number, "demand filed");
                let text = prompts.render(
                    "demand_filed.j2",
                    serde_json::json!({
                        "number": demand.number,
                        "status": demand.status.as_str(),
                        "matches": shown,
                    }),
                )?;
                let mut handled = Handled::notice(ReplyKind::Demand, "tech_demand", text);
                handled.quick_replies = vec![QuickReply::new(
                    "查询进度",
                    format!("查询需求 {}", demand.number),
                )];
                Ok(handled)
            }
            FormKind::Capability => {
                let Some(content) = form.capability() else {
                    return Err(EngineError::Intake("confirmed form is incomplete".into()));
                };
                let (capability, _) = self
                    .listings
                    .offer_capability(&form.id, content, Some(filer), None)
                    .await?;
                tracing::info!(
                    turn = turn.id,
                    number = capability.number,
                    "capability listed"
                );
                let text = prompts.render(
                    "capability_filed.j2",
                    serde_json::json!({ "number": capability.number }),
                )?;
                Ok(Handled::notice(ReplyKind::Demand, "capability_offer", text))
            }
        }
    }

    /// "查询需求 XQ-…": the status, the staff member and the last log line,
    /// to the user who filed it only; anyone else hears it was not found,
    /// so numbers cannot be probed. Without a number: the user's demands.
    async fn demand_status(
        &self,
        number: Option<&str>,
        turn: &mut Turn<'_>,
        prompts: &Prompts,
    ) -> Result<Handled, EngineError> {
        let user = turn.user.storage_key();
        let context = match number {
            Some(number) => {
                let demand = self
                    .listings
                    .demand(number)
                    .await?
                    .filter(|d| d.filed_by.as_ref().is_some_and(|f| f.user == user));
                match demand {
                    Some(demand) => serde_json::json!({
                        "number": demand.number,
                        "found": true,
                        "title": demand.content.title,
                        "status": demand.status.as_str(),
                        "staff": demand.staff,
                        "claims": demand.claims.len(),
                        "last": demand.last_log().map(|line| serde_json::json!({
                            "text": line.text,
                            "day": china::day_of(line.at),
                        })),
                    }),
                    None => serde_json::json!({ "number": number, "found": false }),
                }
            }
            None => {
                let mine: Vec<serde_json::Value> = self
                    .listings
                    .demands(None, Some(&user))
                    .await?
                    .iter()
                    .take(MAX_LISTED_DEMANDS)
                    .map(|d| {
                        serde_json::json!({
                            "number": d.number,
                            "title": d.content.title,
                            "status": d.status.as_str(),
                        })
                    })
                    .collect();
                serde_json::json!({ "number": null, "mine": mine })
            }
        };
        Ok(Handled::notice(
            ReplyKind::Status,
            "demand_status",
            prompts.render("demand_status.j2", context)?,
        ))
    }

    async fn answer_question(
        &self,
        rewritten: &str,
        turn: &mut Turn<'_>,
        editable: &Editable,
    ) -> Result<Handled, EngineError> {
        let resolution =
            context::resolve(rewritten, turn.session.topic.as_ref(), &editable.vocabulary);
        let started = Instant::now();
        let mut outcome = None;
        if resolution.crop_switch {
            let filter = SearchFilter {
                crops: resolution.crops.clone(),
                ..SearchFilter::default()
            };
            let found = self.kb.search(&resolution.query, &filter).await?;
            if !found.hits.is_empty() {
                outcome = Some(found);
            }
        }
        let outcome = match outcome {
            Some(outcome) => outcome,
            None => {
                self.kb
                    .search(&resolution.query, &SearchFilter::default())
                    .await?
            }
        };
        crate::metrics::global().step(crate::metrics::Step::Search, started.elapsed());
        let mut handled = self.render_outcome(&outcome, turn, editable).await?;
        if resolution.follow_up {
            handled.resolved_query = Some(resolution.query.clone());
        }
        let top = outcome
            .hits
            .first()
            .filter(|_| outcome.decision != Decision::Abstain);
        let crops = if !resolution.crops.is_empty() {
            resolution.crops.clone()
        } else {
            top.map(|hit| hit.entry.content.crops.clone())
                .unwrap_or_default()
        };
        let subjects = if !resolution.subjects.is_empty() {
            resolution.subjects.clone()
        } else {
            top.map(|hit| {
                hit.entry
                    .content
                    .tags
                    .iter()
                    .filter(|tag| !crops.contains(tag) && editable.vocabulary.is_subject(tag))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
        };
        tracing::debug!(?crops, ?subjects, "topic");
        turn.session.topic = Some(Topic {
            query: resolution.query,
            entry_id: top.map(|hit| hit.entry.id.to_string()),
            entry_question: top.map(|hit| hit.entry.content.question.clone()),
            crops,
            subjects,
        });
        Ok(handled)
    }

    async fn render_outcome(
        &self,
        outcome: &SearchOutcome,
        turn: &mut Turn<'_>,
        editable: &Editable,
    ) -> Result<Handled, EngineError> {
        let prompts = &editable.prompts;
        match (outcome.decision, outcome.hits.first()) {
            (Decision::Answer, Some(top)) => {
                let mut related: Vec<Choice> = outcome
                    .hits
                    .iter()
                    .skip(1)
                    .filter(|hit| hit.confidence >= RELATED_MIN_CONFIDENCE)
                    .take(MAX_RELATED)
                    .map(|hit| Choice {
                        entry_id: hit.entry.id.to_string(),
                        question: hit.entry.content.question.clone(),
                    })
                    .collect();
                if related.is_empty() {
                    // An exact match ranks nothing else: offer entries on
                    // the same crops instead.
                    related = self
                        .kb
                        .related(&top.entry, MAX_RELATED)
                        .await?
                        .into_iter()
                        .map(|entry| Choice {
                            entry_id: entry.id.to_string(),
                            question: entry.content.question.clone(),
                        })
                        .collect();
                }
                self.render_answer(&top.entry, top.confidence, related, turn, prompts)
            }
            (Decision::Suggest, Some(_)) => {
                let choices: Vec<Choice> = outcome
                    .hits
                    .iter()
                    .take(MAX_SUGGESTIONS)
                    .map(|hit| Choice {
                        entry_id: hit.entry.id.to_string(),
                        question: hit.entry.content.question.clone(),
                    })
                    .collect();
                let questions: Vec<String> = choices.iter().map(|c| c.question.clone()).collect();
                let blocks = vec![
                    Block::new(
                        BlockRole::Body,
                        prompts
                            .render("suggest.j2", serde_json::json!({ "candidates": questions }))?,
                    ),
                    Block::new(BlockRole::Hint, prompts.render("suggest_hint.j2", ())?),
                ];
                turn.session.choices = choices;
                Ok(Handled {
                    kind: Some(ReplyKind::Suggest),
                    blocks,
                    citations: outcome
                        .hits
                        .iter()
                        .take(MAX_SUGGESTIONS)
                        .map(|hit| citation(&hit.entry, hit.confidence))
                        .collect(),
                    suggestions: questions,
                    quick_replies: vec![QuickReply::new("都不是，转人工", "转人工")],
                    confidence: outcome.confidence(),
                    ..Handled::default()
                })
            }
            _ => {
                turn.session.choices.clear();
                turn.session.last_abstain_turn = Some(turn.id.clone());
                Ok(Handled {
                    kind: Some(ReplyKind::Abstain),
                    blocks: vec![
                        Block::new(BlockRole::Body, prompts.render("abstain.j2", ())?),
                        Block::new(BlockRole::Hint, prompts.render("abstain_hint.j2", ())?),
                    ],
                    quick_replies: vec![
                        QuickReply::new("有答案时通知我", "通知我"),
                        QuickReply::new("转人工", "转人工"),
                    ],
                    confidence: outcome.confidence(),
                    feedback: false,
                    ..Handled::default()
                })
            }
        }
    }

    fn render_answer(
        &self,
        entry: &PublishedEntry,
        confidence: f32,
        related: Vec<Choice>,
        turn: &mut Turn<'_>,
        prompts: &Prompts,
    ) -> Result<Handled, EngineError> {
        let related_questions: Vec<String> = related.iter().map(|c| c.question.clone()).collect();
        let mut blocks = vec![
            Block::new(
                BlockRole::Body,
                prompts.render(
                    "answer.j2",
                    serde_json::json!({
                        "answer": entry.chat_answer(),
                        "question": entry.content.question,
                    }),
                )?,
            ),
            Block::new(BlockRole::Source, self.source_line(entry, prompts)?),
        ];
        if !related_questions.is_empty() {
            blocks.push(Block::new(
                BlockRole::Related,
                prompts.render(
                    "related.j2",
                    serde_json::json!({ "related": related_questions }),
                )?,
            ));
        }
        blocks.push(Block::new(
            BlockRole::Hint,
            prompts.render(
                "answer_hint.j2",
                serde_json::json!({ "related": !related_questions.is_empty() }),
            )?,
        ));
        turn.session.last_answer = Some(entry.id.to_string());
        turn.session.last_answer_turn = Some(turn.id.clone());
        turn.session.choices = related;
        Ok(Handled {
            kind: Some(ReplyKind::Answer),
            blocks,
            citations: vec![citation(entry, confidence)],
            suggestions: related_questions,
            quick_replies: vec![QuickReply::new("详细", "详细")],
            confidence,
            feedback: true,
            ..Handled::default()
        })
    }

    fn source_line(&self, entry: &Entry, prompts: &Prompts) -> Result<String, EngineError> {
        Ok(prompts.render(
            "source.j2",
            serde_json::json!({
                "source": entry.content.source.organisation,
                "reviewer": entry.reviewer,
            }),
        )?)
    }

    /// A published entry by id; `None` when it is gone or no longer published.
    pub async fn published(&self, entry_id: &str) -> Result<Option<PublishedEntry>, EngineError> {
        let Ok(uuid) = Uuid::parse_str(entry_id) else {
            return Ok(None);
        };
        Ok(self
            .kb
            .get(EntryId(uuid))
            .await?
            .and_then(PublishedEntry::new))
    }

    async fn choose(
        &self,
        number: usize,
        turn: &mut Turn<'_>,
        editable: &Editable,
    ) -> Result<Handled, EngineError> {
        let prompts = &editable.prompts;
        let chosen = number
            .checked_sub(1)
            .and_then(|i| turn.session.choices.get(i))
            .cloned();
        let Some(choice) = chosen else {
            return Ok(Handled::notice(
                ReplyKind::Notice,
                "choice",
                prompts.render("no_choice.j2", ())?,
            ));
        };
        let Some(entry) = self.published(&choice.entry_id).await? else {
            turn.session.choices.clear();
            return Ok(Handled::notice(
                ReplyKind::Notice,
                "choice",
                prompts.render("no_choice.j2", ())?,
            ));
        };
        let mut handled = self.render_answer(&entry, 1.0, Vec::new(), turn, prompts)?;
        turn.session.topic = Some(Topic {
            query: entry.content.question.clone(),
            entry_id: Some(entry.id.to_string()),
            entry_question: Some(entry.content.question.clone()),
            crops: entry.content.crops.clone(),
            subjects: entry
                .content
                .tags
                .iter()
                .filter(|t| !entry.content.crops.contains(t) && editable.vocabulary.is_subject(t))
                .cloned()
                .collect(),
        });
        handled.resolved_query = Some(entry.content.question.clone());
        Ok(handled)
    }

    async fn detail(&self, turn: &mut Turn<'_>, prompts: &Prompts) -> Result<Handled, EngineError> {
        let entry = match turn.session.last_answer.clone() {
            Some(id) => self.published(&id).await?,
            None => None,
        };
        let Some(entry) = entry else {
            return Ok(Handled::notice(
                ReplyKind::Notice,
                "detail",
                prompts.render("no_detail.j2", ())?,
            ));
        };
        turn.session.last_answer_turn = Some(turn.id.clone());
        Ok(Handled {
            kind: Some(ReplyKind::Answer),
            blocks: vec![
                Block::new(
                    BlockRole::Body,
                    prompts.render(
                        "detail.j2",
                        serde_json::json!({
                            "question": entry.content.question,
                            "answer": entry.content.answer,
                        }),
                    )?,
                ),
                Block::new(BlockRole::Source, self.source_line(&entry, prompts)?),
            ],
            citations: vec![citation(&entry, 1.0)],
            confidence: 1.0,
            feedback: true,
            route: "detail".into(),
            route_confidence: 1.0,
            ..Handled::default()
        })
    }

    async fn notify_me(
        &self,
        turn: &mut Turn<'_>,
        prompts: &Prompts,
    ) -> Result<Handled, EngineError> {
        let user = turn.user.storage_key();
        let ok = match turn.session.last_abstain_turn.take() {
            Some(asked) => match self.turns.update(&user, &asked, |t| t.notify = true).await {
                Ok(_) => true,
                Err(TurnLogError::NotFound(_)) => false,
                Err(e) => return Err(e.into()),
            },
            None => false,
        };
        Ok(Handled::notice(
            ReplyKind::Notice,
            "notify",
            prompts.render("notify_ack.j2", serde_json::json!({ "ok": ok }))?,
        ))
    }

    /// Adds the conversation's crops and place to a subscriber's record
    /// (a point read when the conversation names a crop or a place; a
    /// write only for subscribers and only when something is new). The
    /// record decides, not the session: sessions expire in 30 minutes, a
    /// subscription does not.
    async fn note_interest(&self, turn: &Turn<'_>) -> Result<(), EngineError> {
        let (place, crops) = interest(&turn.session);
        if crops.is_empty() && place.is_none() {
            return Ok(());
        }
        Ok(self
            .outreach
            .note_interest(turn.user, place, &crops)
            .await?)
    }

    /// "订阅科普": opts the user in to personalised push, with where they
    /// are and the crops of the conversation.
    async fn subscribe(
        &self,
        turn: &mut Turn<'_>,
        prompts: &Prompts,
    ) -> Result<Handled, EngineError> {
        let already = self
            .outreach
            .subscriber(&turn.user.storage_key())
            .await?
            .is_some_and(|s| s.is_subscribed());
        let (place, crops) = interest(&turn.session);
        let subscriber = self.outreach.subscribe(turn.user, place, &crops).await?;
        Ok(Handled::notice(
            ReplyKind::Notice,
            "subscribe",
            prompts.render(
                "subscribed.j2",
                serde_json::json!({
                    "already": already,
                    "city": subscriber.city,
                    "county": subscriber.county,
                    "crops": subscriber.crops,
                }),
            )?,
        ))
    }

    /// "退订": no more personalised push.
    async fn unsubscribe(
        &self,
        turn: &mut Turn<'_>,
        prompts: &Prompts,
    ) -> Result<Handled, EngineError> {
        let was_subscribed = self.outreach.unsubscribe(turn.user).await?;
        Ok(Handled::notice(
            ReplyKind::Notice,
            "unsubscribe",
            prompts.render(
                "unsubscribed.j2",
                serde_json::json!({ "was_subscribed": was_subscribed }),
            )?,
        ))
    }

    async fn typed_feedback(
        &self,
        normalised: &str,
        turn: &mut Turn<'_>,
        prompts: &Prompts,
    ) -> Result<Handled, EngineError> {
        let negative = NEGATIVE_FEEDBACK.iter().any(|w| normalised.contains(w));
        if let Some(answered) = turn.session.last_answer_turn.clone() {
            let rating = if negative { Rating::Down } else { Rating::Up };
            match self
                .turns
                .update(&turn.user.storage_key(), &answered, |t| {
                    t.feedback = Some(rating)
                })
                .await
            {
                Ok(_) | Err(TurnLogError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Handled::notice(
            ReplyKind::Feedback,
            "feedback",
            prompts.render("feedback.j2", serde_json::json!({ "negative": negative }))?,
        ))
    }

    /// A retry of a message already claimed: the first reply once it is
    /// stored, or after [`EngineConfig::duplicate_wait`] a short notice.
    async fn replay(&self, reply_key: &str) -> Result<Reply, EngineError> {
        if let Some(reply) = self.stored_reply(reply_key).await? {
            return Ok(reply);
        }
        let editable = Arc::clone(&self.editable.read());
        let text = editable.prompts.render("in_progress.j2", ())?;
        Ok(Reply::plain(String::new(), ReplyKind::Notice, text))
    }

    /// The reply the first handling of a message stored under `reply_key`,
    /// waited for up to [`EngineConfig::duplicate_wait`].
    async fn stored_reply(&self, reply_key: &str) -> Result<Option<Reply>, EngineError> {
        let deadline = Instant::now() + self.config.duplicate_wait;
        loop {
            if let Some(stored) = self.sessions.get(reply_key).await?
                && let Ok(reply) = serde_json::from_str::<Reply>(&stored)
            {
                return Ok(Some(reply));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Keeps a message's reply for its channel's retries (and late pushes)
    /// for [`EngineConfig::dedup_ttl`].
    async fn store_reply(&self, reply_key: &str, reply: &Reply) -> Result<(), EngineError> {
        let stored = serde_json::to_string(reply).unwrap_or_default();
        self.sessions
            .put(reply_key, &stored, self.config.dedup_ttl)
            .await?;
        Ok(())
    }
}

/// Where the reply to one channel message is kept for its retries.
fn reply_key(user: &UserKey, message_id: &str) -> String {
    format!("reply:{}:{message_id}", user.storage_key())
}

fn write_cache(path: &std::path::Path, cache: &ExampleCache) {
    let Some(dir) = path.parent() else { return };
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_vec(cache).unwrap_or_default())?;
        std::fs::rename(&temporary, path)
    });
    if let Err(error) = written {
        tracing::warn!(%error, path = %path.display(), "could not cache routing vectors");
    }
}

#[async_trait::async_trait]
impl Handler for Engine {
    async fn handle(&self, message: Incoming) -> Result<Reply, HandlerError> {
        let Some(message_id) = message.message_id.clone() else {
            return Ok(self.handle_once(message).await?);
        };
        let key = format!("dedup:{}:{message_id}", message.user.storage_key());
        let reply_key = reply_key(&message.user, &message_id);
        let first = self
            .sessions
            .claim(&key, self.config.dedup_ttl)
            .await
            .map_err(EngineError::from)?;
        if !first {
            return Ok(self.replay(&reply_key).await?);
        }
        match self.handle_once(message).await {
            Ok(reply) => {
                self.store_reply(&reply_key, &reply).await?;
                Ok(reply)
            }
            Err(error) => {
                // Let the channel's next retry do the work again.
                if let Err(release) = self.sessions.release(&key).await {
                    tracing::warn!(%release, "could not release a dedup claim");
                }
                Err(error.into())
            }
        }
    }

    async fn feedback(
        &self,
        user: &UserKey,
        turn_id: &str,
        rating: Rating,
    ) -> Result<(), HandlerError> {
        match self
            .turns
            .update(&user.storage_key(), turn_id, |t| t.feedback = Some(rating))
            .await
        {
            Ok(_) => Ok(()),
            Err(TurnLogError::NotFound(id)) => Err(HandlerError::Invalid(format!("no turn {id}"))),
            Err(e) => Err(HandlerError::Unavailable(e.to_string())),
        }
    }

    async fn undelivered(&self, user: &UserKey, texts: Vec<String>) -> Result<(), HandlerError> {
        for text in texts {
            self.notices
                .push(&user.storage_key(), text)
                .await
                .map_err(|e| HandlerError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    async fn follow_up(&self, follow_up: FollowUp) -> Result<bool, HandlerError> {
        let task = match follow_up {
            FollowUp::Answer {
                message,
                limit_bytes,
            } => Task::LateReply {
                message,
                limit_bytes,
            },
            FollowUp::Texts { user, texts, key } => Task::PushTexts { user, texts, key },
        };
        self.jobs
            .enqueue(task)
            .await
            .map_err(|e| HandlerError::Unavailable(e.to_string()))?;
        Ok(true)
    }
}
