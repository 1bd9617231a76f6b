//! A managed node (`kiln serve --managed`): components uploaded and verified against their
//! digest, routing tables pushed all or nothing, conflicts refused, and a restart that
//! serves the persisted routing at once.

use crate::routing::{route, table};
use crate::*;
use kiln_node_api::{AdminReply, NodeState, RoutingTable};
use serde_json::json;

fn upload(server: &TestServer, digest: &str, bytes: &[u8]) -> Reply {
    admin(
        "PUT",
        &server.url(&format!("/admin/v1/components/{digest}")),
        bytes,
    )
}

fn push(server: &TestServer, routing: &RoutingTable) -> Reply {
    admin(
        "PUT",
        &server.url("/admin/v1/routing"),
        serde_json::to_string(routing).unwrap().as_bytes(),
    )
}

fn stored(server: &TestServer, digest: &str) -> u16 {
    admin(
        "HEAD",
        &server.url(&format!("/admin/v1/components/{digest}")),
        b"",
    )
    .status
}

fn state(server: &TestServer) -> NodeState {
    let r = admin("GET", &server.url("/admin/v1/state"), b"");
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("a NodeState")
}

fn served_version(server: &TestServer) -> String {
    let r = post_json(
        &server.url("/v1/models/iris/predict"),
        &json!({ "features": [6.3, 3.4, 5.6, 2.4] }),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.served_version.expect("the served version header")
}

fn reply(r: &Reply) -> AdminReply {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
}

/// The two iris components (same predictions, different digests).
fn iris_components() -> ((String, Vec<u8>), (String, Vec<u8>)) {
    let v1 = component("iris_logreg");
    let v2 = component_variant("iris_logreg", "2");
    ((kiln_types::digest(&v1), v1), (kiln_types::digest(&v2), v2))
}

#[test]
fn managed_node_stores_verified_components_and_switches_on_routing_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_managed(dir.path(), admin_config());
    let ((d1, v1), (d2, v2)) = iris_components();
    let empty = state(&server);
    assert_eq!((empty.mode.as_str(), empty.ready), ("managed", true));
    assert_eq!(empty.routing, RoutingTable::default());

    // Bytes that do not hash to their digest: 422 naming both, nothing stored.
    let mut corrupted = v1.clone();
    corrupted[100] ^= 0xff;
    let r = upload(&server, &d1, &corrupted);
    assert_eq!(r.status, 422);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&d1) && error.contains(&kiln_types::digest(&corrupted)),
        "{error}"
    );
    assert_eq!(stored(&server, &d1), 404);
    assert!(state(&server).digests.is_empty());
    let r = upload(&server, "not-a-digest", &v1);
    assert_eq!(r.status, 400);

    let r = upload(&server, &d1, &v1);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(reply(&r).changed);
    let r = upload(&server, &d1, &v1);
    assert_eq!(r.status, 200);
    assert!(!reply(&r).changed, "uploading twice changes nothing");
    assert_eq!(stored(&server, &d1), 200);

    let gen1 = table(
        1,
        vec![("iris", vec![route(1, &d1, 100, "Production", &[])], None)],
    );
    let r = push(&server, &gen1);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!((reply(&r).changed, reply(&r).generation), (true, 1));
    assert_eq!(served_version(&server), "1");
    let r = push(&server, &gen1);
    assert_eq!(r.status, 200);
    assert!(!reply(&r).changed, "the same table again changes nothing");

    // A corrupted upload of the next version leaves the served table alone.
    let mut corrupted = v2.clone();
    corrupted.truncate(v2.len() / 2);
    assert_eq!(upload(&server, &d2, &corrupted).status, 422);
    assert_eq!(served_version(&server), "1");

    assert_eq!(upload(&server, &d2, &v2).status, 201);
    let gen2 = table(
        2,
        vec![(
            "iris",
            vec![
                route(1, &d1, 0, "Archived", &["previous"]),
                route(2, &d2, 100, "Production", &[]),
            ],
            None,
        )],
    );
    let r = push(&server, &gen2);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for _ in 0..20 {
        assert_eq!(served_version(&server), "2", "the push switches what is served");
    }
    let r = post(
        &server.url("/v1/models/iris/predict"),
        br#"{"features": [6.3, 3.4, 5.6, 2.4]}"#,
        &[("x-kiln-version", "previous".to_string())],
    );
    assert_eq!(r.served_version.as_deref(), Some("1"), "weight 0 stays loaded");

    let now = state(&server);
    assert_eq!(now.routing, gen2);
    assert_eq!(now.digests, {
        let mut d = vec![d1.clone(), d2.clone()];
        d.sort();
        d
    });
    assert_eq!(now.loaded.len(), 2);
    assert_eq!(now.last_error, None);
    // A validation failure is a 422 and is reported as the last error.
    let mut invalid = gen2.clone();
    invalid.generation = 3;
    for v in &mut invalid.models.get_mut("iris").unwrap().versions {
        v.weight = 0;
    }
    let r = push(&server, &invalid);
    assert_eq!(r.status, 422);
    assert!(state(&server).last_error.is_some());
    assert_eq!(served_version(&server), "2");
}

#[test]
fn managed_node_refuses_missing_digests_and_stale_generations() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_managed(dir.path(), admin_config());
    let ((d1, v1), (d2, _)) = iris_components();
    assert_eq!(upload(&server, &d1, &v1).status, 201);
    let r = push(
        &server,
        &table(5, vec![("iris", vec![route(1, &d1, 100, "", &[])], None)]),
    );
    assert_eq!(r.status, 200);

    let missing = table(
        6,
        vec![(
            "iris",
            vec![route(1, &d1, 50, "", &[]), route(2, &d2, 50, "", &[])],
            None,
        )],
    );
    let r = push(&server, &missing);
    assert_eq!(r.status, 409);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains(&d2) && !error.contains(&d1), "{error}");
    assert!(state(&server).last_error.unwrap().contains(&d2));

    let stale = table(4, vec![("iris", vec![route(1, &d1, 7, "", &[])], None)]);
    let r = push(&server, &stale);
    assert_eq!(r.status, 409);
    assert!(r.json()["error"].as_str().unwrap().contains("older"));
    let now = state(&server);
    assert_eq!(now.routing.generation, 5, "the served table is unchanged");
    assert_eq!(served_version(&server), "1");

    let r = admin("PUT", &server.url("/admin/v1/routing"), b"{not json");
    assert_eq!(r.status, 400);
}

#[test]
fn managed_node_bounds_generations_and_accepts_a_lower_one_only_on_an_exact_reset() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_managed(dir.path(), admin_config());
    let ((d1, v1), _) = iris_components();
    assert_eq!(upload(&server, &d1, &v1).status, 201);
    let at = |generation: u64, weight: u32| {
        table(
            generation,
            vec![("iris", vec![route(1, &d1, weight, "", &[])], None)],
        )
    };
    assert_eq!(push(&server, &at(5, 100)).status, 200);

    // u64::MAX would lock the node out of every later push: refused.
    let r = push(&server, &at(u64::MAX, 100));
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"].as_str().unwrap().contains("above the highest"));
    assert_eq!(state(&server).routing.generation, 5);

    // The bound itself is accepted; then a lower generation is stale...
    let top = (1u64 << 53) - 1;
    assert_eq!(push(&server, &at(top, 90)).status, 200);
    assert_eq!(push(&server, &at(6, 100)).status, 409);
    // ...unless it resets exactly the generation served.
    let reset = |from: u64, routing: &RoutingTable| {
        admin(
            "PUT",
            &server.url(&format!("/admin/v1/routing?reset_from={from}")),
            serde_json::to_string(routing).unwrap().as_bytes(),
        )
    };
    let r = reset(top - 1, &at(6, 100));
    assert_eq!(r.status, 409, "a reset from another generation is refused");
    assert!(r.json()["error"].as_str().unwrap().contains("not"));
    let r = reset(top, &at(6, 100));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(state(&server).routing.generation, 6);
    assert_eq!(
        push(&server, &at(7, 100)).status,
        200,
        "later pushes count up again"
    );
}

#[test]
fn managed_node_refuses_a_whole_table_when_a_version_fails_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_managed(dir.path(), admin_config());
    let ((d1, v1), (d2, v2)) = iris_components();
    assert_eq!(upload(&server, &d1, &v1).status, 201);
    assert_eq!(upload(&server, &d2, &v2).status, 201);
    let good = table(1, vec![("iris", vec![route(1, &d1, 100, "", &[])], None)]);
    assert_eq!(push(&server, &good).status, 200);

    // Not a component, stored under its real digest: the upload is fine, loading is not.
    let junk = b"\0asm but not really a component".to_vec();
    let junk_digest = kiln_types::digest(&junk);
    assert_eq!(upload(&server, &junk_digest, &junk).status, 201);
    let bad = table(
        2,
        vec![
            ("iris", vec![route(2, &d2, 100, "", &[])], None),
            ("broken", vec![route(1, &junk_digest, 100, "", &[])], None),
        ],
    );
    let r = push(&server, &bad);
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("broken version 1") && error.contains("previous table keeps serving"),
        "{error}"
    );
    // All or nothing: the good half of the table (iris v2) did not go live either.
    for _ in 0..10 {
        assert_eq!(served_version(&server), "1");
    }
    let now = state(&server);
    assert_eq!(now.routing, good);
    assert!(now.last_error.unwrap().contains("broken"));
    // A later good push clears the error.
    let next = table(3, vec![("iris", vec![route(2, &d2, 100, "", &[])], None)]);
    assert_eq!(push(&server, &next).status, 200);
    assert_eq!(served_version(&server), "2");
    assert_eq!(state(&server).last_error, None);
}

#[test]
fn managed_node_restarted_on_its_store_serves_the_persisted_routing_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ((d1, v1), (d2, v2)) = iris_components();
    let pushed = table(
        7,
        vec![(
            "iris",
            vec![route(1, &d1, 0, "", &["old"]), route(2, &d2, 100, "", &[])],
            None,
        )],
    );
    let first_instance = {
        let server = TestServer::start_managed(dir.path(), admin_config());
        assert_eq!(upload(&server, &d1, &v1).status, 201);
        assert_eq!(upload(&server, &d2, &v2).status, 201);
        assert_eq!(push(&server, &pushed).status, 200);
        assert_eq!(served_version(&server), "2");
        state(&server).instance_id
    };
    // The server's first load is done when start returns: no push needed.
    let server = TestServer::start_managed(dir.path(), admin_config());
    assert_eq!(served_version(&server), "2");
    let now = state(&server);
    assert_eq!(now.routing, pushed);
    assert_ne!(now.instance_id, first_instance, "a restart is a new instance");
    let store = kiln_serve::NodeStore::open(dir.path()).unwrap();
    assert_eq!(store.routing().unwrap(), pushed);
    assert!(store.has(&d1) && store.has(&d2));
}
