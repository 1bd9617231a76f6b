//! A model's serving policy in kiln.toml reaches a `kiln serve` on the same local
//! registry, live: `kiln sync apply` stores it, the server's next poll picks it up, and
//! the model's bulkhead takes its limits (before, only a fleet node got it, through its
//! routing table, and a local server used its flags alone).

use kiln_tests::kiln_process::{KilnHome, Server};
use std::time::{Duration, Instant};

/// The `state` figure of the `echo` bulkhead in `/metrics`, if it has one yet.
fn bulkhead(server: &Server, state: &str) -> Option<f64> {
    let text = server.get("/metrics").body;
    text.lines()
        .filter(|l| l.starts_with("kiln_bulkhead_calls{"))
        .filter(|l| l.contains("model=\"echo\"") && l.contains(&format!("state=\"{state}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn kiln_sync_apply_sets_the_bulkhead_of_a_local_kiln_serve() {
    let home = KilnHome::new();
    assert_eq!(home.register_example("echo4", "echo"), 1);
    home.run(&["models", "promote", "echo", "1", "production"]);
    let server = home.serve("serve", &["--cache", "off", "--max-concurrent-calls", "5:40"]);
    let request = String::from_utf8(kiln_tests::request_json("echo4")).expect("UTF-8");
    let infer = |server: &Server| server.post("/v2/models/echo/infer", &request);
    assert_eq!(infer(&server).status, 200);
    assert_eq!(
        bulkhead(&server, "max_concurrent"),
        Some(5.0),
        "the flag, with no policy"
    );
    assert_eq!(bulkhead(&server, "max_queue"), Some(40.0));

    let gitops = home.path().join("kiln.toml");
    std::fs::write(
        &gitops,
        "[models.echo]\nversion = 1\nserving = { max_concurrency = 3, max_queue = 0 }\n",
    )
    .expect("writing kiln.toml");
    home.run(&["sync", "apply", gitops.to_str().unwrap_or_default()]);
    let limit = Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(infer(&server).status, 200);
        if bulkhead(&server, "max_concurrent") == Some(3.0) {
            break;
        }
        assert!(
            Instant::now() < limit,
            "the policy never reached the server:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        bulkhead(&server, "max_queue"),
        Some(0.0),
        "the file's queue, not the flag's"
    );
}
