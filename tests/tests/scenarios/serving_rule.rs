//! One rule for which version of a model serves (`kiln-fleet`'s `serving_version`):
//! Production, else the version the `champion` alias names, else none. With `echo` at
//! v1 (None), v2 (`champion`) and v3 (Staging), and a model `staged` with only a Staging
//! version, every host agrees: `kiln serve` on the registry, a fleet node deployed by
//! `kiln sync run`, the Spin app `kiln export spin` writes (hosted by `kiln spin up`) and
//! the Cloudflare Worker's routes from `kiln export cloudflare` all send unnamed requests
//! for `echo` to v2, and none of them gives `staged` unnamed traffic. (Before the rule was
//! one function, `kiln serve` sent them to v3, the highest served version.)

use kiln_tests::fleet::{Fleet, echo_body, echo_component};
use kiln_tests::spin_app::{self, SpinServer};
use serde_json::Value;
use std::time::Duration;

/// The version that answered an unnamed infer request, or the status and error.
fn answered(status: u16, version: Option<&str>, body: &str) -> Result<u64, String> {
    match (status, version.and_then(|v| v.parse().ok())) {
        (200, Some(v)) => Ok(v),
        _ => Err(format!("{status}: {body}")),
    }
}

fn spin_infer(spin: &SpinServer, model: &str) -> Result<u64, String> {
    let a = spin.send(
        "POST",
        &format!("/v2/models/{model}/infer"),
        Some(&echo_body(1.0)),
        &[],
    );
    answered(a.status, a.header("x-kiln-model-version"), &a.body)
}

#[test]
fn kiln_serve_the_fleet_and_the_edges_serve_the_champion_when_nothing_is_in_production() {
    let fleet = Fleet::start(1, &[]);
    let v1 = fleet.register("echo", "echo-v1.wasm", &echo_component("v1"));
    let v2 = fleet.register("echo", "echo-v2.wasm", &echo_component("v2"));
    let v3 = fleet.register("echo", "echo-v3.wasm", &echo_component("v3"));
    assert_eq!((v1, v2, v3), (1, 2, 3));
    fleet.kiln(&["models", "alias", "echo", "champion", "2"]);
    fleet.kiln(&["models", "promote", "echo", "3", "Staging"]);
    let s1 = fleet.register("staged", "staged-v1.wasm", &echo_component("s1"));
    fleet.kiln(&["models", "promote", "staged", &s1.to_string(), "Staging"]);

    // The fleet: the sync service deploys the champion, and nothing of `staged`.
    fleet.wait_all_serving("echo", &echo_body(1.0), v2, Duration::from_secs(60));
    let node = fleet.node(0);
    let r = node.post("/v2/models/staged/infer", &echo_body(1.0));
    assert_eq!(
        r.status, 404,
        "the fleet does not deploy a model with no serving version"
    );

    // `kiln serve` on the same registry. Staging versions are restricted: naming one needs
    // a viewer token.
    let serve = fleet.registry.serve("serve", &[]);
    let viewer = format!(
        "Bearer {}",
        fleet
            .kiln(&["tokens", "create", "--name", "rule-viewer", "--role", "viewer"])
            .trim()
    );
    let infer = |model: &str, headers: &[(&str, &str)]| {
        let (r, hs) = serve.post_with(&format!("/v2/models/{model}/infer"), &echo_body(1.0), headers);
        let version = hs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-kiln-model-version"))
            .map(|(_, v)| v.as_str());
        answered(r.status, version, &r.body)
    };
    for _ in 0..10 {
        assert_eq!(infer("echo", &[]), Ok(v2), "kiln serve follows the champion");
    }
    assert_eq!(
        infer(
            "echo",
            &[("x-kiln-version", "Staging"), ("authorization", &viewer)]
        ),
        Ok(v3),
        "Staging is loaded, by name"
    );
    let anonymous = infer("echo", &[("x-kiln-version", "Staging")]).expect_err("Staging is restricted");
    assert!(anonymous.starts_with("403"), "{anonymous}");
    let refused = infer("staged", &[]).expect_err("no unnamed traffic for a Staging-only model");
    assert!(
        refused.starts_with("404")
            && refused.contains("no version that takes requests without a version selector"),
        "{refused}"
    );
    assert_eq!(
        infer(
            "staged",
            &[("x-kiln-version", "Staging"), ("authorization", &viewer)]
        ),
        Ok(s1)
    );

    // The Spin app `kiln export spin` writes, hosted by `kiln spin up`.
    let out = fleet.registry.path().join("spin-app");
    spin_app::export(&fleet.registry, &out);
    let spin = spin_app::spin_up(&fleet.registry, &out.join("spin.toml"), &[]);
    for _ in 0..10 {
        assert_eq!(
            spin_infer(&spin, "echo"),
            Ok(v2),
            "the Spin app follows the champion"
        );
    }
    let missing = spin_infer(&spin, "staged").expect_err("staged is not exported");
    assert!(missing.starts_with("404"), "{missing}");
    drop(spin);

    // The Worker's routes, as `kiln export cloudflare` writes them into wrangler.toml.
    let worker = fleet.registry.path().join("worker");
    std::fs::create_dir_all(&worker).expect("creating the Worker directory");
    std::fs::write(worker.join("wrangler.toml"), "name = \"kiln-edge\"\n").expect("writing wrangler.toml");
    fleet.kiln(&[
        "export",
        "cloudflare",
        "--out",
        worker.to_str().unwrap_or_default(),
    ]);
    let wrangler: toml::Value = toml::from_str(
        &std::fs::read_to_string(worker.join("wrangler.toml")).expect("reading wrangler.toml"),
    )
    .expect("wrangler.toml is TOML");
    let routes: Value = serde_json::from_str(wrangler["vars"]["KILN_ROUTES"].as_str().expect("KILN_ROUTES"))
        .expect("KILN_ROUTES is a routing table");
    let weights: Vec<(u64, u64)> = routes["models"]["echo"]["versions"]
        .as_array()
        .expect("echo is exported")
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap_or(0),
                v["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(weights, [(v2, 100)], "{routes}");
    assert!(routes["models"].get("staged").is_none(), "{routes}");
}
