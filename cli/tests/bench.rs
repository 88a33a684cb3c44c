//! Runs the real `shmq bench`: short runs of each workload, the references, and
//! the options' checks.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn short_bench_prints_the_floor_and_percentiles_and_cleans_up() {
    let child = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args(["bench", "--duration", "1s", "--warmup", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmq bench");
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for shmq bench");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let out = stdout(&output);
    for needle in [
        "cache-line floor",
        "shmq round trip",
        "shmq one-way",
        "p50",
        "p99.9",
        "× floor p50",
    ] {
        assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
    }
    // Its segments (shmq.bench.PID.N) and control files (shmq-bench-PID-N.ctl) are gone.
    let leaked: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("read /dev/shm")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&format!("shmq.bench.{pid}."))
                || n.starts_with(&format!("shmq-bench-{pid}-"))
        })
        .collect();
    assert!(leaked.is_empty(), "left in /dev/shm: {leaked:?}");
}

/// The sample count (last column) of the latency table row starting with `label`.
fn samples_in_row(out: &str, label: &str) -> u64 {
    let row = out
        .lines()
        .find(|l| l.starts_with(label) && (l.contains(" ns") || l.contains(" µs")))
        .unwrap_or_else(|| panic!("no `{label}` row in:\n{out}"));
    row.split_whitespace()
        .last()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no sample count in `{row}`"))
}

#[test]
fn anatomy_bench_measures_the_two_line_floor_and_the_bare_ring() {
    let output = shmq(
        &[
            "bench",
            "--anatomy",
            "--duration",
            "400ms",
            "--warmup",
            "50ms",
            "--rounds",
            "2",
            "--capacity",
            "64",
        ],
        b"",
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let out = stdout(&output);
    // Each reference gets a table row with samples and a per-round ratio line.
    for label in ["two-line floor", "bare slot ring"] {
        let samples = samples_in_row(&out, label);
        assert!(samples > 100, "`{label}` took {samples} samples:\n{out}");
    }
    assert!(
        out.contains("shmq round trip ÷ bare slot ring"),
        "no shmq ÷ bare ring ratio in:\n{out}"
    );
    // Per-round tails: a line per series, one value per round.
    let tails = out
        .split("p99.9 within each round")
        .nth(1)
        .unwrap_or_else(|| panic!("no per-round p99.9 section in:\n{out}"));
    for label in ["cache-line floor", "bare slot ring", "shmq round trip"] {
        let line = tails
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no per-round p99.9 for `{label}` in:\n{out}"));
        let rounds = line.split("rounds:").nth(1).unwrap_or("");
        assert_eq!(
            rounds.matches(" ns").count()
                + rounds.matches(" µs").count()
                + rounds.matches(" ms").count(),
            2,
            "`{line}`"
        );
    }
    // The bare ring refuses a geometry it cannot run, as a usage error.
    let one_slot = shmq(&["bench", "--anatomy", "--capacity", "1"], b"");
    assert_eq!(code(&one_slot), EX_USAGE, "{}", stderr(&one_slot));
}

#[test]
fn hybrid_baselines_spin_then_sleep_and_still_deliver() {
    // Under --wait hybrid the baselines spin and yield for the same budgets as the
    // queue, then sleep in poll(2); every transport must still complete round trips.
    let output = shmq(
        &[
            "bench",
            "--compare",
            "--wait",
            "hybrid",
            "--duration",
            "300ms",
            "--warmup",
            "50ms",
            "--rounds",
            "1",
        ],
        b"",
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let out = stdout(&output);
    for label in [
        "shmq round trip",
        "unix socket round trip",
        "pipe round trip",
        "eventfd (8 B) round trip",
    ] {
        let samples = samples_in_row(&out, label);
        assert!(samples > 100, "`{label}` took {samples} samples:\n{out}");
    }
}

#[test]
fn throughput_bench_runs_in_batches_and_refuses_bad_batch_sizes() {
    let output = shmq(
        &[
            "bench",
            "--workload",
            "throughput",
            "--count",
            "20000",
            "--batch",
            "64",
            "--json",
        ],
        b"",
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let shmq_row = json["throughput"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["transport"] == "shmq"))
        .expect("an shmq throughput row");
    assert!(
        shmq_row["messages"].as_u64().unwrap_or(0) > 10_000,
        "{shmq_row}"
    );
    for bad in [
        &["bench", "--workload", "throughput", "--batch", "0"][..],
        &["bench", "--workload", "throughput", "--batch", "257"],
        &["bench", "--batch", "8"],
        &[
            "bench",
            "--workload",
            "throughput",
            "--rate",
            "10k/s",
            "--batch",
            "8",
        ],
    ] {
        assert_eq!(code(&shmq(bad, b"")), EX_USAGE, "{bad:?}");
    }
}

/// The fill column of a throughput row of `bench --json` output.
fn mean_fill(json: &serde_json::Value, transport: &str) -> f64 {
    let row = json["throughput"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["transport"] == transport))
        .unwrap_or_else(|| panic!("a {transport} throughput row in {json}"));
    row["mean_fill"]
        .as_f64()
        .unwrap_or_else(|| panic!("a sampled fill in {row}"))
}

#[test]
fn throughput_regimes_run_and_report_each_queue_fill() {
    for regime in ["consumer-faster", "producer-faster"] {
        let output = shmq(
            &[
                "bench",
                "--workload",
                "throughput",
                "--count",
                "20000",
                "--regime",
                regime,
                "--json",
            ],
            b"",
        );
        assert_eq!(code(&output), 0, "{regime}: {}", stderr(&output));
        let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
        for transport in ["shmq", "crossbeam (2 threads)"] {
            let fill = mean_fill(&json, transport);
            assert!((0.0..=1.0).contains(&fill), "{regime} {transport}: {fill}");
        }
    }
    for bad in [
        &["bench", "--regime", "producer-faster"][..],
        &[
            "bench",
            "--workload",
            "throughput",
            "--rate",
            "10k/s",
            "--regime",
            "consumer-faster",
        ],
        &["bench", "--workload", "throughput", "--regime", "sideways"],
    ] {
        assert_eq!(code(&shmq(bad, b"")), EX_USAGE, "{bad:?}");
    }
}
