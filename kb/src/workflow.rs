//! The editorial workflow as a pure state machine: every change to an entry is
//! an [`Action`] applied by an actor, producing the next entry and a
//! [`Revision`] that records it. No IO here; the store persists the results.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::entry::{Entry, EntryContent, EntryId, FieldError, Status};

/// A change an editor or reviewer makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A new entry, as a draft.
    Create {
        /// Its content.
        content: EntryContent,
    },
    /// New content. A submitted, published or retired entry goes back to draft:
    /// changed text is never live before a second person has approved it.
    Edit {
        /// The new content.
        content: EntryContent,
    },
    /// Asks for review.
    Submit,
    /// A reviewer who is not the author approves; the entry is published at once.
    Approve {
        /// Optional note.
        #[serde(default)]
        note: Option<String>,
    },
    /// A reviewer sends the entry back to draft.
    Reject {
        /// Why, for the author.
        note: String,
    },
    /// Withdraws a published entry.
    Retire {
        /// Why.
        #[serde(default)]
        note: Option<String>,
    },
    /// Brings back the content of an earlier revision, as a new draft revision.
    Restore {
        /// The version restored.
        version: u32,
    },
}

impl Action {
    /// A short name for logs and history listings.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Edit { .. } => "edit",
            Self::Submit => "submit",
            Self::Approve { .. } => "approve",
            Self::Reject { .. } => "reject",
            Self::Retire { .. } => "retire",
            Self::Restore { .. } => "restore",
        }
    }
}

/// One recorded change: who did what when, and the entry as it was after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// The entry.
    pub entry_id: EntryId,
    /// The entry's version after this change.
    pub version: u32,
    /// What was done.
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// A reviewer's or editor's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The status before the change (`None` for creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<Status>,
    /// The whole entry after the change.
    pub snapshot: Entry,
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// The action does not apply in the entry's current state.
    #[error("cannot {action} an entry that is {status}")]
    InvalidTransition {
        /// The action.
        action: &'static str,
        /// The current state.
        status: Status,
    },
    /// Four eyes: the author may not approve their own content.
    #[error("the reviewer must not be the author ({author})")]
    SelfReview {
        /// The author.
        author: String,
    },
    /// The content failed validation.
    #[error("invalid entry: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// Restore named a version that does not exist.
    #[error("entry has no version {0}")]
    UnknownVersion(u32),
    /// An actor name is required.
    #[error("an actor name is required")]
    MissingActor,
}

/// Creates a new draft entry from content.
pub fn create(
    id: EntryId,
    content: EntryContent,
    actor: &str,
    now: OffsetDateTime,
) -> Result<(Entry, Revision), WorkflowError> {
    let actor = checked_actor(actor)?;
    content.validate().map_err(WorkflowError::Invalid)?;
    let entry = Entry {
        id,
        content: content.clone(),
        status: Status::Draft,
        author: actor.to_owned(),
        reviewer: None,
        version: 1,
        created_at: now,
        updated_at: now,
        reviewed_at: None,
    };
    let revision = Revision {
        entry_id: id,
        version: 1,
        action: Action::Create { content }.name().to_owned(),
        actor: actor.to_owned(),
        at: now,
        note: None,
        previous_status: None,
        snapshot: entry.clone(),
    };
    Ok((entry, revision))
}

/// Applies an action to an existing entry. `history` is needed only by
/// [`Action::Restore`] (the entry's revisions, any order).
pub fn apply(
    entry: &Entry,
    action: Action,
    actor: &str,
    now: OffsetDateTime,
    history: &[Revision],
) -> Result<(Entry, Revision), WorkflowError> {
    let actor = checked_actor(actor)?;
    let action_name = action.name();
    let invalid = || WorkflowError::InvalidTransition {
        action: action_name,
        status: entry.status,
    };
    let mut next = entry.clone();
    let mut note = None;
    match action {
        Action::Create { .. } => return Err(invalid()),
        Action::Edit { content } => {
            content.validate().map_err(WorkflowError::Invalid)?;
            next.content = content;
            next.status = Status::Draft;
            next.author = actor.to_owned();
            next.reviewer = None;
        }
        Action::Submit => {
            if entry.status != Status::Draft {
                return Err(invalid());
            }
            next.status = Status::InReview;
        }
        Action::Approve {
            note: approval_note,
        } => {
            check_review(entry, actor).map_err(|e| e.unwrap_or_else(invalid))?;
            next.status = Status::Published;
            next.reviewer = Some(actor.to_owned());
            next.reviewed_at = Some(now);
            note = approval_note;
        }
        Action::Reject { note: reason } => {
            check_review(entry, actor).map_err(|e| e.unwrap_or_else(invalid))?;
            next.status = Status::Draft;
            note = Some(reason);
        }
        Action::Retire { note: reason } => {
            if entry.status != Status::Published {
                return Err(invalid());
            }
            next.status = Status::Retired;
            note = reason;
        }
        Action::Restore { version } => {
            let restored = history
                .iter()
                .find(|r| r.version == version)
                .ok_or(WorkflowError::UnknownVersion(version))?;
            next.content = restored.snapshot.content.clone();
            next.status = Status::Draft;
            next.author = actor.to_owned();
            next.reviewer = None;
            note = Some(format!("restored version {version}"));
        }
    }
    next.version = entry.version + 1;
    next.updated_at = now;
    let revision = Revision {
        entry_id: entry.id,
        version: next.version,
        action: action_name.to_owned(),
        actor: actor.to_owned(),
        at: now,
        note,
        previous_status: Some(entry.status),
        snapshot: next.clone(),
    };
    Ok((next, revision))
}

/// A review (approve or reject) needs an entry in review and a reviewer who
/// is not its author. `Err(None)` means the state is wrong; the caller names
/// the action in that error.
fn check_review(entry: &Entry, reviewer: &str) -> Result<(), Option<WorkflowError>> {
    if entry.status != Status::InReview {
        return Err(None);
    }
    if same_person(&entry.author, reviewer) {
        return Err(Some(WorkflowError::SelfReview {
            author: entry.author.clone(),
        }));
    }
    Ok(())
}

fn checked_actor(actor: &str) -> Result<&str, WorkflowError> {
    let actor = actor.trim();
    if actor.is_empty() {
        return Err(WorkflowError::MissingActor);
    }
    Ok(actor)
}

/// Names compare without surrounding space and case, so "Li" cannot approve "li ".
fn same_person(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}
