//! A writer process is SIGKILLed at arbitrary moments; afterwards the registry must be
//! consistent: SQLite intact, audit chain intact and matching the acknowledged writes,
//! every version's blob present and correct, at most one Production version per model.
//!
//! The writer is this test binary re-executed with `CRASH_CHILD_ENV` set, running only
//! `crash_child_writer` (which does nothing in a normal test run).

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_registry::{NewVersion, Registry, Stage};

const CRASH_CHILD_ENV: &str = "KILN_REGISTRY_CRASH_CHILD";
const PROGRESS_ENV: &str = "KILN_REGISTRY_CRASH_PROGRESS";
const ROUND_ENV: &str = "KILN_REGISTRY_CRASH_ROUND";
const MODELS: [&str; 2] = ["crash-a", "crash-b"];

/// The writer: loops over every kind of mutation until killed, logging `start N` before and
/// `done N` after each (plain `write` calls, which survive SIGKILL), with actor
/// `child-ROUND-N` so the parent can match audit entries to operations.
#[test]
fn crash_child_writer() {
    let Some(home) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let progress_path = std::env::var_os(PROGRESS_ENV).expect("progress file");
    let round: usize = std::env::var(ROUND_ENV)
        .expect("round")
        .parse()
        .expect("round number");
    let reg = Registry::open(Path::new(&home)).expect("child opens registry");
    let mut progress = OpenOptions::new()
        .create(true)
        .append(true)
        .open(progress_path)
        .expect("progress file");
    let model = MODELS[round % MODELS.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0u64;
    while Instant::now() < deadline {
        writeln!(progress, "start {i}").expect("progress");
        let actor = format!("child-{round}-{i}");
        let latest = reg.list(Some(model)).expect("list").into_iter().last();
        match (i % 6, latest) {
            (0, _) | (_, None) => {
                // Large enough that the blob write itself takes measurable time.
                let mut component = format!("round {round} op {i}\n").into_bytes();
                component.resize(256 * 1024, (i % 251) as u8);
                let (_, created) = reg
                    .register(
                        NewVersion {
                            name: model.to_string(),
                            component,
                            lineage: serde_json::json!({"run_id": actor}),
                            ..NewVersion::default()
                        },
                        &actor,
                    )
                    .expect("register");
                assert!(created);
            }
            (1, Some(v)) => {
                reg.transition_stage(model, v.version, Stage::Staging, true, &actor)
                    .expect("stage");
            }
            (2, Some(v)) => {
                reg.transition_stage(model, v.version, Stage::Production, true, &actor)
                    .expect("promote");
            }
            (3, Some(v)) => {
                reg.set_alias(model, "champion", v.version, &actor)
                    .expect("alias");
            }
            (4, Some(v)) => {
                reg.set_tag(model, v.version, "op", &i.to_string(), &actor)
                    .expect("tag");
            }
            (_, Some(v)) => {
                let archived = reg
                    .list(Some(model))
                    .expect("list")
                    .into_iter()
                    .find(|v| v.stage == Stage::Archived && v.aliases.is_empty());
                match archived {
                    Some(old) => reg
                        .delete_version(model, old.version, false, &actor)
                        .expect("delete"),
                    None => {
                        reg.set_description(model, v.version, &format!("op {i}"), &actor)
                            .expect("describe");
                    }
                }
            }
        }
        writeln!(progress, "done {i}").expect("progress");
        i += 1;
    }
}

/// What one child acknowledged: completed operations, and whether one was in flight.
fn read_progress(path: &Path) -> (u64, bool) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let done = text.lines().filter(|l| l.starts_with("done ")).count() as u64;
    let started = text.lines().filter(|l| l.starts_with("start ")).count() as u64;
    (done, started > done)
}

fn kill_delay(round: usize) -> Duration {
    const BASE_MS: [u64; 5] = [20, 55, 95, 140, 200];
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()) % 17);
    Duration::from_millis(BASE_MS[round % BASE_MS.len()] + jitter)
}

fn run_child_and_kill(home: &Path, dir: &Path, round: usize) -> PathBuf {
    let progress = dir.join(format!("progress-{round}"));
    let stderr_path = dir.join(format!("stderr-{round}"));
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, home)
        .env(PROGRESS_ENV, &progress)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn child writer");
    // Start the clock once the child is writing, so every kill lands mid-workload.
    let started = Instant::now();
    while read_progress(&progress).0 == 0 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "child writer exited early ({status}): {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "child writer never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(kill_delay(round));
    if let Some(status) = child.try_wait().unwrap() {
        panic!(
            "child writer exited before the kill ({status}): {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
    }
    child.kill().expect("SIGKILL child");
    child.wait().unwrap();
    progress
}

fn check_consistent(reg: &Registry, rounds: &[(usize, PathBuf)]) {
    let conn = rusqlite::Connection::open(reg.home().join("registry.db")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");

    let report = reg.verify_audit().unwrap();
    assert!(report.ok(), "audit chain broken after crash: {report:?}");

    let log = reg.audit_log(None).unwrap();
    for (round, progress) in rounds {
        let (done, in_flight) = read_progress(progress);
        let prefix = format!("child-{round}-");
        let actors: Vec<&str> = log
            .iter()
            .filter_map(|e| e.actor.strip_prefix(prefix.as_str()))
            .collect();
        let count = actors.len() as u64;
        assert!(
            count == done || (in_flight && count == done + 1),
            "round {round}: {count} audit entries for {done} acknowledged operations (one in flight: {in_flight})"
        );
        let expected: Vec<String> = (0..count).map(|i| i.to_string()).collect();
        assert_eq!(
            actors, expected,
            "round {round}: audit entries out of order or missing"
        );
    }

    for v in reg.list(None).unwrap() {
        let bytes = reg
            .read_blob(&v.digest)
            .unwrap_or_else(|e| panic!("{}: blob unreadable after crash: {e}", v.reference()));
        assert_eq!(bytes.len() as u64, v.size);
    }
    for model in MODELS {
        let production = reg
            .list(Some(model))
            .unwrap()
            .iter()
            .filter(|v| v.stage == Stage::Production)
            .count();
        assert!(production <= 1, "{model} has {production} Production versions");
    }
}

#[test]
fn registry_stays_consistent_when_a_writer_is_killed_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("kiln");
    Registry::open(&home).unwrap();
    let mut rounds = Vec::new();
    for round in 0..5 {
        let progress = run_child_and_kill(&home, dir.path(), round);
        let (done, in_flight) = read_progress(&progress);
        eprintln!("round {round}: killed after {done} operations (one in flight: {in_flight})");
        rounds.push((round, progress));
        let reg = Registry::open(&home).unwrap();
        check_consistent(&reg, &rounds);
    }

    let reg = Registry::open(&home).unwrap();
    let total_ops: u64 = rounds.iter().map(|(_, p)| read_progress(p).0).sum();
    assert!(
        total_ops >= 5,
        "the children did too little work to test anything ({total_ops} ops)"
    );
    let before = reg.generation().unwrap();
    let (v, created) = reg
        .register(
            NewVersion {
                name: MODELS[0].to_string(),
                component: b"written after the crashes".to_vec(),
                ..NewVersion::default()
            },
            "parent",
        )
        .unwrap();
    assert!(created);
    reg.transition_stage(MODELS[0], v.version, Stage::Production, true, "parent")
        .unwrap();
    assert_eq!(reg.generation().unwrap(), before + 2);
    assert_eq!(
        reg.resolve(&format!("{}/Production", MODELS[0])).unwrap().version,
        v.version
    );
    assert!(reg.verify_audit().unwrap().ok());
}
