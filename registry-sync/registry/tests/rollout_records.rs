//! Rollout records against real SQLite files: a registry-triggered rollout's rollback puts
//! the registry back as it was (stages and aliases), success promotes, an operator's
//! intents are audited, one active rollout per model, and the fleet's routing follows.

mod common;

use common::{open, register};
use kiln_registry::RolloutPlan;
use kiln_registry::fleet::FleetModel;
use kiln_registry::rollout::{Phase, RolloutState};
use kiln_registry::{Registry, Stage};

fn stable(reg: &Registry, model: &str, version: u64) {
    reg.set_fleet_model(
        model,
        &FleetModel {
            stable: Some(version),
            ..FleetModel::default()
        },
        "tester",
        "test setup",
    )
    .unwrap();
}

#[test]
fn rolling_back_a_promotion_restores_stages_and_the_moved_alias() {
    let (_dir, reg) = open();
    register(&reg, "m", b"v1");
    register(&reg, "m", b"v2");
    reg.transition_stage("m", 1, Stage::Production, true, "tester")
        .unwrap();
    reg.set_alias("m", "champion", 1, "tester").unwrap();
    stable(&reg, "m", 1);
    reg.transition_stage("m", 2, Stage::Staging, true, "tester")
        .unwrap();
    // The promotion a person makes in the registry: v2 Production (v1 archived), alias moved.
    reg.transition_stage("m", 2, Stage::Production, true, "alice")
        .unwrap();
    reg.set_alias("m", "champion", 2, "alice").unwrap();
    assert_eq!(reg.get("m", 1).unwrap().stage, Stage::Archived);

    let r = reg
        .start_rollout("m", 2, RolloutPlan::default(), "registry", "kiln-sync")
        .unwrap();
    assert_eq!(r.from_version, Some(1));
    assert_eq!(r.restore.to_stage, Some(Stage::Staging));
    assert_eq!(r.restore.from_stage, Some(Stage::Production));
    assert_eq!(r.restore.aliases.get("champion"), Some(&Some(1)));
    // One active rollout per model.
    let again = reg.start_rollout("m", 2, RolloutPlan::default(), "cli", "bob");
    assert!(again.is_err());

    let audit_before = reg.audit_log(Some("m")).unwrap().len();
    let done = reg
        .finish_rollout(
            r.id,
            RolloutState::RolledBack,
            "rolled back: canary error rate 50%",
            "kiln-sync",
        )
        .unwrap();
    assert_eq!(done.state, RolloutState::RolledBack);
    assert_eq!(reg.get("m", 2).unwrap().stage, Stage::Staging);
    assert_eq!(reg.get("m", 1).unwrap().stage, Stage::Production);
    assert_eq!(reg.resolve("m@champion").unwrap().version, 1);
    let log = reg.audit_log(Some("m")).unwrap();
    assert!(log.len() >= audit_before + 4, "stage ×2, alias, rollback entries");
    assert_eq!(log.last().unwrap().action, "rollout.rollback");
    assert!(reg.verify_audit().unwrap().ok());
    // The fleet still serves v1.
    assert_eq!(reg.fleet_models().unwrap()["m"].stable, Some(1));
}

#[test]
fn a_cli_rollout_promotes_on_success_and_keeps_the_old_version_warm() {
    let (_dir, reg) = open();
    register(&reg, "m", b"v1");
    register(&reg, "m", b"v2");
    reg.transition_stage("m", 1, Stage::Production, true, "tester")
        .unwrap();
    stable(&reg, "m", 1);
    let plan = RolloutPlan {
        steps: vec![50, 100],
        interval_ms: 1000,
        ..RolloutPlan::default()
    };
    let r = reg.start_rollout("m", 2, plan, "cli", "bob").unwrap();
    let r = reg
        .set_rollout_progress(r.id, Phase::Analysing, None, "50%")
        .unwrap()
        .unwrap();
    assert_eq!(r.current_weight(), (50, false));
    assert!(r.step_started_at.is_some());
    let paused = reg
        .pause_rollout("m", true, "paused by an operator", "bob")
        .unwrap();
    assert!(paused.paused_at.is_some(), "the pause time is kept (max pause)");
    assert!(
        reg.set_rollout_progress(r.id, Phase::Smoke, None, "x")
            .unwrap()
            .is_none(),
        "a paused rollout is not moved by the controller"
    );
    let resumed = reg.pause_rollout("m", false, "resumed", "bob").unwrap();
    assert_eq!(resumed.phase, Phase::Warming, "resuming restarts the step");
    assert_eq!(resumed.paused_at, None);
    let r = reg.advance_rollout(r.id, "healthy", "kiln-sync").unwrap();
    assert_eq!(r.step, 1);
    let r = reg.advance_rollout(r.id, "healthy", "kiln-sync").unwrap();
    assert_eq!(r.state, RolloutState::Succeeded);
    assert_eq!(reg.get("m", 2).unwrap().stage, Stage::Production);
    assert_eq!(reg.get("m", 1).unwrap().stage, Stage::Archived);
    let fm = &reg.fleet_models().unwrap()["m"];
    assert_eq!((fm.stable, fm.previous), (Some(2), Some(1)));

    // Instant rollback to the warm previous version.
    let fm = reg.revert_to_previous("m", "bob").unwrap();
    assert_eq!((fm.stable, fm.previous), (Some(1), Some(2)));
    assert_eq!(reg.get("m", 1).unwrap().stage, Stage::Production);
    let actions: Vec<String> = reg
        .audit_log(Some("m"))
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in [
        "rollout.start",
        "rollout.pause",
        "rollout.resume",
        "rollout.step",
        "rollout.succeed",
        "fleet.set",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} missing from {actions:?}");
    }
}

#[test]
fn an_alias_moved_after_the_rollout_started_is_restored_by_its_rollback() {
    let (_dir, reg) = open();
    register(&reg, "m", b"v1");
    register(&reg, "m", b"v2");
    reg.transition_stage("m", 1, Stage::Production, true, "tester")
        .unwrap();
    reg.set_alias("m", "champion", 1, "tester").unwrap();
    stable(&reg, "m", 1);
    reg.transition_stage("m", 2, Stage::Production, true, "alice")
        .unwrap();
    // The sync service starts the rollout before alice moves the alias.
    let r = reg
        .start_rollout("m", 2, RolloutPlan::default(), "registry", "kiln-sync")
        .unwrap();
    assert!(r.restore.aliases.is_empty());
    reg.set_alias("m", "champion", 2, "alice").unwrap();
    reg.finish_rollout(r.id, RolloutState::RolledBack, "rolled back", "kiln-sync")
        .unwrap();
    assert_eq!(reg.resolve("m@champion").unwrap().version, 1);
    assert_eq!(reg.get("m", 1).unwrap().stage, Stage::Production);
}

#[test]
fn routing_generation_changes_only_with_the_content() {
    let (_dir, reg) = open();
    let g1 = reg.routing_generation_for("a").unwrap();
    assert_eq!(reg.routing_generation_for("a").unwrap(), g1);
    let g2 = reg.routing_generation_for("b").unwrap();
    assert_eq!(g2, g1 + 1);
    assert_eq!(reg.routing_generation().unwrap(), g2);
}
