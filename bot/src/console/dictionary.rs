//! The word lists in the console: dialect words and synonyms (what users
//! write → the standard term the knowledge base uses) and sensitive words.
//! An edit is stored ([`crate::dictionary`]), this instance reloads at once
//! and the others within seconds; no restart.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::accounts::Role;
use super::{Console, ConsoleError, Posted, Signed};
use crate::dictionary::{DictionaryError, WordEdit, WordList};

impl From<DictionaryError> for ConsoleError {
    fn from(error: DictionaryError) -> Self {
        match error {
            DictionaryError::Invalid(message) => Self::BadRequest(message),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// `GET /console/dictionary`: both lists as in use, edited words marked.
pub(super) async fn page(
    State(console): State<Arc<Console>>,
    user: Signed,
) -> Result<Response, ConsoleError> {
    user.require(Role::Editor)?;
    let engine = &console.engine;
    let edits = engine.dictionary().edits().await?;
    let edited: HashMap<(WordList, &str), &WordEdit> = edits
        .iter()
        .map(|e| ((e.list, e.word.as_str()), e))
        .collect();
    let who = |list: WordList, word: &str| {
        edited
            .get(&(list, word))
            .map(|e| format!("{} · {}", e.actor, super::unix_time(e.at)))
    };
    let analyzer = engine.kb().analyzer();
    let synonyms: Vec<serde_json::Value> = analyzer
        .synonyms()
        .pairs()
        .iter()
        .map(|(variant, standard)| {
            serde_json::json!({
                "word": variant,
                "standard": standard,
                "edited": who(WordList::Synonym, variant),
            })
        })
        .collect();
    let sensitive: Vec<serde_json::Value> = engine
        .sensitive_words()
        .into_iter()
        .map(|word| {
            let edited = who(WordList::Sensitive, &word);
            serde_json::json!({ "word": word, "edited": edited })
        })
        .collect();
    let removed: Vec<serde_json::Value> = edits
        .iter()
        .filter(|e| e.removed)
        .map(|e| {
            serde_json::json!({
                "list": match e.list { WordList::Synonym => "方言/同义词", WordList::Sensitive => "敏感词" },
                "word": e.word,
                "by": format!("{} · {}", e.actor, super::unix_time(e.at)),
            })
        })
        .collect();
    console.page(
        &user,
        "dictionary.html",
        serde_json::json!({ "synonyms": synonyms, "sensitive": sensitive, "removed": removed }),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct EditForm {
    #[serde(default)]
    list: String,
    #[serde(default)]
    word: String,
    #[serde(default)]
    standard: String,
    /// `add` or `remove`.
    #[serde(default)]
    action: String,
}

/// `POST /console/dictionary`: adds or removes one word.
pub(super) async fn edit(
    State(console): State<Arc<Console>>,
    posted: Posted<EditForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Editor)?;
    let form = posted.form;
    let list = WordList::parse(&form.list)
        .ok_or_else(|| ConsoleError::BadRequest(format!("没有词表 {}", form.list)))?;
    let removed = match form.action.as_str() {
        "add" => false,
        "remove" => true,
        other => return Err(ConsoleError::BadRequest(format!("没有这种操作：{other}"))),
    };
    let edit = WordEdit::new(
        list,
        &form.word,
        Some(form.standard.as_str()),
        removed,
        &posted.user.account.username,
    )?;
    console.engine.dictionary().save(&edit).await?;
    console
        .engine
        .reload()
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    tracing::info!(
        list = list.as_str(),
        removed,
        user = posted.user.account.username,
        "console: word list edited"
    );
    Ok(Redirect::to("/console/dictionary").into_response())
}
