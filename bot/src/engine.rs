//! One question in, one authoritative answer out.

use std::sync::Arc;

use kb::{Decision, KnowledgeBase, SearchFilter, SearchOutcome};
use prompts::Prompts;
use serde::Serialize;

/// Most candidates offered in a "did you mean".
const MAX_SUGGESTIONS: usize = 3;
/// Most related questions under an answer.
const MAX_RELATED: usize = 3;

/// A text message from any channel.
#[derive(Debug, Clone)]
pub struct IncomingText {
    /// The channel's id of the user.
    pub user_id: String,
    /// What they wrote (or what voice recognition heard).
    pub text: String,
}

/// What kind of reply the engine gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// An answer from a vetted entry.
    Answer,
    /// Candidate questions to choose from.
    Suggest,
    /// No authoritative answer.
    Abstain,
}

/// Where an answer comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Citation {
    /// The entry.
    pub entry_id: String,
    /// Its question.
    pub question: String,
    /// The organisation that vouches for it.
    pub source: String,
    /// Who approved it.
    pub reviewer: Option<String>,
    /// The retrieval confidence.
    pub confidence: f32,
}

/// The engine's reply, rendered by each channel in its own way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    /// The kind of reply.
    pub kind: ReplyKind,
    /// The text as a user reads it.
    pub reply: String,
    /// Entries the reply is built from.
    pub citations: Vec<Citation>,
    /// Questions the user can tap next.
    pub suggestions: Vec<String>,
    /// The top retrieval confidence.
    pub confidence: f32,
}

/// Errors the engine reports to its caller.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The knowledge base failed.
    #[error(transparent)]
    Kb(#[from] kb::KbError),
    /// A template failed.
    #[error(transparent)]
    Prompt(#[from] prompts::PromptError),
}

/// The conversation engine.
pub struct Engine {
    kb: Arc<KnowledgeBase>,
    prompts: Prompts,
}

impl Engine {
    /// An engine over a knowledge base and a set of templates.
    pub fn new(kb: Arc<KnowledgeBase>, prompts: Prompts) -> Self {
        Self { kb, prompts }
    }

    /// The knowledge base.
    pub fn kb(&self) -> &Arc<KnowledgeBase> {
        &self.kb
    }

    /// Answers one message.
    pub async fn handle(&self, message: &IncomingText) -> Result<Reply, EngineError> {
        let outcome = self
            .kb
            .search(&message.text, &SearchFilter::default())
            .await?;
        tracing::info!(
            user = message.user_id,
            decision = ?outcome.decision,
            confidence = outcome.confidence(),
            "question answered"
        );
        self.render(&outcome)
    }

    fn render(&self, outcome: &SearchOutcome) -> Result<Reply, EngineError> {
        let confidence = outcome.confidence();
        let citation = |hit: &kb::SearchHit| Citation {
            entry_id: hit.entry.id.to_string(),
            question: hit.entry.content.question.clone(),
            source: hit.entry.content.source.organisation.clone(),
            reviewer: hit.entry.reviewer.clone(),
            confidence: hit.confidence,
        };
        match (outcome.decision, outcome.hits.first()) {
            (Decision::Answer, Some(top)) => {
                let related: Vec<String> = outcome
                    .hits
                    .iter()
                    .skip(1)
                    .take(MAX_RELATED)
                    .map(|h| h.entry.content.question.clone())
                    .collect();
                let reply = self.prompts.render(
                    "answer.j2",
                    serde_json::json!({
                        "answer": top.entry.chat_answer(),
                        "source": top.entry.content.source.organisation,
                        "reviewer": top.entry.reviewer,
                        "related": related,
                    }),
                )?;
                Ok(Reply {
                    kind: ReplyKind::Answer,
                    reply,
                    citations: vec![citation(top)],
                    suggestions: related,
                    confidence,
                })
            }
            (Decision::Suggest, Some(_)) => {
                let candidates: Vec<&kb::SearchHit> =
                    outcome.hits.iter().take(MAX_SUGGESTIONS).collect();
                let questions: Vec<String> = candidates
                    .iter()
                    .map(|h| h.entry.content.question.clone())
                    .collect();
                let reply = self
                    .prompts
                    .render("suggest.j2", serde_json::json!({ "candidates": questions }))?;
                Ok(Reply {
                    kind: ReplyKind::Suggest,
                    reply,
                    citations: candidates.into_iter().map(citation).collect(),
                    suggestions: questions,
                    confidence,
                })
            }
            _ => Ok(Reply {
                kind: ReplyKind::Abstain,
                reply: self.prompts.render("abstain.j2", serde_json::json!({}))?,
                citations: Vec::new(),
                suggestions: Vec::new(),
                confidence,
            }),
        }
    }
}
