//! The console's analytics page and the weekly report's downloads, for
//! service staff: any period (the current ISO week by default), one channel
//! or all, one city or all. Every number comes from [`Report`], the same
//! function `wenke report` prints.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kb::region::Regions;
use serde::Deserialize;
use webhooks::message::Channel;

use super::accounts::Role;
use super::{Console, ConsoleError, Signed};
use crate::report::{Period, Report, Scope};

/// The channels a report can be narrowed to.
const CHANNELS: [Channel; 5] = [
    Channel::Wechat,
    Channel::Wecom,
    Channel::Telegram,
    Channel::Web,
    Channel::Cli,
];

#[derive(Debug, Default, Deserialize)]
pub(super) struct ReportQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    /// An ISO week (`2026-W47`), instead of `from` and `to`.
    #[serde(default)]
    week: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    format: String,
}

async fn report(console: &Console, query: &ReportQuery) -> Result<Report, ConsoleError> {
    let bad = |e: crate::report::ReportError| ConsoleError::BadRequest(e.to_string());
    let period =
        Period::select(Some(&query.week), Some(&query.from), Some(&query.to)).map_err(bad)?;
    let scope = Scope::named(Some(&query.channel), Some(&query.city)).map_err(bad)?;
    Report::gather(&console.engine, period, scope)
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))
}

/// The query string that selects the same report, for the download links.
fn same_report(report: &Report) -> String {
    let mut pairs = vec![
        ("from", report.period.from_text()),
        ("to", report.period.to_text()),
    ];
    if let Some(channel) = &report.scope.channel {
        pairs.push(("channel", channel.clone()));
    }
    if let Some(city) = &report.scope.city {
        pairs.push(("city", city.clone()));
    }
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// `GET /console/reports`: the numbers, the daily chart and the tables.
pub(super) async fn page(
    State(console): State<Arc<Console>>,
    user: Signed,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Staff)?;
    let report = report(&console, &query).await?;
    let mut context = report.template_context();
    if let Some(map) = context.as_object_mut() {
        map.insert("chart".into(), report.daily_chart_svg().into());
        map.insert("query".into(), same_report(&report).into());
        map.insert(
            "channels".into(),
            CHANNELS
                .iter()
                .map(|channel| {
                    serde_json::json!({
                        "value": channel.as_str(),
                        "label": super::channel_label(*channel),
                    })
                })
                .collect(),
        );
        map.insert("cities".into(), Regions::builtin().cities().to_vec().into());
    }
    console.page(&user, "reports.html", context)
}

/// `GET /console/reports/export?format=md|csv`: the weekly report as a
/// download.
pub(super) async fn export(
    State(console): State<Arc<Console>>,
    user: Signed,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Staff)?;
    let report = report(&console, &query).await?;
    let name = format!(
        "wenke-report-{}-{}",
        report.period.from_text(),
        report.period.to_text()
    );
    let (body, content_type, extension) = match query.format.as_str() {
        "csv" => (report.csv(), "text/csv; charset=utf-8", "csv"),
        "md" | "" => (
            console
                .pages
                .render("report.md", report.template_context())?,
            "text/markdown; charset=utf-8",
            "md",
        ),
        other => {
            return Err(ConsoleError::BadRequest(format!(
                "没有这种格式：{other}（可选 md、csv）"
            )));
        }
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{name}.{extension}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
