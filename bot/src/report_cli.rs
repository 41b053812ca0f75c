//! `wenke report`: the weekly report (周报) on the command line, the same
//! numbers and Markdown as the console's download.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kb::region::Regions;

use bot::Engine;
use bot::report::{Period, Report, Scope, parse_day};

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

impl ReportArgs {
    fn period(&self) -> anyhow::Result<Period> {
        if let Some(week) = &self.week {
            return Ok(Period::iso_week(week)?);
        }
        match (&self.from, &self.to) {
            (Some(from), Some(to)) => Ok(Period::new(parse_day(from)?, parse_day(to)?)?),
            _ => Ok(Period::week_of(bot::china::today())),
        }
    }

    fn scope(&self) -> anyhow::Result<Scope> {
        let channel = match &self.channel {
            None => None,
            Some(name) => Some(
                webhooks::message::Channel::parse(name)
                    .with_context(|| format!("no channel {name}"))?
                    .as_str()
                    .to_owned(),
            ),
        };
        let city = match &self.city {
            None => None,
            Some(name) => Some(
                Regions::builtin()
                    .city(name)
                    .with_context(|| format!("no city or prefecture {name} in the province"))?,
            ),
        };
        Ok(Scope { channel, city })
    }
}

/// Prints or writes the report.
pub async fn run(
    engine: &Engine,
    args: ReportArgs,
    pages_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let report = Report::gather(engine, args.period()?, args.scope()?).await?;
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
