//! Runs the real `shmq` binary on broadcast segments: `create --broadcast`,
//! `publish`, `subscribe`, the wrong-kind errors, and what `inspect`, `ls` and `rm`
//! show of them.

mod common;

use std::process::Child;

use common::*;
use shmq::broadcast::{Publisher, RecordRole, SlowSubscriber, Snapshot, Subscriber};
use shmq::Options;

/// `shmq subscribe --fail-on-lag`'s exit code.
const EX_LAGGED: i32 = 3;

/// Live subscriber records on segment `name` right now.
fn live_subscribers(name: &str) -> usize {
    Snapshot::read(name).map_or(0, |s| {
        s.records
            .iter()
            .filter(|r| r.alive && r.role == RecordRole::Subscriber)
            .count()
    })
}

/// Starts `shmq subscribe NAME extra…` and waits until it has subscribed (it then
/// receives everything published from now on).
fn subscribed(name: &Name, extra: &[&str]) -> Child {
    let before = live_subscribers(&name.0);
    let mut args = vec!["subscribe", name.0.as_str()];
    args.extend_from_slice(extra);
    let child = spawn_shmq(&args);
    wait_until("the subscriber registered", || {
        live_subscribers(&name.0) > before
    });
    child
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[test]
fn two_subscribers_each_receive_every_message_in_order() {
    const MESSAGES: usize = 200;
    let name = Name::new("bc-fanout");
    // Capacity 4, lossless: the publisher waits for both subscribers many times.
    let created = shmq(
        &[
            "create",
            &name.0,
            "--broadcast",
            "lossless",
            "--capacity",
            "4",
        ],
        b"",
    );
    assert_eq!(code(&created), 0, "{}", stderr(&created));
    assert!(
        stderr(&created).contains("(lossless)"),
        "{}",
        stderr(&created)
    );
    let count = (MESSAGES + 2).to_string();
    let first = subscribed(&name, &["--count", &count, "--timeout", "20s"]);
    let second = subscribed(&name, &["--count", &count, "--timeout", "20s"]);
    let lines: String = (0..MESSAGES).map(|i| format!("message {i}\n")).collect();
    let published = shmq(&["publish", &name.0], lines.as_bytes());
    assert_eq!(code(&published), 0, "{}", stderr(&published));
    let from_arguments = shmq(&["publish", &name.0, "alpha", "beta"], b"");
    assert_eq!(code(&from_arguments), 0, "{}", stderr(&from_arguments));
    let expected = format!("{lines}alpha\nbeta\n");
    for subscriber in [first, second] {
        let output = subscriber.wait_with_output().expect("wait for subscribe");
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        assert_eq!(stdout(&output), expected);
        assert_eq!(stderr(&output), "", "no lag on a lossless segment");
    }
}

#[test]
fn framed_messages_reach_a_subscriber_byte_for_byte() {
    let name = Name::new("bc-framed");
    let _publisher =
        Publisher::create(&name.0, &Options::new(8, 64), SlowSubscriber::Lossless).expect("create");
    let subscriber = subscribed(&name, &["--framed", "--count", "3", "--timeout", "10s"]);
    let payloads: [&[u8]; 3] = [b"a\nb", b"", &[0, 255, 10, 13]];
    let mut input = Vec::new();
    for p in payloads {
        input.extend_from_slice(&(p.len() as u32).to_le_bytes());
        input.extend_from_slice(p);
    }
    let published = shmq(&["publish", &name.0, "--framed"], &input);
    assert_eq!(code(&published), 0, "{}", stderr(&published));
    let output = subscriber.wait_with_output().expect("wait for subscribe");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(output.stdout, input);
}

/// Creates an overwrite segment of capacity 4, starts a subscriber with `extra`,
/// stops it, publishes `m0`…`m9` (it misses the 6 overwritten), and lets it go on.
fn lagging_subscriber(name: &Name, extra: &[&str]) -> std::process::Output {
    let created = shmq(
        &[
            "create",
            &name.0,
            "--broadcast",
            "overwrite",
            "--capacity",
            "4",
        ],
        b"",
    );
    assert_eq!(code(&created), 0, "{}", stderr(&created));
    let subscriber = subscribed(name, extra);
    signal(&subscriber, libc::SIGSTOP);
    let lines: String = (0..10).map(|i| format!("m{i}\n")).collect();
    let published = shmq(&["publish", &name.0], lines.as_bytes());
    signal(&subscriber, libc::SIGCONT);
    assert_eq!(
        code(&published),
        0,
        "overwrite never waits: {}",
        stderr(&published)
    );
    subscriber.wait_with_output().expect("wait for subscribe")
}

#[test]
fn overwrite_lag_is_reported_with_the_exact_count_and_the_rest_delivered() {
    let name = Name::new("bc-lag");
    let output = lagging_subscriber(&name, &["--count", "4", "--timeout", "10s"]);
    let err = stderr(&output);
    assert_eq!(code(&output), 0, "{err}");
    assert_eq!(stdout(&output), "m6\nm7\nm8\nm9\n");
    assert!(err.contains("missed 6 messages"), "{err}");
    assert!(err.contains("4 received, 6 missed"), "{err}");
    let snapshot = Snapshot::read(&name.0).expect("snapshot");
    assert_eq!((snapshot.tail, snapshot.lagged), (10, 6));
}

#[test]
fn fail_on_lag_ends_at_the_first_lag_with_its_own_exit_code() {
    let name = Name::new("bc-fail-on-lag");
    let output = lagging_subscriber(&name, &["--fail-on-lag", "--timeout", "10s"]);
    let err = stderr(&output);
    assert_eq!(code(&output), EX_LAGGED, "{err}");
    assert_eq!(stdout(&output), "");
    assert!(err.contains("missed 6 messages"), "{err}");
}

#[test]
fn lossless_publish_times_out_behind_a_stopped_subscriber() {
    let name = Name::new("bc-publish-timeout");
    let created = shmq(
        &[
            "create",
            &name.0,
            "--broadcast",
            "lossless",
            "--capacity",
            "4",
        ],
        b"",
    );
    assert_eq!(code(&created), 0, "{}", stderr(&created));
    let subscriber = subscribed(&name, &["--count", "6", "--timeout", "20s"]);
    signal(&subscriber, libc::SIGSTOP);
    let published = shmq(
        &[
            "publish",
            &name.0,
            "--timeout",
            "200ms",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
        ],
        b"",
    );
    signal(&subscriber, libc::SIGCONT);
    let err = stderr(&published);
    assert_eq!(code(&published), EX_TEMPFAIL, "{err}");
    assert!(err.contains("(4 messages published)"), "{err}");
    // Once it reads again there is room: the rest goes through.
    let rest = shmq(&["publish", &name.0, "5", "6"], b"");
    assert_eq!(code(&rest), 0, "{}", stderr(&rest));
    let output = subscriber.wait_with_output().expect("wait for subscribe");
    assert_eq!(stdout(&output), "1\n2\n3\n4\n5\n6\n", "{}", stderr(&output));
}

#[test]
fn each_kind_refuses_the_other_kinds_commands_naming_the_right_one() {
    let broadcast = Name::new("bc-kind-b");
    let queue = Name::new("bc-kind-q");
    let created = shmq(&["create", &broadcast.0, "--broadcast", "overwrite"], b"");
    assert_eq!(code(&created), 0, "{}", stderr(&created));
    assert_eq!(code(&shmq(&["create", &queue.0], b"")), 0);
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["send", &broadcast.0],
            "broadcast (overwrite)",
            "shmq publish",
        ),
        (
            &["recv", &broadcast.0, "--count", "1"],
            "broadcast (overwrite)",
            "shmq subscribe",
        ),
        (&["publish", &queue.0, "x"], "work queue", "shmq send"),
        (
            &["subscribe", &queue.0, "--count", "1"],
            "work queue",
            "shmq recv",
        ),
    ];
    for (args, kind, command) in cases {
        let output = shmq(args, b"");
        let err = stderr(&output);
        assert_eq!(code(&output), EX_USAGE, "{args:?}: {err}");
        assert!(
            err.contains(&format!("is a {kind} segment")),
            "{args:?}: {err}"
        );
        assert!(err.contains(command), "{args:?}: {err}");
    }
    let dead = shmq(&["dead-letters", &broadcast.0], b"");
    assert_eq!(code(&dead), EX_USAGE, "{}", stderr(&dead));
    assert_eq!(
        code(&shmq(&["create", "x", "--broadcast", "lossy"], b"")),
        EX_USAGE
    );
}

#[test]
fn inspect_shows_tail_cursors_lag_publishers_and_dead_records() {
    let name = Name::new("bc-inspect");
    let publisher = Publisher::create(&name.0, &Options::new(16, 64), SlowSubscriber::Lossless)
        .expect("create");
    let reader = Subscriber::open(&name.0).expect("subscribe");
    // A subscriber process killed with SIGKILL leaves a dead record.
    let mut killed = subscribed(&name, &[]);
    killed.kill().expect("kill the subscriber");
    killed.wait().expect("reap it");
    for message in [&b"1"[..], b"2", b"3"] {
        publisher.publish(message).expect("publish");
    }
    assert_eq!(reader.recv().expect("receive"), b"1");
    let text = shmq(&["inspect", &name.0], b"");
    let out = stdout(&text);
    assert_eq!(code(&text), 0, "{}", stderr(&text));
    assert!(out.contains("kind           broadcast/lossless"), "{out}");
    assert!(out.contains("tail           3 "), "{out}");
    assert!(out.contains("slowest        2 behind"), "{out}");
    assert!(
        out.contains("2 live, 1 dead (table of 64): 1 publishers, 1 subscribers alive"),
        "{out}"
    );
    let me = std::process::id().to_string();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.contains("publisher") || l.contains("subscriber"))
        .filter(|l| !l.starts_with("  index") && !l.starts_with("kind") && !l.starts_with("part"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    // index, pid, alive, role, claim, cursor, behind, operations
    assert!(
        rows.contains(&vec!["0", &me, "yes", "publisher", "2", "-", "-", "3"]),
        "{out}"
    );
    assert!(
        rows.contains(&vec!["1", &me, "yes", "subscriber", "-", "1", "2", "1"]),
        "{out}"
    );
    let dead = rows.iter().find(|r| r[2] == "DEAD").expect("a dead row");
    assert_eq!(
        (dead[3], dead[5], dead[6]),
        ("subscriber", "0", "3"),
        "{out}"
    );

    let json = shmq(&["inspect", &name.0, "--json"], b"");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(value["kind"], "broadcast");
    assert_eq!(value["slow_subscriber"], "lossless");
    assert_eq!(
        (value["tail"].clone(), value["slowest_behind"].clone()),
        (3.into(), 2.into())
    );
    assert_eq!(
        (value["live"].clone(), value["dead"].clone()),
        (2.into(), 1.into())
    );
    let records = value["records"].as_array().expect("records");
    assert!(records.iter().any(|r| r["role"] == "subscriber"
        && r["alive"] == true
        && r["cursor"] == 1
        && r["behind"] == 2));
    assert!(records
        .iter()
        .any(|r| r["role"] == "publisher" && r["claim"] == 2 && r["claim_outstanding"] == false));
    drop(reader);
}

#[test]
fn ls_lists_a_broadcast_segment_with_its_kind_and_rm_respects_live_subscribers() {
    let name = Name::new("bc-ls");
    let created = shmq(
        &[
            "create",
            &name.0,
            "--broadcast",
            "overwrite",
            "--capacity",
            "8",
        ],
        b"",
    );
    assert_eq!(code(&created), 0, "{}", stderr(&created));
    let subscriber = Subscriber::open(&name.0).expect("subscribe");
    let publisher = Publisher::open(&name.0).expect("publisher");
    for n in 0..3u8 {
        publisher.publish(&[n]).expect("publish");
    }
    let listed = shmq(&["ls"], b"");
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    let out = stdout(&listed);
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with(&name.0))
        .expect("a row")
        .split_whitespace()
        .collect();
    // name, kind, occupancy (unread by the slowest live subscriber), capacity,
    // live, dead, state…
    assert_eq!(
        &row[..6],
        [name.0.as_str(), "broadcast/overwrite", "3", "8", "2", "0"],
        "{out}"
    );
    assert!(
        out.contains("in use (1 publishers, 1 subscribers)"),
        "{out}"
    );
    let json = shmq(&["ls", "--json"], b"");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let entry = value
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["name"] == name.0.as_str())
        .expect("listed")
        .clone();
    assert_eq!(
        (entry["kind"].clone(), entry["tail"].clone()),
        ("broadcast".into(), 3.into())
    );

    let refused = shmq(&["rm", &name.0], b"");
    assert_eq!(code(&refused), EX_UNAVAILABLE, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("2 live participant"),
        "{}",
        stderr(&refused)
    );
    drop((subscriber, publisher));
    let removed = shmq(&["rm", &name.0], b"");
    assert_eq!(code(&removed), 0, "{}", stderr(&removed));
    assert!(matches!(
        Snapshot::read(&name.0),
        Err(shmq::Error::NotFound { .. })
    ));
}

#[test]
fn subscribe_ends_cleanly_on_ctrl_c_and_frees_its_record() {
    let name = Name::new("bc-sigint");
    let _publisher =
        Publisher::create(&name.0, &Options::new(4, 16), SlowSubscriber::Lossless).expect("create");
    let subscriber = subscribed(&name, &[]);
    signal(&subscriber, libc::SIGINT);
    let output = subscriber.wait_with_output().expect("wait for subscribe");
    assert_eq!(code(&output), 130, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("interrupted; 0 received"),
        "{}",
        stderr(&output)
    );
    let snapshot = Snapshot::read(&name.0).expect("snapshot");
    assert_eq!((snapshot.live(), snapshot.dead()), (1, 0), "{snapshot:?}");
}
