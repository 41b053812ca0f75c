//! Prints the resident memory after each loading step (Linux only):
//! `cargo run --example rss -- models/multilingual-e5-small-q4/e5-small-q4.bin`.

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "models/multilingual-e5-small-q4/e5-small-q4.bin".to_owned());
    println!("start            {:>7.1} MB", rss_mb());
    let file = embeddings::E5s1File::open(std::path::Path::new(&path))?;
    println!(
        "file parsed      {:>7.1} MB ({} pieces)",
        rss_mb(),
        file.pieces.len()
    );

    drop(file);
    println!("file dropped     {:>7.1} MB", rss_mb());
    let model = embeddings::EmbeddingModel::load(std::path::Path::new(&path))?;
    println!("model loaded     {:>7.1} MB", rss_mb());
    model.embed(&["洋芋叶子发黑咋个办"], embeddings::TextKind::Query)?;
    println!("one query        {:>7.1} MB", rss_mb());
    Ok(())
}
