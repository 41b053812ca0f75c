//! `wenke report`: the weekly report (周报) on the command line, the same
//! numbers and Markdown as the console's download.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use bot::Engine;
use bot::report::{Period, Report, Scope};

/// What `wenke report` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// The report as Markdown (the template `console/report.md`).
    Markdown,
    /// One CSV line per day, channel, city and county.
    Csv,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// An ISO week, `2026-W47`; without it and without `--from`, the
    /// current week in China.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    week: Option<String>,
    /// The first day, `YYYY-MM-DD`.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// The last day, `YYYY-MM-DD`.
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// Only this channel (`wechat`, `wecom`, `telegram`, `web`, `cli`).
    #[arg(long)]
    channel: Option<String>,
    /// Only this city or prefecture (`广元` or `广元市`).
    #[arg(long)]
    city: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "markdown")]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Prints or writes the report.
pub async fn run(
    engine: &Engine,
    args: ReportArgs,
    pages_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let period = Period::select(
        args.week.as_deref(),
        args.from.as_deref(),
        args.to.as_deref(),
    )?;
    let scope = Scope::named(args.channel.as_deref(), args.city.as_deref())?;
    let report = Report::gather(engine, period, scope).await?;
    let text = match args.format {
        Format::Csv => report.csv(),
        Format::Markdown => {
            let (pages, problems) = prompts::ConsolePages::load(pages_dir);
            for problem in problems {
                tracing::warn!(%problem, "console page override ignored");
            }
            pages.render("report.md", report.template_context())?
        }
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "report {} written to {}",
                report.period.label(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
