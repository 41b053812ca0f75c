//! `wenke listings`: demand and capability listings from the command line
//! (import, list, show, match, update, claim) and `wenke eval --matching`.
//!
//! Staff commands go through the engine, like the HTTP API, so a status
//! change or a claim notifies the demand's filer the same way.

use std::path::PathBuf;

use anyhow::Context;
use bot::Engine;
use clap::{Subcommand, ValueEnum};
use kb::listing::{DemandContent, DemandStatus, ListingKind, NewClaim, StaffUpdate};
use serde::Deserialize;

use crate::chat_cli::read_lines;

/// Which kind of listing a file holds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// Demand listings (科技需求).
    Demands,
    /// Capability listings (科技所能).
    Capabilities,
}

/// Listing commands.
#[derive(Subcommand, Debug)]
pub enum ListingsCommand {
    /// Imports listings from JSONL (the format of kb/demo/*.jsonl); rows
    /// already imported (same external_key) are kept.
    Import {
        /// What the files hold.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// JSONL files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Lists demands, newest first.
    Demands {
        /// Only this status (待审核, 已发布, 对接中, 已合作, 已关闭).
        #[arg(long)]
        status: Option<String>,
    },
    /// Shows one demand in full (staff view, contact included).
    Show {
        /// The demand's number.
        number: String,
    },
    /// The capabilities that match a demand best, with the reasons.
    Match {
        /// The demand's number.
        number: String,
        /// How many.
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
    /// Changes a demand's status, staff member or service plan (一单一策).
    Update {
        /// The demand's number.
        number: String,
        /// Who makes the change (recorded in the log).
        #[arg(long)]
        actor: String,
        /// New status.
        #[arg(long)]
        status: Option<String>,
        /// The staff member taking it on.
        #[arg(long)]
        staff: Option<String>,
        /// A service-plan note.
        #[arg(long)]
        plan: Option<String>,
        /// What to tell the filer.
        #[arg(long)]
        message: Option<String>,
    },
    /// Records a capability holder's claim (揭榜) of a published demand.
    Claim {
        /// The demand's number.
        number: String,
        /// The capability's number or import key.
        #[arg(long)]
        capability: String,
        /// What they propose.
        #[arg(long, default_value = "")]
        note: String,
    },
}

fn status_arg(name: Option<&str>) -> anyhow::Result<Option<DemandStatus>> {
    name.map(|name| {
        DemandStatus::parse(name).with_context(|| {
            format!("unknown status {name:?}: use 待审核, 已发布, 对接中, 已合作 or 已关闭")
        })
    })
    .transpose()
}

/// Runs a listings command; returns the exit code.
pub async fn run(engine: &Engine, command: ListingsCommand) -> anyhow::Result<i32> {
    let listings = engine.listings();
    match command {
        ListingsCommand::Import { kind, files } => {
            let kind = match kind {
                KindArg::Demands => ListingKind::Demands,
                KindArg::Capabilities => ListingKind::Capabilities,
            };
            let mut failed = false;
            for file in &files {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let bar = indicatif::ProgressBar::new(0);
                let report = listings
                    .import_jsonl(kind, &text, &|done, total| {
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    })
                    .await?;
                bar.finish_and_clear();
                println!(
                    "{}: {} added, {} already there, {} rejected",
                    file.display(),
                    report.added,
                    report.kept,
                    report.errors.len()
                );
                for (line, error) in &report.errors {
                    eprintln!("{}:{line}: {error}", file.display());
                }
                failed |= !report.errors.is_empty();
            }
            Ok(i32::from(failed))
        }
        ListingsCommand::Demands { status } => {
            for demand in listings
                .demands(status_arg(status.as_deref())?, None)
                .await?
            {
                let public = demand.public_view();
                println!(
                    "{}  {}  {}  {}  {}",
                    public.number,
                    public.status.as_str(),
                    public.field,
                    public.region,
                    public.title
                );
            }
            Ok(0)
        }
        ListingsCommand::Show { number } => match listings.demand(&number).await? {
            Some(demand) => {
                println!("{}", serde_json::to_string_pretty(&demand)?);
                Ok(0)
            }
            None => {
                eprintln!("no demand {number}");
                Ok(1)
            }
        },
        ListingsCommand::Match { number, limit } => {
            let Some(demand) = listings.demand(&number).await? else {
                eprintln!("no demand {number}");
                return Ok(1);
            };
            for (rank, found) in listings
                .matches(&demand.content, limit)
                .await?
                .iter()
                .enumerate()
            {
                println!(
                    "{}. {} {} ({}, {}) score {:.3} similarity {:.3} {:?}",
                    rank + 1,
                    found.capability.number,
                    found.capability.content.name,
                    found.capability.content.organisation,
                    found.capability.content.region,
                    found.score,
                    found.similarity,
                    found.reasons
                );
            }
            Ok(0)
        }
        ListingsCommand::Update {
            number,
            actor,
            status,
            staff,
            plan,
            message,
        } => {
            let update = StaffUpdate {
                status: status_arg(status.as_deref())?,
                staff,
                plan_note: plan,
                message,
            };
            let demand = engine
                .update_demand(&number, update, &format!("staff:{actor}"))
                .await?;
            println!("{} {}", demand.number, demand.status.as_str());
            Ok(0)
        }
        ListingsCommand::Claim {
            number,
            capability,
            note,
        } => {
            let demand = engine
                .claim_demand(&number, NewClaim { capability, note })
                .await?;
            println!(
                "{} {} ({} claims)",
                demand.number,
                demand.status.as_str(),
                demand.claims.len()
            );
            Ok(0)
        }
    }
}

/// One labelled matching case: a demand and the capabilities a domain
/// person would pick (by import key).
#[derive(Debug, Deserialize)]
struct MatchingCase {
    demand: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    field: Option<String>,
    expected: Vec<String>,
}

/// `wenke eval --matching`: recall@5 of the expected capabilities.
pub async fn eval_matching(
    engine: &Engine,
    files: &[PathBuf],
    show_misses: bool,
) -> anyhow::Result<i32> {
    const K: usize = 5;
    let cases: Vec<MatchingCase> = read_lines(files)?;
    anyhow::ensure!(!cases.is_empty(), "no matching cases in the files");
    let known = engine.listings().capabilities().await?;
    anyhow::ensure!(
        !known.is_empty(),
        "no capability listings: import kb/demo/capabilities.jsonl first"
    );
    let mut recall_sum = 0.0f64;
    let mut top1 = 0usize;
    for case in &cases {
        let content = DemandContent {
            title: case.demand.clone(),
            problem: case.demand.clone(),
            field: case.field.clone().unwrap_or_default(),
            region: case.region.clone().unwrap_or_default(),
            ..DemandContent::default()
        };
        let matches = engine.listings().matches(&content, K).await?;
        let keys: Vec<&str> = matches
            .iter()
            .filter_map(|m| m.capability.external_key.as_deref())
            .collect();
        let found = case
            .expected
            .iter()
            .filter(|e| keys.contains(&e.as_str()))
            .count();
        recall_sum += found as f64 / case.expected.len().max(1) as f64;
        if keys
            .first()
            .is_some_and(|k| case.expected.iter().any(|e| e == k))
        {
            top1 += 1;
        }
        if show_misses && found < case.expected.len() {
            println!(
                "miss: {:?} expected {:?} got {:?}",
                case.demand, case.expected, keys
            );
        }
    }
    let recall = recall_sum / cases.len() as f64;
    println!("cases        {}", cases.len());
    println!("recall@{K}     {recall:.3}");
    println!("top-1        {:.3}", top1 as f64 / cases.len() as f64);
    Ok(i32::from(recall < 0.8))
}
