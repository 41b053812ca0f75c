//! Parsing and writing entries in the exchange formats: JSONL, CSV (UTF-8 or
//! GBK, as Chinese offices produce) and a directory of Markdown files with
//! YAML front matter.
//!
//! Parsing never stops at a bad row: each row yields its own result, with the
//! line (or file) it came from, so an import can report every error and still
//! load the good rows.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, EntryContent, FieldError, Source, parse_category};

/// Where a row came from, for error reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOrigin {
    /// A line of a JSONL or CSV file (1-based; for CSV the header is line 1).
    Line(usize),
    /// A Markdown file.
    File(PathBuf),
}

impl std::fmt::Display for RowOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line(line) => write!(f, "line {line}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One parsed row: its origin and either the content or what is wrong with it.
#[derive(Debug, Clone)]
pub struct ParsedRow {
    /// Where it came from.
    pub origin: RowOrigin,
    /// The content, or the problems.
    pub result: Result<EntryContent, Vec<FieldError>>,
}

/// Exchange formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated with a header row; list fields separated by `|`.
    Csv,
    /// A directory of `.md` files with YAML front matter; the body is the answer.
    MarkdownDir,
}

impl Format {
    /// Guesses the format from a path: a directory is Markdown, else by extension.
    pub fn detect(path: &Path) -> Option<Self> {
        if path.is_dir() {
            return Some(Self::MarkdownDir);
        }
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" | "json" => Some(Self::Jsonl),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// Errors that stop a whole import (as opposed to a bad row).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file or directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The CSV header lacks required columns.
    #[error("CSV header lacks column(s): {0}")]
    MissingColumns(String),
    /// The format could not be determined.
    #[error("cannot tell the format of {0} (use .jsonl, .csv or a directory of .md files)")]
    UnknownFormat(PathBuf),
}

/// The loose shape of an imported row: strings where the model has types,
/// so a bad value is reported as a field error, not a parse failure.
#[derive(Debug, Deserialize)]
struct RawRow {
    #[serde(default)]
    external_key: Option<String>,
    #[serde(default)]
    question: String,
    #[serde(default)]
    alt_questions: Vec<String>,
    #[serde(default)]
    answer: String,
    #[serde(default)]
    short_answer: Option<String>,
    #[serde(default)]
    category: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    crops: Vec<String>,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    months: Vec<u8>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    source: Option<RawSource>,
    #[serde(default)]
    review_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSource {
    Organisation(String),
    Full(Source),
}

impl RawRow {
    fn into_content(self) -> Result<EntryContent, Vec<FieldError>> {
        let category = parse_category(&self.category).map_err(|e| vec![e]);
        let source = match self.source {
            Some(RawSource::Organisation(organisation)) => Source {
                organisation,
                ..Source::default()
            },
            Some(RawSource::Full(source)) => source,
            None => Source::default(),
        };
        let clean_list = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let content = EntryContent {
            external_key: self
                .external_key
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty()),
            question: self.question.trim().to_owned(),
            alt_questions: clean_list(self.alt_questions),
            answer: self.answer.trim().to_owned(),
            short_answer: self
                .short_answer
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            category: *category
                .as_ref()
                .unwrap_or(&crate::entry::Category::Everyday),
            tags: clean_list(self.tags),
            crops: clean_list(self.crops),
            regions: clean_list(self.regions),
            months: self.months,
            audience: self.audience.filter(|a| !a.trim().is_empty()),
            source,
            review_by: self.review_by.filter(|d| !d.trim().is_empty()),
        };
        let mut errors = category.err().unwrap_or_default();
        if let Err(mut more) = content.validate() {
            errors.append(&mut more);
        }
        if errors.is_empty() {
            Ok(content)
        } else {
            Err(errors)
        }
    }
}

fn syntax_error(message: String) -> Vec<FieldError> {
    vec![FieldError {
        field: "row",
        message,
    }]
}

/// Parses JSONL text; blank lines are skipped.
pub fn parse_jsonl(text: &str) -> Vec<ParsedRow> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| ParsedRow {
            origin: RowOrigin::Line(index + 1),
            result: serde_json::from_str::<RawRow>(line.trim_start_matches('\u{feff}'))
                .map_err(|e| syntax_error(format!("JSON 格式错误：{e}")))
                .and_then(RawRow::into_content),
        })
        .collect()
}

/// Decodes bytes as UTF-8 (BOM allowed) or, failing that, as GB18030 (a
/// superset of GBK, which Excel on Chinese Windows writes).
pub fn decode_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::GB18030.decode(bytes).0.into_owned(),
    }
}

const CSV_REQUIRED: &[&str] = &["question", "answer", "category"];
/// Separator of list values inside one CSV cell.
const CSV_LIST_SEPARATORS: &[char] = &['|', '｜'];

/// Parses CSV bytes (UTF-8 or GBK). Columns are named as the JSONL fields;
/// list cells separate values with `|`; `source` is the organisation, with
/// optional `source_document` and `source_url` columns.
pub fn parse_csv(bytes: &[u8]) -> Result<Vec<ParsedRow>, ImportError> {
    let text = decode_text(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| ImportError::MissingColumns(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let missing: Vec<&str> = CSV_REQUIRED
        .iter()
        .copied()
        .filter(|c| !headers.iter().any(|h| h == c))
        .collect();
    if !missing.is_empty() {
        return Err(ImportError::MissingColumns(missing.join(", ")));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let (line, result) = match record {
            Err(error) => (
                error.position().map(|p| p.line() as usize).unwrap_or(0),
                Err(syntax_error(format!("CSV 格式错误：{error}"))),
            ),
            Ok(record) => {
                let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
                let cell = |name: &str| -> String {
                    headers
                        .iter()
                        .position(|h| h == name)
                        .and_then(|i| record.get(i))
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                };
                let list = |name: &str| -> Vec<String> {
                    cell(name)
                        .split(CSV_LIST_SEPARATORS)
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                };
                let optional = |name: &str| Some(cell(name)).filter(|s| !s.is_empty());
                let months: Result<Vec<u8>, _> =
                    list("months").iter().map(|m| m.parse::<u8>()).collect();
                let result = match months {
                    Err(_) => Err(vec![FieldError {
                        field: "months",
                        message: format!("月份「{}」应为 1–12 的数字，用 | 分隔", cell("months")),
                    }]),
                    Ok(months) => RawRow {
                        external_key: optional("external_key"),
                        question: cell("question"),
                        alt_questions: list("alt_questions"),
                        answer: cell("answer"),
                        short_answer: optional("short_answer"),
                        category: cell("category"),
                        tags: list("tags"),
                        crops: list("crops"),
                        regions: list("regions"),
                        months,
                        audience: optional("audience"),
                        source: Some(RawSource::Full(Source {
                            organisation: cell("source"),
                            document: optional("source_document"),
                            url: optional("source_url"),
                        })),
                        review_by: optional("review_by"),
                    }
                    .into_content(),
                };
                (line, result)
            }
        };
        rows.push(ParsedRow {
            origin: RowOrigin::Line(line),
            result,
        });
    }
    Ok(rows)
}

/// Parses one Markdown file: YAML front matter between `---` lines holds every
/// field but the answer, which is the body.
pub fn parse_markdown(path: &Path, text: &str) -> ParsedRow {
    let origin = RowOrigin::File(path.to_owned());
    let text = text.trim_start_matches('\u{feff}');
    let Some(rest) = text.strip_prefix("---") else {
        return ParsedRow {
            origin,
            result: Err(syntax_error(
                "缺少 front matter（文件应以 --- 开头）".into(),
            )),
        };
    };
    let Some((front, body)) = rest.split_once("\n---") else {
        return ParsedRow {
            origin,
            result: Err(syntax_error("front matter 没有结束的 ---".into())),
        };
    };
    let body = body.split_once('\n').map_or("", |(_, b)| b);
    let result = serde_yaml_ng::from_str::<serde_json::Value>(front)
        .map_err(|e| syntax_error(format!("front matter 格式错误：{e}")))
        .and_then(|mut value| {
            if let Some(object) = value.as_object_mut() {
                object.insert(
                    "answer".into(),
                    serde_json::Value::String(body.trim().to_owned()),
                );
            }
            serde_json::from_value::<RawRow>(value)
                .map_err(|e| syntax_error(format!("字段类型错误：{e}")))
        })
        .and_then(RawRow::into_content);
    ParsedRow { origin, result }
}

/// Reads and parses a file or directory in the given format.
pub fn read_rows(path: &Path, format: Format) -> Result<Vec<ParsedRow>, ImportError> {
    let io = |source| ImportError::Io {
        path: path.to_owned(),
        source,
    };
    match format {
        Format::Jsonl => Ok(parse_jsonl(&decode_text(&std::fs::read(path).map_err(io)?))),
        Format::Csv => parse_csv(&std::fs::read(path).map_err(io)?),
        Format::MarkdownDir => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .collect();
            files.sort();
            files
                .iter()
                .map(|file| {
                    let bytes = std::fs::read(file).map_err(|source| ImportError::Io {
                        path: file.clone(),
                        source,
                    })?;
                    Ok(parse_markdown(file, &decode_text(&bytes)))
                })
                .collect()
        }
    }
}

/// The exported form of an entry: its content plus identity and workflow
/// fields. Importing an export restores the content exactly (the extra
/// fields are ignored by the importer).
#[derive(Debug, Serialize)]
pub struct ExportRecord<'a> {
    #[serde(flatten)]
    entry: &'a Entry,
}

/// One JSONL line for an entry.
pub fn to_jsonl_line(entry: &Entry) -> String {
    serde_json::to_string(&ExportRecord { entry }).unwrap_or_default()
}

/// CSV export with the import columns (UTF-8 with BOM so Excel opens it right).
pub fn to_csv(entries: &[Entry]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
    writer.write_record([
        "external_key",
        "question",
        "alt_questions",
        "answer",
        "short_answer",
        "category",
        "tags",
        "crops",
        "regions",
        "months",
        "audience",
        "source",
        "source_document",
        "source_url",
        "review_by",
        "id",
        "status",
        "version",
        "author",
        "reviewer",
    ])?;
    for entry in entries {
        let c = &entry.content;
        let join = |list: &[String]| list.join("|");
        writer.write_record([
            c.external_key.clone().unwrap_or_default(),
            c.question.clone(),
            join(&c.alt_questions),
            c.answer.clone(),
            c.short_answer.clone().unwrap_or_default(),
            c.category.name().to_owned(),
            join(&c.tags),
            join(&c.crops),
            join(&c.regions),
            c.months
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join("|"),
            c.audience.clone().unwrap_or_default(),
            c.source.organisation.clone(),
            c.source.document.clone().unwrap_or_default(),
            c.source.url.clone().unwrap_or_default(),
            c.review_by.clone().unwrap_or_default(),
            entry.id.to_string(),
            entry.status.as_str().to_owned(),
            entry.version.to_string(),
            entry.author.clone(),
            entry.reviewer.clone().unwrap_or_default(),
        ])?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

/// A Markdown file for an entry: YAML front matter and the answer as body.
pub fn to_markdown(entry: &Entry) -> String {
    let mut front = serde_json::to_value(&entry.content).unwrap_or_default();
    if let Some(object) = front.as_object_mut() {
        object.remove("answer");
        object.insert("id".into(), serde_json::Value::String(entry.id.to_string()));
        object.insert(
            "status".into(),
            serde_json::Value::String(entry.status.as_str().into()),
        );
    }
    let yaml = serde_yaml_ng::to_string(&front).unwrap_or_default();
    format!("---\n{}---\n\n{}\n", yaml, entry.content.answer)
}
