//! Backups of a whole point store as one JSON Lines file, and restores of
//! such a file into an empty store.
//!
//! Every piece of lasting state lives in the point store (entries,
//! revisions, the search index, listings, the turn log, accounts, word
//! edits, subscribers), so one copy of it, plus the data directory's own
//! text files, is a whole backup; the session store holds only what
//! expires (sessions, rate limits, dedup claims). The copy is logical
//! (points with their vectors and payloads) rather than Qdrant's snapshot
//! files, because the embedded qdrant-edge 0.7 has no snapshot writer and
//! one format then serves both stores: a backup of the embedded store
//! restores onto a Qdrant server and back.
//!
//! The file: a header line, then per collection a line naming it and one
//! line per point, then data-directory files, then a trailer with every
//! collection's point count, vector layout and the aliases. A restore
//! reads the whole file once to check it (well-formed lines, counts equal
//! to the trailer's, so a truncated or edited file is refused before
//! anything is written), then writes. Collections are created with their
//! vector layout only; their owners add the payload indexes when they next
//! open them, as they do on every start.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lexical::SparseVector;
use crate::store::{CollectionSpec, NewPoint, Payload, PointStore, StoreError};

/// The format's version; a restore refuses others.
const FORMAT_VERSION: u32 = 1;
/// Points per store read or write.
const PAGE: usize = 512;

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not a whole, well-formed backup.
    #[error("not a usable backup (line {line}): {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The target already holds data.
    #[error("restore needs an empty store; it has the collections {0}")]
    NotEmpty(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Header {
        format: u32,
        created_at: String,
        store: String,
    },
    Collection {
        name: String,
    },
    Point {
        id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dense: Option<Vec<f32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lexical: Option<SparseVector>,
        payload: Payload,
    },
    File {
        name: String,
        text: String,
    },
    Trailer {
        collections: Vec<CollectionSummary>,
        aliases: Vec<(String, String)>,
    },
}

/// One collection in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSummary {
    /// Physical name.
    pub name: String,
    /// Points copied.
    pub points: usize,
    /// The dense vectors' dimension, when its points have them.
    pub dense_dim: Option<usize>,
    /// Whether its points have lexical vectors.
    pub lexical: bool,
}

/// What a backup holds or a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSummary {
    /// The collections, in file order.
    pub collections: Vec<CollectionSummary>,
    /// The aliases.
    pub aliases: Vec<(String, String)>,
    /// The data-directory files, by name.
    pub files: Vec<String>,
}

impl BackupSummary {
    /// Points over all collections.
    pub fn points(&self) -> usize {
        self.collections.iter().map(|c| c.points).sum()
    }
}

/// A text file of the data directory to keep with the points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Its path relative to the data directory (`dict/synonyms.tsv`).
    pub name: String,
    /// Its content.
    pub text: String,
}

fn write_line(out: &mut impl Write, line: &Line) -> Result<(), BackupError> {
    serde_json::to_writer(&mut *out, line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes every collection of `store`, then `files`, to `out`. `progress`
/// gets the points written so far. The store should not change meanwhile
/// (the embedded store cannot: its data directory is locked to this
/// process); on a live server each collection is copied page by page.
pub async fn write_backup(
    store: Arc<dyn PointStore>,
    files: Vec<DataFile>,
    out: impl Write + Send + 'static,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<BackupSummary, BackupError> {
    let mut out = out;
    let mut summary = BackupSummary::default();
    let header = Line::Header {
        format: FORMAT_VERSION,
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        store: store.kind().to_owned(),
    };
    write_line(&mut out, &header)?;
    let mut written = 0;
    for name in store.collections().await? {
        write_line(&mut out, &Line::Collection { name: name.clone() })?;
        let mut collection = CollectionSummary {
            name: name.clone(),
            points: 0,
            dense_dim: None,
            lexical: false,
        };
        let mut offset = None;
        loop {
            let (points, next) = store.export(&name, offset, PAGE).await?;
            collection.points += points.len();
            // Serialising a page is milliseconds of CPU and a blocking
            // write: off the async runtime.
            let (returned, dense_dim, lexical) = tokio::task::spawn_blocking(move || {
                let mut dense_dim = None;
                let mut lexical = false;
                for point in points {
                    dense_dim = dense_dim.or(point.dense.as_ref().map(Vec::len));
                    lexical |= point.lexical.is_some();
                    write_line(
                        &mut out,
                        &Line::Point {
                            id: point.id,
                            dense: point.dense,
                            lexical: point.lexical,
                            payload: point.payload,
                        },
                    )?;
                }
                Ok::<_, BackupError>((out, dense_dim, lexical))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            out = returned;
            collection.dense_dim = collection.dense_dim.or(dense_dim);
            collection.lexical |= lexical;
            written = summary.points() + collection.points;
            progress(written);
            match next {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        summary.collections.push(collection);
    }
    for file in files {
        write_line(
            &mut out,
            &Line::File {
                name: file.name.clone(),
                text: file.text,
            },
        )?;
        summary.files.push(file.name);
    }
    summary.aliases = store.aliases().await?;
    write_line(
        &mut out,
        &Line::Trailer {
            collections: summary.collections.clone(),
            aliases: summary.aliases.clone(),
        },
    )?;
    out.flush()?;
    progress(written);
    Ok(summary)
}

/// Reads a backup through once and checks that it is whole: the header
/// first, every point inside a collection, the trailer last with the same
/// counts. Returns what it holds.
pub fn check_backup(input: impl BufRead) -> Result<BackupSummary, BackupError> {
    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut files = Vec::new();
    let mut trailer = None;
    let mut line_number = 0;
    for line in input.lines() {
        line_number += 1;
        let bad = |message: String| BackupError::Malformed {
            line: line_number,
            message,
        };
        let text = line?;
        if trailer.is_some() {
            return Err(bad("text after the trailer".into()));
        }
        let parsed: Line = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        match (line_number, parsed) {
            (1, Line::Header { format, .. }) if format == FORMAT_VERSION => {}
            (1, Line::Header { format, .. }) => {
                return Err(bad(format!(
                    "format {format}; this version reads {FORMAT_VERSION}"
                )));
            }
            (1, _) => return Err(bad("the first line is not a wenke backup header".into())),
            (_, Line::Header { .. }) => return Err(bad("a second header".into())),
            (_, Line::Collection { name }) => {
                if counted.insert(name.clone(), 0).is_some() {
                    return Err(bad(format!("collection {name} twice")));
                }
                current = Some(name);
            }
            (_, Line::Point { .. }) => {
                let Some(name) = &current else {
                    return Err(bad("a point before any collection".into()));
                };
                *counted.entry(name.clone()).or_default() += 1;
            }
            (_, Line::File { name, .. }) => {
                if !is_safe_relative_path(&name) {
                    return Err(bad(format!("file name {name} leaves the data directory")));
                }
                current = None;
                files.push(name);
            }
            (
                _,
                Line::Trailer {
                    collections,
                    aliases,
                },
            ) => trailer = Some((collections, aliases)),
        }
    }
    let Some((collections, aliases)) = trailer else {
        return Err(BackupError::Malformed {
            line: line_number,
            message: "no trailer: the file was cut short".into(),
        });
    };
    let listed: BTreeMap<String, usize> = collections
        .iter()
        .map(|c| (c.name.clone(), c.points))
        .collect();
    if listed != counted {
        return Err(BackupError::Malformed {
            line: line_number,
            message: format!("the trailer counts {listed:?} but the file holds {counted:?}"),
        });
    }
    Ok(BackupSummary {
        collections,
        aliases,
        files,
    })
}

/// A relative path of plain names (`dict/synonyms.tsv`), so a restored
/// file stays inside the data directory.
fn is_safe_relative_path(name: &str) -> bool {
    let path = std::path::Path::new(name);
    !name.is_empty()
        && !name.contains('\\')
        && path
            .components()
            .all(|part| matches!(part, std::path::Component::Normal(_)))
}

/// Restores a backup that [`check_backup`] accepted into an empty store,
/// writing the data-directory files into `data_dir`. `open` reopens the
/// file for the writing pass. `progress` gets the points written so far.
pub async fn restore_backup<R: BufRead + Send + 'static>(
    store: Arc<dyn PointStore>,
    open: impl Fn() -> std::io::Result<R>,
    data_dir: Option<PathBuf>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<BackupSummary, BackupError> {
    let summary = {
        let input = open()?;
        tokio::task::spawn_blocking(move || check_backup(input))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??
    };
    let existing = store.collections().await?;
    if !existing.is_empty() {
        return Err(BackupError::NotEmpty(existing.join(", ")));
    }
    for collection in &summary.collections {
        store
            .ensure_collection(&CollectionSpec {
                name: collection.name.clone(),
                dense_dim: collection.dense_dim,
                lexical: collection.lexical,
                keyword_fields: Vec::new(),
                lookup_fields: Vec::new(),
                integer_fields: Vec::new(),
                datetime_fields: Vec::new(),
            })
            .await?;
    }

    // The writing pass: lines are parsed on a blocking thread and handed
    // over a page at a time.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Batch, BackupError>>(4);
    let mut input = open()?;
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = Batch::default();
        let mut text = String::new();
        loop {
            text.clear();
            match input.read_line(&mut text) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    let _ = sender.blocking_send(Err(e.into()));
                    return;
                }
            }
            let line: Line = match serde_json::from_str(text.trim_end()) {
                Ok(line) => line,
                Err(e) => {
                    let _ = sender.blocking_send(Err(std::io::Error::other(e).into()));
                    return;
                }
            };
            match line {
                Line::Collection { name } => {
                    let next = Batch {
                        collection: Some(name),
                        ..Batch::default()
                    };
                    let done = std::mem::replace(&mut batch, next);
                    if sender.blocking_send(Ok(done)).is_err() {
                        return;
                    }
                }
                Line::Point {
                    id,
                    dense,
                    lexical,
                    payload,
                } => {
                    batch.points.push(NewPoint {
                        id,
                        dense,
                        lexical,
                        payload,
                    });
                    if batch.points.len() >= PAGE {
                        let next = Batch {
                            collection: batch.collection.clone(),
                            ..Batch::default()
                        };
                        let full = std::mem::replace(&mut batch, next);
                        if sender.blocking_send(Ok(full)).is_err() {
                            return;
                        }
                    }
                }
                Line::File { name, text } => batch.files.push(DataFile { name, text }),
                Line::Header { .. } | Line::Trailer { .. } => {}
            }
        }
        let _ = sender.blocking_send(Ok(batch));
    });
    let mut written = 0;
    while let Some(batch) = receiver.recv().await {
        let batch = batch?;
        if let Some(collection) = &batch.collection
            && !batch.points.is_empty()
        {
            written += batch.points.len();
            store.upsert(collection, batch.points).await?;
            progress(written);
        }
        if let Some(dir) = &data_dir {
            for file in batch.files {
                let path = dir.join(&file.name);
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                tokio::fs::write(&path, file.text).await?;
            }
        }
    }
    reader
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    for (alias, collection) in &summary.aliases {
        store.set_alias(alias, collection).await?;
    }
    Ok(summary)
}

/// Points of one collection (or none) and files, as the reader hands them
/// to the writer.
#[derive(Default)]
struct Batch {
    collection: Option<String>,
    points: Vec<NewPoint>,
    files: Vec<DataFile>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_files_stay_inside_the_data_directory() {
        for good in ["calibration.json", "dict/synonyms.tsv"] {
            assert!(is_safe_relative_path(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "dict/../../x",
            "/abs",
            "c:\\x",
        ] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
    }

    #[test]
    fn a_cut_or_miscounted_file_is_refused() {
        let header =
            r#"{"header":{"format":1,"created_at":"2026-12-02T00:00:00Z","store":"embedded"}}"#;
        let collection = r#"{"collection":{"name":"entries"}}"#;
        let point = format!(
            r#"{{"point":{{"id":"{}","payload":{{"a":1}}}}}}"#,
            Uuid::from_u128(1)
        );
        let trailer = |n: usize| {
            format!(
                r#"{{"trailer":{{"collections":[{{"name":"entries","points":{n},"dense_dim":null,"lexical":false}}],"aliases":[]}}}}"#
            )
        };
        let whole = [header, collection, point.as_str(), trailer(1).as_str()].join("\n");
        let Ok(summary) = check_backup(whole.as_bytes()) else {
            panic!("a whole backup is accepted");
        };
        assert_eq!(summary.points(), 1);

        let cut = [header, collection, point.as_str()].join("\n");
        assert!(matches!(
            check_backup(cut.as_bytes()),
            Err(BackupError::Malformed { .. })
        ));
        let miscounted = [header, collection, point.as_str(), trailer(2).as_str()].join("\n");
        assert!(check_backup(miscounted.as_bytes()).is_err());
        let headless = [collection, point.as_str(), trailer(1).as_str()].join("\n");
        assert!(check_backup(headless.as_bytes()).is_err());
        let garbled = [header, collection, "{not json", trailer(1).as_str()].join("\n");
        assert!(matches!(
            check_backup(garbled.as_bytes()),
            Err(BackupError::Malformed { line: 3, .. })
        ));
    }
}
