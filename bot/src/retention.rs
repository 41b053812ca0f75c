//! Turn retention: the turn log keeps every turn of the last
//! [`TurnRetention::days`] China days; of older days it keeps the report
//! tally and the rated turns, and deletes the rest.
//!
//! Why: the log takes one point per turn, and in the embedded store every
//! point costs memory (about 1.35 KB a turn, measured; see
//! docs/BENCHMARKS.md), so a log that only grows ends by filling the
//! machine. What the product reads from old turns survives the deletion:
//! - reports read a finished day from its stored [`DayTally`]
//!   ([`crate::report::day_tallies`]), which is stored before any of the
//!   day's turns go;
//! - ratings are read live from the rated turns, which are kept, as the
//!   console's feedback page lists them;
//! - the unanswered queue looks back at most a year
//!   ([`crate::turns::TurnLog::recent`]), within the default period.
//!
//! What does not survive: the text of an old unrated question, which is
//! also why a limit is right for people's messages, not only for memory.
//! And a turn written later for a pruned day (a backfill) deletes the
//! day's summary, as any late turn does, so the day is then recounted from
//! the turns that are left.
//!
//! Pruning is idempotent, so two instances running it at once only repeat
//! work; `wenke serve` runs it every [`PRUNE_EVERY`].
//!
//! [`DayTally`]: crate::report::DayTally

use std::num::NonZeroU32;
use std::time::Duration;

use crate::report::{ReportError, day_tallies, settled_before};
use crate::turns::{TurnLog, TurnLogError};

/// How often a server prunes the turn log.
pub const PRUNE_EVERY: Duration = Duration::from_secs(6 * 60 * 60);

/// How long the turn log keeps every turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnRetention {
    /// Whole China days kept, counting today: with 365, a turn of a day
    /// 365 or more days before today is pruned.
    pub days: NonZeroU32,
}

/// What one pruning did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// The days whose unrated turns were deleted, oldest first.
    pub days: Vec<String>,
    /// How many turns were deleted.
    pub turns: usize,
}

/// Errors of pruning.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Storing a day's tally failed; none of that day's turns were deleted.
    #[error("tallying {day} before pruning it: {source}")]
    Tally {
        /// The day.
        day: String,
        /// What failed.
        source: ReportError,
    },
    /// The turn log failed.
    #[error(transparent)]
    Log(#[from] TurnLogError),
    /// A day's turns were not deleted: the store reported none to delete
    /// for the oldest unrated turn's day.
    #[error("pruning {0} deleted nothing; stopped rather than loop")]
    Stuck(String),
}

/// The first China day `retention` keeps whole.
pub fn first_kept_day(retention: TurnRetention) -> String {
    let today = crate::china::today();
    let kept = time::Duration::days(i64::from(retention.days.get()) - 1);
    crate::china::date_text(today.checked_sub(kept).unwrap_or(time::Date::MIN))
}

/// Deletes the unrated turns of every day before the retention period,
/// oldest day first, each only after its report tally is stored; then
/// compacts the log if anything was deleted. A day whose tally is not yet
/// stored (it ended less than an hour ago) is kept, whatever the period.
pub async fn prune_turns(
    log: &TurnLog,
    retention: TurnRetention,
) -> Result<Pruned, RetentionError> {
    let first_kept = first_kept_day(retention).min(settled_before());
    let mut pruned = Pruned::default();
    while let Some(day) = log.oldest_unrated_day().await? {
        if day >= first_kept {
            break;
        }
        let days = [day.clone()];
        day_tallies(log, &days)
            .await
            .map_err(|source| RetentionError::Tally {
                day: day.clone(),
                source,
            })?;
        let deleted = log.forget_unrated(&day).await?;
        if deleted == 0 {
            return Err(RetentionError::Stuck(day));
        }
        tracing::info!(%day, turns = deleted, "pruned the turn log");
        pruned.turns += deleted;
        pruned.days.push(day);
    }
    if pruned.turns > 0 {
        log.compact().await?;
    }
    Ok(pruned)
}
