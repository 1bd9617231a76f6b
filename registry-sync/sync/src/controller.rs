//! The control loop: each tick it reconciles the node workers with the node list, starts
//! rollouts when a model's serving version moves in the registry (the rule of
//! [`kiln_fleet::serving`]: Production, else `champion`), publishes the fleet's desired
//! state, and drives each active rollout through warm-up, smoke test, weight shift and
//! analysis, rolling back by itself when analysis says so.
//!
//! Rollouts fail safe: a node that serves the model and fails during the rollout holds it
//! (its last counters still count), and rolls it back once it has been failing longer
//! than the plan's `max_node_downtime_ms`; a rollout paused longer than the plan's
//! `max_pause_ms` is rolled back. Pending node resets (`kiln sync reset-node`) are handed
//! to the node workers each tick.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kiln_registry::Strategy;
use kiln_registry::duration::format_ms;
use kiln_registry::fleet::{FleetModel, NodeRecord};
use kiln_registry::rollout::{
    FleetCounters, NodeCounters, Phase, Rollout, RolloutState, Verdict, judge, step_figures,
};

use crate::alert::alert;
use crate::drift;
use crate::node_client::NodeClient;
use crate::smoke;
use crate::state::Shared;
use crate::worker;

/// What the control loop carries between ticks.
#[derive(Default)]
struct ControlState {
    registry_generation: Option<u64>,
    last_trigger_check: Option<Instant>,
    last_message: HashMap<u64, Instant>,
    /// What the last desired state was computed from (registry generation, nodes, rollout
    /// progress): the same inputs give the same state, so it is not recomputed.
    desired_inputs: Option<String>,
}

/// The control loop.
pub struct Controller {
    shared: Arc<Shared>,
    state: ControlState,
    failing: bool,
}

impl Controller {
    /// A controller over the service's state; nothing runs until [`Controller::tick`].
    pub fn new(shared: Arc<Shared>) -> Controller {
        Controller {
            shared,
            state: ControlState::default(),
            failing: false,
        }
    }

    /// One tick; a failure is logged once per outage and retried by the next tick.
    pub fn tick(&mut self) {
        match control_tick(&self.shared, &mut self.state) {
            Ok(()) => {
                if self.failing {
                    tracing::info!("control loop recovered");
                }
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %format!("{e:#}"), "control tick failed; retrying");
                }
                self.failing = true;
            }
        }
    }

    /// Ticks every `tick` (or when a node's status changes) until the service stops.
    pub fn run(mut self) {
        while !self.shared.stopping() {
            let started = Instant::now();
            self.tick();
            let spent = started.elapsed();
            self.shared
                .control_wake
                .wait(self.shared.config.tick.saturating_sub(spent));
        }
    }
}

/// A fingerprint of everything the desired state is computed from: the registry's
/// generation (every audited change, token creations and revocations included), the live
/// reader tokens (a token's expiry is audited nowhere), the nodes and the rollouts.
fn desired_inputs(generation: u64, readers: u64, nodes: &[NodeRecord], rollouts: &[Rollout]) -> String {
    let mut key = format!("{generation}/{readers}");
    for n in nodes {
        key.push_str(&format!("|{}@{}", n.name, n.url));
    }
    for r in rollouts {
        key.push_str(&format!("|{}:{}:{}:{}", r.id, r.state, r.step, r.phase.as_str()));
    }
    key
}

/// Recomputes and publishes the desired state when its inputs changed.
fn publish_desired(
    shared: &Shared,
    state: &mut ControlState,
    nodes: &[NodeRecord],
    rollouts: &[Rollout],
) -> anyhow::Result<()> {
    let key = desired_inputs(
        shared.registry.generation()?,
        shared.registry.live_reader_count()?,
        nodes,
        rollouts,
    );
    if state.desired_inputs.as_deref() == Some(key.as_str()) {
        return Ok(());
    }
    let desired = kiln_fleet::compute(&shared.registry, nodes, rollouts)?;
    shared.set_desired(desired);
    state.desired_inputs = Some(key);
    Ok(())
}

fn control_tick(shared: &Arc<Shared>, state: &mut ControlState) -> anyhow::Result<()> {
    let registry = &shared.registry;
    let nodes = registry.nodes().context("reading the node list")?;
    worker::reconcile(shared, &nodes);
    node_resets(shared).context("reading the node reset requests")?;
    let generation = registry.generation()?;
    let due = state
        .last_trigger_check
        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
    if state.registry_generation != Some(generation) || due {
        registry_triggers(shared)?;
        state.registry_generation = Some(registry.generation()?);
        state.last_trigger_check = Some(Instant::now());
    }
    let mut rollouts = registry.active_rollouts()?;
    publish_desired(shared, state, &nodes, &rollouts)?;
    // A rollout may move several phases at once (a smoke test right after the warm-up):
    // drive again while anything moved, publishing each new weight at once.
    for _ in 0..4 {
        drive_rollouts(shared, state, &rollouts)?;
        let after = registry.active_rollouts()?;
        publish_desired(shared, state, &nodes, &after)?;
        let moved = after.len() != rollouts.len()
            || after
                .iter()
                .zip(&rollouts)
                .any(|(a, b)| a.id != b.id || a.phase != b.phase || a.step != b.step || a.state != b.state);
        rollouts = after;
        if !moved {
            break;
        }
    }
    Ok(())
}

/// Starts (or supersedes) rollouts for models whose registry target moved.
fn registry_triggers(shared: &Arc<Shared>) -> anyhow::Result<()> {
    let registry = &shared.registry;
    let actor = &shared.config.actor;
    let fleet = registry.fleet_models()?;
    let mut active: BTreeMap<String, Rollout> = registry
        .active_rollouts()?
        .into_iter()
        .map(|r| (r.model.clone(), r))
        .collect();
    for (model, target) in kiln_fleet::targets(registry)? {
        let fm = fleet.get(&model).cloned().unwrap_or_default();
        if fm.weights.is_some() {
            // Static weights (GitOps) own this model's traffic.
            continue;
        }
        if let Some(active) = active.remove(&model) {
            if active.to_version == target
                || (active.trigger != "registry" && Some(target) == active.from_version)
            {
                continue;
            }
            let why = if Some(target) == active.from_version {
                format!("the registry moved {model} back to version {target}")
            } else {
                format!("superseded: the registry now names version {target}")
            };
            registry.finish_rollout(active.id, RolloutState::Aborted, &why, actor)?;
        } else if fm.stable == Some(target) {
            continue;
        }
        match fm.stable {
            None => {
                // A first deployment has no traffic to protect: serve it directly.
                let first = FleetModel {
                    stable: Some(target),
                    ..fm
                };
                registry.set_fleet_model(&model, &first, actor, "first deployment")?;
                tracing::info!(model = %model, version = target, "first deployment");
            }
            Some(_) => {
                let plan = registry
                    .rollout_policy(&model)?
                    .unwrap_or_else(|| shared.config.default_policy.clone());
                registry.start_rollout(&model, target, plan, "registry", actor)?;
            }
        }
    }
    Ok(())
}

/// Hands the registry's pending node resets to the workers, and completes at once those
/// whose node needs none (it already serves this service's generation).
fn node_resets(shared: &Shared) -> anyhow::Result<()> {
    let pending = shared.registry.node_resets()?;
    let generation = shared.desired_generation();
    shared.set_resets(pending.keys().cloned().collect());
    for node in pending.keys() {
        let rt = shared.node_runtime(node);
        if generation > 0 && rt.status == "converged" && rt.applied_generation == generation {
            shared.reset_done(node, generation, generation);
        }
    }
    Ok(())
}

/// A node that serves a rollout's model and has been failing since after the rollout began.
struct NodeDown {
    node: String,
    since: String,
    down_for: Duration,
    error: String,
}

fn parse_time(rfc3339: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()
}

/// The nodes that serve the rollout's model and failed during it (a node already failing
/// when the rollout began is not the new version's doing, and is left out as before).
fn nodes_down(shared: &Shared, r: &Rollout) -> Vec<NodeDown> {
    let Some(started) = parse_time(&r.created_at) else {
        return Vec::new();
    };
    let serving = shared.serving_nodes(&r.model);
    shared.with_runtimes(|runtimes| {
        serving
            .iter()
            .filter_map(|n| {
                let rt = runtimes.get(n)?;
                let since = rt.failing_since.clone().filter(|_| rt.status == "failing")?;
                if parse_time(&since)? < started {
                    return None;
                }
                Some(NodeDown {
                    node: n.clone(),
                    down_for: elapsed_since(&since).unwrap_or_default(),
                    since,
                    error: rt.last_error.clone().unwrap_or_default(),
                })
            })
            .collect()
    })
}

/// Rolls `r` back when one of its nodes has been failing longer than the plan allows.
/// Returns whether it did.
fn roll_back_if_a_node_stays_down(shared: &Shared, r: &Rollout, down: &[NodeDown]) -> anyhow::Result<bool> {
    let max = Duration::from_millis(r.plan.max_node_downtime_ms);
    let Some(worst) = down
        .iter()
        .max_by_key(|d| d.down_for)
        .filter(|d| d.down_for >= max)
    else {
        return Ok(false);
    };
    roll_back(
        shared,
        r,
        &format!(
            "node {} failed during the rollout and has been failing since {} (longer than the max node downtime, {}): {}",
            worst.node,
            worst.since,
            format_ms(r.plan.max_node_downtime_ms),
            worst.error
        ),
    )?;
    Ok(true)
}

/// Holds a rollout while some of its nodes are down (within the max node downtime).
fn hold(shared: &Shared, state: &mut ControlState, r: &Rollout, down: &[NodeDown]) -> anyhow::Result<()> {
    let names: Vec<&str> = down.iter().map(|d| d.node.as_str()).collect();
    let first = &down[0];
    note(
        shared,
        state,
        r,
        &format!(
            "holding: node(s) {} failing during the rollout (since {}: {}); rolled back unless back within {}",
            names.join(", "),
            first.since,
            first.error,
            format_ms(r.plan.max_node_downtime_ms)
        ),
    )
}

/// Rolls back a rollout paused longer than its plan's max pause: the new version's weight
/// goes to 0.
fn expire_pause(shared: &Shared, r: &Rollout) -> anyhow::Result<()> {
    // A rollout paused before `paused_at` existed has not been updated since its pause.
    let since = r.paused_at.as_deref().unwrap_or(&r.updated_at);
    if elapsed_since(since).is_some_and(|d| d >= Duration::from_millis(r.plan.max_pause_ms)) {
        roll_back(
            shared,
            r,
            &format!(
                "paused since {since}, longer than the max pause ({}); the stable version serves everything",
                format_ms(r.plan.max_pause_ms)
            ),
        )?;
    }
    Ok(())
}

/// Nodes that serve `model` and are not failing.
fn eligible_nodes(shared: &Shared, model: &str) -> Vec<String> {
    let serving = shared.serving_nodes(model);
    shared.with_runtimes(|runtimes| {
        serving
            .into_iter()
            .filter(|n| runtimes.get(n).is_none_or(|rt| rt.status != "failing"))
            .collect()
    })
}

/// Whether every eligible node serves the current desired generation (and at least one
/// does).
fn converged(shared: &Shared, nodes: &[String]) -> bool {
    let generation = shared.desired_generation();
    !nodes.is_empty()
        && shared.with_runtimes(|runtimes| {
            nodes.iter().all(|n| {
                runtimes
                    .get(n)
                    .is_some_and(|rt| rt.status == "converged" && rt.applied_generation == generation)
            })
        })
}

/// The model's counters on each node, from the nodes' latest states.
fn counters(shared: &Shared, model: &str, nodes: &[String]) -> FleetCounters {
    shared.with_runtimes(|runtimes| {
        nodes
            .iter()
            .filter_map(|n| {
                let state = runtimes.get(n)?.last_state.as_ref()?;
                let counters = NodeCounters {
                    instance_id: state.instance_id.clone(),
                    versions: state
                        .versions
                        .iter()
                        .filter(|v| v.model == model)
                        .map(|v| (v.version, v.clone()))
                        .collect(),
                    shadows: state
                        .shadows
                        .iter()
                        .filter(|s| s.model == model)
                        .map(|s| (s.version, s.clone()))
                        .collect(),
                };
                Some((n.clone(), counters))
            })
            .collect()
    })
}

/// Replays the version's golden pairs on every node. Err says which node and pair failed.
fn smoke_test(shared: &Shared, r: &Rollout, nodes: &[String]) -> anyhow::Result<usize> {
    let golden = shared.registry.golden(&r.model, r.to_version)?;
    if golden.is_empty() {
        return Ok(0);
    }
    let urls: BTreeMap<String, String> = shared
        .registry
        .nodes()?
        .into_iter()
        .map(|n| (n.name, n.url))
        .collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .filter_map(|n| urls.get(n).map(|u| (n.clone(), u.clone())))
            .map(|(node, url)| {
                let golden = &golden;
                let token = shared.node_auth(&node);
                let tls = shared.config.client_tls.clone();
                scope.spawn(move || -> Option<String> {
                    let client = NodeClient::new(&url, token, &tls);
                    for (i, pair) in golden.iter().enumerate() {
                        let outcome = client
                            .infer(&r.model, r.to_version, &pair.request)
                            .map_err(|e| format!("{e:#}"))
                            .and_then(|answer| smoke::compare(&pair.response, &answer));
                        if let Err(e) = outcome {
                            return Some(format!("node {node}, golden pair {}: {e}", i + 1));
                        }
                    }
                    None
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    if let Some(first) = failures.first() {
        anyhow::bail!("smoke test failed on {} node(s): {first}", failures.len());
    }
    Ok(golden.len())
}

fn roll_back(shared: &Shared, r: &Rollout, reason: &str) -> anyhow::Result<()> {
    tracing::warn!(model = %r.model, to = r.to_version, reason, "rolling back");
    let message = format!("rolled back: {reason}");
    shared
        .registry
        .finish_rollout(r.id, RolloutState::RolledBack, &message, &shared.config.actor)?;
    alert(shared, r, reason);
    crate::monitor::event(
        shared,
        kiln_node_api::alerts::Alert::new("KilnRolloutRolledBack", kiln_node_api::alerts::Severity::Page)
            .label("model", &r.model)
            .label("version", r.to_version)
            .annotation(
                "summary",
                format!(
                    "the rollout of {} version {} was rolled back: {reason}",
                    r.model, r.to_version
                ),
            ),
    );
    Ok(())
}

fn elapsed_since(rfc3339: &str) -> Option<Duration> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()?;
    let d = time::OffsetDateTime::now_utc() - t;
    Some(Duration::from_secs_f64(d.as_seconds_f64().max(0.0)))
}

/// Moves every progressing rollout as far as it can go this tick.
fn drive_rollouts(
    shared: &Arc<Shared>,
    state: &mut ControlState,
    rollouts: &[Rollout],
) -> anyhow::Result<()> {
    for r in rollouts {
        if r.state == RolloutState::Paused {
            if let Err(e) = expire_pause(shared, r) {
                tracing::warn!(model = %r.model, rollout = r.id, error = %format!("{e:#}"), "rolling back a rollout paused too long failed; retrying");
            }
            continue;
        }
        if r.state != RolloutState::Progressing {
            continue;
        }
        if let Err(e) = drive(shared, state, r) {
            tracing::warn!(model = %r.model, rollout = r.id, error = %format!("{e:#}"), "rollout step failed; retrying");
        }
    }
    Ok(())
}

fn drive(shared: &Arc<Shared>, state: &mut ControlState, r: &Rollout) -> anyhow::Result<()> {
    let registry = &shared.registry;
    let down = nodes_down(shared, r);
    if roll_back_if_a_node_stays_down(shared, r, &down)? {
        return Ok(());
    }
    let nodes = eligible_nodes(shared, &r.model);
    match r.phase {
        // Nothing moves while a node that failed during the rollout is down.
        Phase::Warming | Phase::Smoke | Phase::Shifting if !down.is_empty() => hold(shared, state, r, &down)?,
        Phase::Warming => {
            if converged(shared, &nodes) {
                registry.set_rollout_progress(
                    r.id,
                    Phase::Smoke,
                    None,
                    &format!(
                        "version {} warm on {} node(s); smoke testing",
                        r.to_version,
                        nodes.len()
                    ),
                )?;
            } else if nodes.is_empty() {
                note(
                    shared,
                    state,
                    r,
                    "waiting for a reachable node that serves the model",
                )?;
            }
        }
        Phase::Smoke => match smoke_test(shared, r, &nodes) {
            Ok(pairs) => {
                let (weight, shadow) = r.plan.weight_at(r.step);
                let what = if shadow {
                    "shadowing".to_string()
                } else {
                    format!("shifting to {weight}%")
                };
                let smoke = if pairs == 0 {
                    "no golden pairs to replay".to_string()
                } else {
                    format!("{pairs} golden pair(s) passed on {} node(s)", nodes.len())
                };
                registry.set_rollout_progress(r.id, Phase::Shifting, None, &format!("{smoke}; {what}"))?;
            }
            Err(e) => roll_back(shared, r, &format!("{e:#}"))?,
        },
        Phase::Shifting => {
            if converged(shared, &nodes) {
                let baseline = counters(shared, &r.model, &nodes);
                let (weight, shadow) = r.plan.weight_at(r.step);
                let msg = if r.plan.strategy == Strategy::Direct || r.from_version.is_none() {
                    "switched".to_string()
                } else if shadow {
                    format!("shadowing on {} node(s); analysing", nodes.len())
                } else {
                    format!("{weight}% on {} node(s); analysing", nodes.len())
                };
                let r2 = registry.set_rollout_progress(r.id, Phase::Analysing, Some(&baseline), &msg)?;
                if let Some(r2) = r2
                    && (r2.plan.strategy == Strategy::Direct || r2.from_version.is_none())
                {
                    registry.finish_rollout(
                        r2.id,
                        RolloutState::Succeeded,
                        "switched",
                        &shared.config.actor,
                    )?;
                }
            }
        }
        Phase::Analysing => {
            let baseline = r.baseline.clone().unwrap_or_default();
            // The step's nodes keep counting while they fail (with their last counters),
            // so a canary that crashes nodes does not shrink its own denominator.
            let mut counted = nodes.clone();
            counted.extend(baseline.keys().filter(|n| !nodes.contains(n)).cloned());
            let now = counters(shared, &r.model, &counted);
            let figures = step_figures(&baseline, &now, r.to_version, r.from_version);
            let step_elapsed = r.step_started_at.as_deref().and_then(elapsed_since);
            let interval_over = step_elapsed.is_some_and(|d| d >= Duration::from_millis(r.plan.interval_ms));
            let (weight, shadow) = r.plan.weight_at(r.step);
            let mut verdict = judge(&r.plan, shadow, &figures, interval_over);
            let mut shift_line = None;
            // Prediction drift needs both versions serving the same traffic: a weighted
            // step below 100 %, judged once the other thresholds passed.
            if let (Verdict::Healthy, Some(max), Some(stable), true) = (
                &verdict,
                r.plan.max_prediction_drift,
                r.from_version,
                !shadow && weight < 100 && down.is_empty(),
            ) {
                let since = drift::step_since(step_elapsed.unwrap_or_default());
                let shift =
                    drift::fleet_prediction_shift(shared, &r.model, r.to_version, stable, &since, max);
                let (v, line) = drift::judge_prediction_drift(r.plan.min_requests.max(1), shift);
                verdict = v;
                shift_line = Some(line);
            }
            match verdict {
                Verdict::Broken(reason) => roll_back(shared, r, &reason)?,
                _ if !down.is_empty() => hold(shared, state, r, &down)?,
                Verdict::Healthy => {
                    let msg = format!(
                        "step {} ({}) healthy: {}{}",
                        r.step + 1,
                        if shadow {
                            "shadow".to_string()
                        } else {
                            format!("{weight}%")
                        },
                        figures.summary(),
                        shift_line.map(|l| format!("; {l}")).unwrap_or_default()
                    );
                    registry.advance_rollout(r.id, &msg, &shared.config.actor)?;
                }
                Verdict::TooLittleTraffic(reason) => {
                    registry.pause_rollout(
                        &r.model,
                        true,
                        &format!(
                            "paused: {reason}; resume with `kiln rollout resume {}` within {} or it is rolled back (max pause)",
                            r.model,
                            format_ms(r.plan.max_pause_ms)
                        ),
                        &shared.config.actor,
                    )?;
                }
                Verdict::Watching => {
                    let label = if shadow {
                        "shadow".to_string()
                    } else {
                        format!("{weight}%")
                    };
                    note(
                        shared,
                        state,
                        r,
                        &format!("analysing {label}: {}", figures.summary()),
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Updates a rollout's message at most once a second (it is not audited).
fn note(shared: &Shared, state: &mut ControlState, r: &Rollout, message: &str) -> anyhow::Result<()> {
    let due = state
        .last_message
        .get(&r.id)
        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
    if due && r.message != message {
        shared
            .registry
            .set_rollout_progress(r.id, r.phase, None, message)?;
        state.last_message.insert(r.id, Instant::now());
    }
    Ok(())
}
