//! Runs the real `shmq bench --workload fanout`: short runs with 1 and 2 subscriber
//! processes, in both wait modes, checked for sane figures for every transport
//! this build measures (iceoryx2 too when built with `--features iceoryx2`).

mod common;

use std::process::{Command, Stdio};

use serde_json::Value;

use common::*;

/// Measured messages per round of each transport.
const MESSAGES: u64 = 150;
const ROUNDS: u64 = 2;

/// The transports this build of the CLI compares.
fn transports() -> Vec<&'static str> {
    if cfg!(feature = "iceoryx2") {
        vec!["shmq", "iceoryx2"]
    } else {
        vec!["shmq"]
    }
}

/// Runs a short fan-out bench with `wait`, checks it removed its segments, and
/// returns its JSON report.
fn fanout_json(wait: &str) -> Value {
    let messages = MESSAGES.to_string();
    let rounds = ROUNDS.to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args([
            "bench",
            "--workload",
            "fanout",
            "--subscribers",
            "1,2",
            "--messages",
            &messages,
            "--interval",
            "500us",
            "--warmup",
            "50ms",
            "--rounds",
            &rounds,
            "--wait",
            wait,
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmq bench");
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for shmq bench");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    // Its broadcast segments (shmq.bench.PID.fanout.N) are gone.
    let leaked: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("read /dev/shm")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("shmq.bench.{pid}.")))
        .collect();
    assert!(leaked.is_empty(), "left in /dev/shm: {leaked:?}");
    serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(&output)))
}

/// The latency row labelled `label`.
fn row<'a>(report: &'a Value, label: &str) -> &'a Value {
    report["latency"]
        .as_array()
        .expect("latency rows")
        .iter()
        .find(|r| r["label"] == label)
        .unwrap_or_else(|| panic!("no `{label}` row in {report:#}"))
}

/// Every transport at every count delivered each measured message to each
/// subscriber (lossless at this pace), with p50 ≤ p99 and one sample per receipt.
fn assert_sane(report: &Value) {
    assert_eq!(report["workload"], "fanout");
    for transport in transports() {
        for subscribers in [1u64, 2] {
            let expected = MESSAGES * ROUNDS * subscribers;
            let delivery = report["deliveries"]
                .as_array()
                .expect("deliveries")
                .iter()
                .find(|d| d["transport"] == format!("{transport} ×{subscribers}"))
                .unwrap_or_else(|| panic!("no {transport} ×{subscribers} delivery in {report:#}"));
            assert_eq!(delivery["expected"], expected, "{delivery}");
            assert_eq!(delivery["received"], expected, "{delivery}");
            assert_eq!(delivery["lagged"], 0, "{delivery}");

            let each = row(report, &format!("{transport} ×{subscribers} each receipt"));
            assert_eq!(each["samples"], expected, "{each}");
            let last = row(report, &format!("{transport} ×{subscribers} last receipt"));
            assert_eq!(last["samples"], MESSAGES * ROUNDS, "{last}");
            for r in [each, last] {
                let p50 = r["p50_ns"].as_f64().expect("p50");
                let p99 = r["p99_ns"].as_f64().expect("p99");
                assert!(p50 > 0.0 && p50 <= p99, "{r}");
                // Publish to receipt on one host: well under a second.
                assert!(p99 < 1e9, "{r}");
            }
            // The last receipt of a message is no earlier than a typical one.
            assert!(
                last["p50_ns"].as_f64() >= each["p50_ns"].as_f64(),
                "{last} {each}"
            );
        }
    }
    let ratios = report["round_ratios"].as_array().expect("round ratios");
    if transports().len() == 2 {
        let p50 = ratios
            .iter()
            .find(|r| r["label"] == "×2 p50 each receipt: shmq ÷ iceoryx2")
            .unwrap_or_else(|| panic!("no ratio in {report:#}"));
        assert_eq!(
            p50["per_round"].as_array().map(Vec::len),
            Some(ROUNDS as usize)
        );
    } else {
        assert!(ratios.is_empty(), "{ratios:?}");
    }
}

#[test]
fn fanout_blocking_subscribers_receive_every_message_with_sane_latencies() {
    assert_sane(&fanout_json("block"));
}

#[test]
fn fanout_yielding_subscribers_receive_every_message_with_sane_latencies() {
    assert_sane(&fanout_json("yield"));
}

#[test]
fn fanout_refuses_spinning_and_other_sizes() {
    for extra in [&["--wait", "spin"][..], &["--size", "128"][..]] {
        let mut args = vec!["bench", "--workload", "fanout"];
        args.extend_from_slice(extra);
        let output = shmq(&args, b"");
        assert_eq!(code(&output), EX_USAGE, "{extra:?}: {}", stderr(&output));
    }
    let output = shmq(&["bench", "--subscribers", "2"], b"");
    assert_eq!(code(&output), EX_USAGE, "{}", stderr(&output));
}
