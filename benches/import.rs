//! CSV import throughput and memory.
//!
//! `cargo bench --bench import` imports 100,000 rows, then 1,000,000 rows
//! (`HERALD_BENCH_ROWS` overrides the large size) into fresh SQLite
//! databases and prints rows/s, the import report and the peak RSS after
//! each run: memory should stay flat as the file grows. The files have 2%
//! invalid and 2% duplicate rows (in a different chunk). In-process, so it
//! leaves out what a user waits for (start-up, the progress bar, the
//! process's exit); `benches/import.sh` times the real command.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it does one tiny
//! run as a smoke test. Not criterion: a million-row run is one sample.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use herald::app::App;
use herald::config::Config;
use herald::subscribers::import::{ImportOptions, ImportReport};

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = if bench {
        let large = std::env::var("HERALD_BENCH_ROWS")
            .ok()
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or(1_000_000);
        vec![100_000.min(large), large]
    } else {
        vec![2_000]
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut results = Vec::new();
    for rows in sizes {
        let (expected, report, seconds) = runtime.block_on(run(rows));
        assert_eq!(report, expected, "import report for {rows} rows");
        let peak = peak_rss_kib();
        println!(
            "import {rows:>9} rows: {seconds:7.2} s, {:>9.0} rows/s, peak RSS {} | {report}",
            rows as f64 / seconds,
            peak.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
        results.push((rows, peak));
    }
    if let [(small, Some(a)), (large, Some(b))] = results[..] {
        println!(
            "peak RSS after {small} rows: {:.1} MiB; after {large} rows: {:.1} MiB",
            a as f64 / 1024.0,
            b as f64 / 1024.0
        );
    }
}

/// Generates the file, opens a fresh app, imports; returns (expected report, report, seconds).
async fn run(rows: usize) -> (ImportReport, ImportReport, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("subscribers.csv");
    let expected = generate(&path, rows).expect("write CSV");

    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.smtp.outbox_dir = dir.path().join("outbox");
    config.security.secret = "bench-secret-0123456789abcdef-0123456789".into();
    let app = App::open(config).await.expect("App::open");

    let options = ImportOptions {
        confirmed: true,
        newsletter: &app.newsletter,
        progress: &|_, _| {},
    };
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let report = app
        .import_subscribers(&path, options, &mut std::io::sink())
        .await
        .expect("import");
    let seconds = started.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (cpu_before, cpu_seconds()) {
        // On a shared machine wall time depends on the neighbours; CPU time less so.
        println!(
            "  {rows} rows: {:.2} s of CPU (user + system, all threads) in {seconds:.2} s",
            b - a
        );
    }
    app.close().await;
    (expected, report, seconds)
}

/// Every 50 rows: one invalid address and one duplicate of an earlier row
/// (10,001 rows back, so it is found in the database rather than in the
/// importer's 5,000-row chunk).
fn generate(path: &Path, rows: usize) -> std::io::Result<ImportReport> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(path)?);
    let mut expected = ImportReport::default();
    writeln!(out, "email,name,city,plan")?;
    for i in 0..rows {
        match i % 50 {
            7 => {
                writeln!(out, "not-an-address-{i},Broken Row,Astana,free")?;
                expected.invalid += 1;
            }
            13 if i >= 10_001 => {
                writeln!(
                    out,
                    "reader{}@example{}.com,Repeated Reader,Almaty,pro",
                    i - 10_001,
                    (i - 10_001) % 10
                )?;
                expected.duplicate += 1;
            }
            _ => {
                writeln!(
                    out,
                    "reader{i}@example{}.com,Reader {i},Shymkent,free",
                    i % 10
                )?;
                expected.imported += 1;
            }
        }
    }
    out.flush()?;
    Ok(expected)
}

/// `VmHWM` (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of this process (all threads), from /proc/self/stat
/// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
