//! `wenke jobs`: the background job queue from the command line: how many
//! jobs wait, the dead letters, and sending a dead letter back.

use clap::Subcommand;
use uuid::Uuid;

use crate::chat_cli::EngineArgs;
use crate::kb_cli::StoreArgs;

/// Job queue commands.
#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Jobs ready, waiting to retry, running and dead.
    Status,
    /// The dead letters: jobs given up after their last attempt, newest
    /// first, with the last error.
    Dead,
    /// Sends dead letters back to the queue with their attempts reset.
    Retry {
        /// The jobs' ids (from `wenke jobs dead`).
        #[arg(required_unless_present = "all")]
        ids: Vec<Uuid>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

/// Runs a jobs command.
pub async fn run(
    store: &StoreArgs,
    engine: &EngineArgs,
    command: JobsCommand,
) -> anyhow::Result<()> {
    // The server's queue; an embedded one is in the data directory, which
    // only one process may open, so stop `wenke serve` first.
    let queue = engine.open_job_queue(|| store.open_store()).await?;
    match command {
        JobsCommand::Status => {
            let depth = queue.depth().await?;
            println!(
                "queue: {}\nready: {}\ndelayed: {}\nrunning: {}\ndead: {}",
                queue.kind(),
                depth.ready,
                depth.delayed,
                depth.running,
                depth.dead
            );
        }
        JobsCommand::Dead => {
            for job in queue.dead().await? {
                let buried = job
                    .buried_at
                    .and_then(|at| time::OffsetDateTime::from_unix_timestamp(at).ok())
                    .and_then(|at| {
                        at.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{} attempts\t{}\t{}",
                    job.id,
                    job.task.kind(),
                    job.attempts,
                    buried,
                    job.last_error.as_deref().unwrap_or("")
                );
            }
        }
        JobsCommand::Retry { ids, all } => {
            let ids = if all {
                queue.dead().await?.into_iter().map(|job| job.id).collect()
            } else {
                ids
            };
            let mut missing = 0;
            for id in &ids {
                if queue.revive(*id).await? {
                    println!("{id} queued again");
                } else {
                    eprintln!("{id}: no such dead letter");
                    missing += 1;
                }
            }
            if missing > 0 {
                anyhow::bail!("{missing} of {} ids were not dead letters", ids.len());
            }
        }
    }
    Ok(())
}
