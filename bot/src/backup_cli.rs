//! `wenke backup` and `wenke restore`: the whole point store and the data
//! directory's text files in one file ([`kb::backup`]), and back into an
//! empty data directory or server prefix.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::kb_cli::StoreArgs;

/// Directories of the data directory that are not its own text files:
/// the store itself and caches rebuilt at start.
const NOT_DATA_FILES: [&str; 2] = ["qdrant", "cache"];

/// The data directory's own text files (dictionaries under `dict/`, the
/// calibration): every UTF-8 regular file in it and its subdirectories,
/// except under [`NOT_DATA_FILES`], named by its path relative to it.
fn data_files(dir: &Path) -> anyhow::Result<Vec<kb::backup::DataFile>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(relative) = path.strip_prefix(dir) else {
                continue;
            };
            let name = relative.to_string_lossy().replace('\\', "/");
            if path.is_dir() {
                if !NOT_DATA_FILES.contains(&name.as_str()) {
                    pending.push(path);
                }
                continue;
            }
            if !path.is_file() || name.ends_with(".lock") {
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push(kb::backup::DataFile { name, text }),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "not a text file; left out")
                }
            }
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} points {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}

fn print_summary(verb: &str, summary: &kb::backup::BackupSummary) {
    println!(
        "{verb} {} points in {} collections, {} aliases, {} files",
        summary.points(),
        summary.collections.len(),
        summary.aliases.len(),
        summary.files.len()
    );
    for collection in &summary.collections {
        println!("  {:<60} {:>9}", collection.name, collection.points);
    }
}

/// Writes the backup to `out` (a new file; an existing one is refused).
pub async fn backup(store_args: &StoreArgs, out: &Path) -> anyhow::Result<()> {
    let store = store_args.open_store()?;
    let files = if store_args.qdrant_url().is_none() {
        data_files(&store_args.data_dir)?
    } else {
        Vec::new()
    };
    let file = File::create_new(out)
        .with_context(|| format!("creating {} (it must not exist yet)", out.display()))?;
    let bar = progress_bar();
    let summary = kb::backup::write_backup(store, files, BufWriter::new(file), &|n| {
        bar.set_position(n as u64)
    })
    .await
    .with_context(|| format!("writing the backup {}", out.display()))?;
    bar.finish_and_clear();
    File::open(out)?.sync_all()?;
    print_summary("backed up", &summary);
    Ok(())
}

/// Restores the backup `from` into the (empty) store `store_args` names.
pub async fn restore(store_args: &StoreArgs, from: &Path) -> anyhow::Result<()> {
    let store = store_args.open_store()?;
    let data_dir: Option<PathBuf> = store_args
        .qdrant_url()
        .is_none()
        .then(|| store_args.data_dir.clone());
    let path = from.to_owned();
    let open = move || File::open(&path).map(BufReader::new);
    let bar = progress_bar();
    let summary =
        kb::backup::restore_backup(store, open, data_dir, &|n| bar.set_position(n as u64))
            .await
            .with_context(|| format!("restoring {}", from.display()))?;
    bar.finish_and_clear();
    print_summary("restored", &summary);
    println!("start wenke as usual: each part adds its indexes when it opens");
    Ok(())
}
