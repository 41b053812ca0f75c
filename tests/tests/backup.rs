//! A backup of a used data directory restored into an empty one: the
//! restored service has the same entries and history, answers from the
//! same search index, and keeps the turn log and the console's accounts;
//! a cut backup and a non-empty target are refused before anything is
//! written.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;

use bot::console::accounts::Role;
use kb::backup::{BackupError, DataFile, check_backup, restore_backup, write_backup};
use kb::store::edge::EdgeStore;
use kb::store::{Filter, PointStore};
use webhooks::message::{Channel, Content, Handler, Incoming, UserKey};

const ASKED: &str = "水稻稻瘟病怎么防治";

async fn answer_of(engine: &bot::Engine, user: &str) -> anyhow::Result<Option<String>> {
    let reply = engine
        .handle(Incoming {
            user: UserKey::new(Channel::Web, user),
            message_id: None,
            content: Content::Text { text: ASKED.into() },
            received_at: time::OffsetDateTime::now_utc(),
        })
        .await?;
    Ok(reply.citations.first().map(|c| c.entry_id.clone()))
}

async fn count(store: &dyn PointStore, collection: &str) -> anyhow::Result<usize> {
    Ok(store.count(collection, Filter::default()).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_serves_what_the_original_did() -> anyhow::Result<()> {
    let original_dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&original_dir, "kb/tests/data/fixture.jsonl").await?;
    let answered = answer_of(&engine, "before-backup").await?;
    assert!(answered.is_some(), "the fixture answers {ASKED}");
    tests::console_with(
        &engine,
        &[("bianji", Role::Editor)],
        "correct-horse-battery",
    )
    .await?;
    engine.turns().flush().await?;
    let store = engine.kb().store();
    let entries = engine.kb().list(&kb::ListFilter::default()).await?;
    let turns = count(store.as_ref(), "turns").await?;
    let accounts = count(store.as_ref(), "accounts").await?;
    assert!(turns > 0 && accounts == 1);

    let backup_path = tests::scratch_dir()?.join("wenke.backup.jsonl");
    let file = std::fs::File::create_new(&backup_path)?;
    let files = vec![DataFile {
        name: "dict/synonyms.tsv".into(),
        text: "苞谷\t玉米\n".into(),
    }];
    let written = write_backup(
        Arc::clone(&store),
        files,
        std::io::BufWriter::new(file),
        &|_| {},
    )
    .await?;
    assert_eq!(written.files, vec!["dict/synonyms.tsv".to_owned()]);
    let checked = check_backup(BufReader::new(std::fs::File::open(&backup_path)?))?;
    assert_eq!(checked, written);
    assert!(
        written.aliases.iter().any(|(alias, _)| alias == "index"),
        "{:?}",
        written.aliases
    );

    // Into an empty directory.
    let restored_dir = tests::scratch_dir()?;
    let restored_data = tests::scratch_dir()?;
    {
        let target: Arc<dyn PointStore> = Arc::new(EdgeStore::open(&restored_dir)?);
        let path = backup_path.clone();
        let open = move || std::fs::File::open(&path).map(BufReader::new);
        let restored = restore_backup(
            Arc::clone(&target),
            open,
            Some(restored_data.clone()),
            &|_| {},
        )
        .await?;
        assert_eq!(restored.points(), written.points());
        assert_eq!(
            std::fs::read_to_string(restored_data.join("dict/synonyms.tsv"))?,
            "苞谷\t玉米\n"
        );

        // A second restore into the now full store is refused.
        let path = backup_path.clone();
        let again = restore_backup(
            target,
            move || std::fs::File::open(&path).map(BufReader::new),
            None,
            &|_| {},
        )
        .await;
        assert!(matches!(again, Err(BackupError::NotEmpty(_))), "{again:?}");
    }
    let restored = tests::engine_on(&restored_dir).await?;
    let restored_entries = restored.kb().list(&kb::ListFilter::default()).await?;
    assert_eq!(restored_entries, entries);
    for entry in &entries {
        assert_eq!(
            restored.kb().history(entry.id).await?,
            engine.kb().history(entry.id).await?
        );
    }
    let restored_store = restored.kb().store();
    assert_eq!(count(restored_store.as_ref(), "turns").await?, turns);
    assert_eq!(count(restored_store.as_ref(), "accounts").await?, accounts);
    assert_eq!(answer_of(&restored, "after-restore").await?, answered);

    // A cut file is refused and leaves its target untouched.
    let cut_path = backup_path.with_extension("cut");
    {
        let mut cut = std::fs::File::create_new(&cut_path)?;
        let whole = BufReader::new(std::fs::File::open(&backup_path)?);
        let lines: Vec<String> = whole.lines().collect::<Result<_, _>>()?;
        for line in &lines[..lines.len() - 2] {
            writeln!(cut, "{line}")?;
        }
    }
    let empty_dir = tests::scratch_dir()?;
    let empty: Arc<dyn PointStore> = Arc::new(EdgeStore::open(&empty_dir)?);
    let path = cut_path.clone();
    let refused = restore_backup(
        Arc::clone(&empty),
        move || std::fs::File::open(&path).map(BufReader::new),
        None,
        &|_| {},
    )
    .await;
    assert!(
        matches!(refused, Err(BackupError::Malformed { .. })),
        "{refused:?}"
    );
    assert!(empty.collections().await?.is_empty());
    Ok(())
}
