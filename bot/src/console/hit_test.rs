//! Hit testing: an editor types a question and sees what the bot would do
//! with it, step by step: the normalised and rewritten text (with the
//! synonyms and dialect words applied), the route and every route's score,
//! the ranked entries with their confidence and evidence (which phrasing
//! matched, dense and lexical scores, word coverage), and the reply on
//! each channel. Nothing is logged or remembered ([`Engine::hit_test`]).
//!
//! [`Engine::hit_test`]: crate::Engine::hit_test

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use kb::base::PhrasingKind;
use kb::text::RewriteKind;
use serde::Deserialize;
use webhooks::preview::{self, Markup};

use super::accounts::Role;
use super::{Console, ConsoleError, Signed};
use crate::routing::RouteSource;

/// The longest question tested (a chat message is far shorter).
const MAX_QUESTION_CHARS: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub(super) struct HitTestQuery {
    #[serde(default)]
    q: String,
}

fn route_label(route: &str) -> &'static str {
    match route {
        "science_question" => "科学问题",
        "tech_demand" => "技术需求",
        "capability_offer" => "科技所能",
        "greeting" => "寒暄",
        "help" => "帮助",
        "feedback" => "反馈",
        "human" => "转人工",
        "demand_status" => "查询需求",
        "choice" => "选择编号",
        _ => "其他",
    }
}

fn phrasing_label(kind: PhrasingKind) -> &'static str {
    match kind {
        PhrasingKind::Question => "标准问法",
        PhrasingKind::Alternative => "相似问法",
        PhrasingKind::Answer => "答案",
    }
}

fn decision_label(decision: kb::Decision) -> &'static str {
    match decision {
        kb::Decision::Answer => "直接回答",
        kb::Decision::Suggest => "你是想问",
        kb::Decision::Abstain => "暂无权威答案",
    }
}

fn score(value: Option<f32>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.3}"))
}

/// `GET /console/hit-test?q=…`.
pub(super) async fn page(
    State(console): State<Arc<Console>>,
    user: Signed,
    Query(query): Query<HitTestQuery>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Editor)?;
    let question = query.q.trim();
    if question.is_empty() {
        return console.page(&user, "hit_test.html", serde_json::json!({ "q": "" }));
    }
    if question.chars().count() > MAX_QUESTION_CHARS {
        return Err(ConsoleError::BadRequest(format!(
            "问题太长了（最多 {MAX_QUESTION_CHARS} 字）"
        )));
    }
    let test = console
        .engine
        .hit_test(question)
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    // What the subject check looks for in each entry (kb::subjects).
    let analyzer = console.engine.kb().analyzer();
    let subjects: Vec<&str> = analyzer
        .subjects()
        .in_question(&test.query.rewritten)
        .words()
        .collect();
    let rewrites: Vec<serde_json::Value> = test
        .query
        .rewrites
        .iter()
        .map(|rewrite| {
            serde_json::json!({
                "from": rewrite.from,
                "to": rewrite.to,
                "why": match rewrite.kind {
                    RewriteKind::Synonym => "方言/同义词",
                    RewriteKind::Pinyin => "同音错字",
                },
            })
        })
        .collect();
    let route = test.route.as_ref().map(|decision| {
        serde_json::json!({
            "name": decision.route.as_str(),
            "label": route_label(decision.route.as_str()),
            "confidence": format!("{:.2}", decision.confidence),
            "by_rule": decision.source == RouteSource::Rule,
            "scores": decision.scores.iter().take(5).map(|(route, score)| serde_json::json!({
                "label": route_label(route.as_str()),
                "score": format!("{score:.3}"),
            })).collect::<Vec<_>>(),
        })
    });
    let search = test.outcome.as_ref().map(|outcome| {
        serde_json::json!({
            "decision": decision_label(outcome.decision),
            "hits": outcome.hits.iter().map(|hit| serde_json::json!({
                "id": hit.entry.id.to_string(),
                "question": hit.entry.content.question,
                "confidence": format!("{:.3}", hit.confidence),
                "matched_text": hit.evidence.matched_text,
                "matched_kind": phrasing_label(hit.evidence.matched_kind),
                "dense": score(hit.evidence.dense),
                "lexical": score(hit.evidence.lexical),
                "coverage": format!("{:.2}", hit.evidence.coverage),
                "exact": hit.evidence.exact,
                "margin": format!("{:.3}", hit.features.margin),
                "answer_dense": format!("{:.3}", hit.features.answer_dense),
                "subject_unmet": hit.features.absent_subject > 0.0,
                "promoted": hit.features.promoted > 0.0,
            })).collect::<Vec<_>>(),
        })
    });
    let channels: Vec<serde_json::Value> = test
        .reply
        .as_ref()
        .map(|reply| {
            preview::render(reply)
                .into_iter()
                .map(|view| {
                    serde_json::json!({
                        "label": super::channel_label(view.channel),
                        "html": view.markup == Markup::Html,
                        "messages": view.messages,
                        "buttons": view.buttons,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    console.page(
        &user,
        "hit_test.html",
        serde_json::json!({
            "q": question,
            "normalised": test.query.normalised,
            "rewritten": test.query.rewritten,
            "rewrites": rewrites,
            "tokens": test.query.tokens,
            "subjects": subjects,
            "refused_word": test.refused_word,
            "command": test.command,
            "route": route,
            "search": search,
            "channels": channels,
        }),
    )
}
