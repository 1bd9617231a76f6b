//! Two `Registry` handles on one home (two SQLite connections, as the CLI and a running
//! server have): changes are visible to the other, and concurrent writers lose nothing.

mod common;

use std::thread;

use common::{new_version, open, register};
use kiln_registry::{Registry, Stage};

#[test]
fn generation_changes_on_every_mutation_and_another_handle_sees_it() {
    let (_dir, writer) = open();
    let reader = Registry::open(writer.home()).unwrap();
    assert_eq!(reader.generation().unwrap(), 0);

    let mut seen = vec![reader.generation().unwrap()];
    let mut check = |what: &str| {
        let g = reader.generation().unwrap();
        assert!(
            g > *seen.last().unwrap(),
            "generation did not change after {what}"
        );
        seen.push(g);
    };
    register(&writer, "m", b"1");
    check("register");
    writer
        .transition_stage("m", 1, Stage::Production, true, "t")
        .unwrap();
    check("transition_stage");
    writer.set_alias("m", "champion", 1, "t").unwrap();
    check("set_alias");
    writer.set_tag("m", 1, "k", "v", "t").unwrap();
    check("set_tag");
    writer.delete_tag("m", 1, "k", "t").unwrap();
    check("delete_tag");
    writer.set_description("m", 1, "x", "t").unwrap();
    check("set_description");
    writer.delete_alias("m", "champion", "t").unwrap();
    check("delete_alias");
    writer.delete_version("m", 1, true, "t").unwrap();
    check("delete_version");
    assert!(
        reader.list(None).unwrap().is_empty(),
        "the other handle sees the deletion"
    );

    // Nothing changed, nothing to reload.
    let before = reader.generation().unwrap();
    register(&writer, "m", b"2");
    writer.register(new_version("m", b"2"), "t").unwrap();
    writer.set_tag("m", 2, "framework", "onnx", "t").unwrap();
    assert_eq!(reader.generation().unwrap(), before + 1);
}

#[test]
fn two_handles_writing_at_once_lose_no_writes() {
    let (_dir, first) = open();
    let home = first.home().to_path_buf();
    drop(first);
    const PER_WRITER: usize = 25;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let home = home.clone();
            thread::spawn(move || {
                let reg = Registry::open(&home).unwrap();
                for i in 0..PER_WRITER {
                    let content = format!("writer {w} component {i}");
                    let (v, created) = reg
                        .register(new_version("shared", content.as_bytes()), "t")
                        .unwrap();
                    assert!(created);
                    reg.set_tag("shared", v.version, "writer", &w.to_string(), "t")
                        .unwrap();
                    reg.transition_stage("shared", v.version, Stage::Production, true, "t")
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer thread panicked");
    }
    let reg = Registry::open(&home).unwrap();
    let versions = reg.list(Some("shared")).unwrap();
    let numbers: Vec<u64> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, (1..=2 * PER_WRITER as u64).collect::<Vec<_>>());
    assert!(versions.iter().all(|v| v.tags.contains_key("writer")));
    assert_eq!(
        versions.iter().filter(|v| v.stage == Stage::Production).count(),
        1
    );
    let report = reg.verify_audit().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.entries, 3 * 2 * PER_WRITER as u64);
}
