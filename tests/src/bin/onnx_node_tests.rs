//! Runs the ONNX backend node tests natively (tract) and in the sandboxed guest component
//! and prints pass / mismatch / unsupported counts for each, plus the cases the sandbox
//! loses. Exits with status 1 when it loses any.

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_tests::node_tests::{self, Runner, Summary, Tolerance};
use std::path::PathBuf;

/// Runs the ONNX backend node tests natively and in the Kiln sandbox.
#[derive(Debug, Parser)]
#[command(name = "onnx-node-tests")]
struct Args {
    /// Directory of the generated test data (`<dir>/node/<case>/`); generated with python3
    /// and the `onnx` package when missing. Default: $KILN_ONNX_NODE_TESTS, else
    /// target/onnx-node-tests.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Only run cases whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// List every lost case (native passes, the component does not) with the
    /// component's error, and every gained one.
    #[arg(long)]
    list_lost: bool,
    /// Print every case that does not pass on a side, with the reason.
    #[arg(long)]
    failures: bool,
    /// Write every case's outcomes to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Cases run in parallel (default: the number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// Relative tolerance for float outputs.
    #[arg(long, default_value_t = Tolerance::default().rtol)]
    rtol: f64,
    /// Absolute tolerance for float outputs.
    #[arg(long, default_value_t = Tolerance::default().atol)]
    atol: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = args.data.clone().unwrap_or_else(node_tests::default_data_dir);
    node_tests::ensure_data(&data)?;
    let dirs = node_tests::case_dirs(&data, args.filter.as_deref())?;
    if dirs.is_empty() {
        anyhow::bail!("no case in {} matches the filter", data.join("node").display());
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    eprintln!("compiling (or loading from cache) the guest component…");
    let runner = Runner::new(Tolerance {
        rtol: args.rtol,
        atol: args.atol,
    })?;

    let bar = ProgressBar::new(dirs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} (eta {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let results = runner.run_all(&dirs, jobs, &|r| {
        bar.set_message(r.name.clone());
        bar.inc(1);
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    if args.failures {
        for r in &results {
            for (side, outcome) in [("native", &r.native), ("component", &r.component)] {
                if !outcome.is_pass() {
                    let kind = if matches!(outcome, node_tests::Outcome::Mismatch(_)) {
                        "mismatch"
                    } else {
                        "unsupported"
                    };
                    println!(
                        "{:<60} {side:<9} {kind:<11} {}",
                        r.name,
                        node_tests::one_line(outcome.detail(), 160)
                    );
                }
            }
        }
        println!();
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_vec_pretty(&results).context("serialising the results")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    let summary = Summary::of(&results);
    let version = node_tests::data_onnx_version(&data)
        .map(|v| format!(" (onnx {v})"))
        .unwrap_or_default();
    println!(
        "ONNX backend node tests{version}: {} case(s) from {}, {jobs} job(s), {:.0?}\n",
        dirs.len(),
        data.display(),
        elapsed
    );
    print!("{}", summary.table());
    let listed = if args.list_lost {
        summary.lost.len()
    } else {
        summary.lost.len().min(20)
    };
    for (name, outcome) in summary.lost.iter().take(listed) {
        println!("  lost: {name}: {}", node_tests::one_line(outcome.detail(), 160));
    }
    if listed < summary.lost.len() {
        println!(
            "  … and {} more (--list-lost lists them all)",
            summary.lost.len() - listed
        );
    }
    if args.list_lost {
        for (name, outcome) in &summary.gained {
            println!(
                "  gained: {name} (native: {})",
                node_tests::one_line(outcome.detail(), 160)
            );
        }
    }
    if !summary.lost.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
