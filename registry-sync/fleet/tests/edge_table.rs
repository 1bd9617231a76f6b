//! What edges outside the fleet (Spin apps, Workers) are told to serve: the registry's
//! target before any sync ran, the fleet's weights once it did, and an active rollout's
//! current split, the same as the nodes get.

use std::collections::BTreeMap;

use kiln_fleet::edge_table;
use kiln_registry::Stage;
use kiln_registry::fleet::FleetModel;
use kiln_registry::testing::{open, register};

#[test]
fn edges_follow_production_then_the_fleet_weights() {
    let (_dir, reg) = open();
    for v in 1..=3u8 {
        register(&reg, "forest", &[b'f', v]);
    }
    register(&reg, "mlp", b"m1");
    assert!(
        edge_table(&reg).unwrap().models.is_empty(),
        "nothing in Production yet"
    );

    reg.transition_stage("forest", 2, Stage::Production, true, "t")
        .unwrap();
    reg.set_alias("mlp", "champion", 1, "t").unwrap();
    let table = edge_table(&reg).unwrap();
    let forest = &table.models["forest"];
    assert_eq!(forest.versions.len(), 1);
    assert_eq!((forest.versions[0].version, forest.versions[0].weight), (2, 100));
    assert_eq!(forest.versions[0].stage, "Production");
    assert_eq!(forest.versions[0].digest, reg.get("forest", 2).unwrap().digest);
    assert_eq!(
        table.models["mlp"].versions[0].aliases,
        vec!["champion".to_string()]
    );

    // Once the fleet serves static weights, edges get the same split.
    let fm = FleetModel {
        weights: Some(BTreeMap::from([(2, 90), (3, 10)])),
        ..Default::default()
    };
    reg.set_fleet_model("forest", &fm, "t", "canary by hand").unwrap();
    let forest = &edge_table(&reg).unwrap().models["forest"];
    let split: Vec<(u64, u32)> = forest.versions.iter().map(|v| (v.version, v.weight)).collect();
    assert_eq!(split, vec![(3, 10), (2, 90)], "newest first, as nodes get it");
}
