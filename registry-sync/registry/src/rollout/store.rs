//! Rollout records in the registry database: start, the controller's progress, the
//! operator's intents, and the registry changes a rollout's end makes (promotion on
//! success; stage and alias restore on rollback), each in one audited transaction.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;

use super::analysis::FleetCounters;
use super::record::{Phase, Restore, Rollout, RolloutState};
use crate::audit;
use crate::error::RegistryError;
use crate::fleet::{FleetModel, write_fleet_model};
use crate::model::Stage;
use crate::mutations::{write_alias, write_stage};
use crate::plan::RolloutPlan;
use crate::registry::Registry;
use kiln_types::format::now_rfc3339;

const COLUMNS: &str = "id, model, from_version, to_version, plan, state, step, phase, step_started_at, baseline, restore, trigger, message, created_at, updated_at, paused_at";

fn corrupt(what: &str, e: impl fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("{what}: {e}").into())
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Rollout> {
    let plan: String = r.get(4)?;
    let state: String = r.get(5)?;
    let phase: String = r.get(7)?;
    let baseline: Option<String> = r.get(9)?;
    let restore: String = r.get(10)?;
    Ok(Rollout {
        id: r.get(0)?,
        model: r.get(1)?,
        from_version: r.get(2)?,
        to_version: r.get(3)?,
        plan: serde_json::from_str(&plan).map_err(|e| corrupt("rollout plan", e))?,
        state: state.parse().map_err(|e| corrupt("rollout state", e))?,
        step: r.get::<_, i64>(6)? as usize,
        phase: phase.parse().map_err(|e| corrupt("rollout phase", e))?,
        step_started_at: r.get(8)?,
        baseline: baseline
            .map(|b| serde_json::from_str(&b))
            .transpose()
            .map_err(|e| corrupt("rollout baseline", e))?,
        restore: serde_json::from_str(&restore).map_err(|e| corrupt("rollout restore", e))?,
        trigger: r.get(11)?,
        message: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
        paused_at: r.get(15)?,
    })
}

fn get_rollout(tx: &Transaction<'_>, id: u64) -> Result<Rollout, RegistryError> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM rollouts WHERE id = ?1"),
        [id],
        from_row,
    )
    .optional()?
    .ok_or_else(|| RegistryError::NotFound(format!("no rollout with id {id}")))
}

fn summary(r: &Rollout) -> Value {
    let (weight, shadow) = r.current_weight();
    let mut s = json!({
        "rollout": r.id,
        "from": r.from_version,
        "to": r.to_version,
        "state": r.state,
        "step": r.step,
        "weight": weight,
        "shadow": shadow,
        "message": r.message,
    });
    if let Some(at) = &r.paused_at {
        s["paused_at"] = json!(at);
    }
    s
}

fn to_json(v: &impl Serialize) -> Result<String, RegistryError> {
    serde_json::to_string(v).map_err(|e| RegistryError::Invalid(e.to_string()))
}

fn stage_of(tx: &Transaction<'_>, model: &str, version: u64) -> Result<Stage, RegistryError> {
    let s: String = tx
        .query_row(
            "SELECT stage FROM versions WHERE name = ?1 AND version = ?2",
            params![model, version],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| RegistryError::NotFound(format!("model `{model}` has no version {version}")))?;
    s.parse()
}

/// Moves a version to `stage` (audited, with the rollout's reason) unless it is there.
fn set_stage(
    tx: &Transaction<'_>,
    model: &str,
    version: u64,
    stage: Stage,
    actor: &str,
    why: &str,
) -> Result<(), RegistryError> {
    let before = stage_of(tx, model, version)?;
    if before == stage {
        return Ok(());
    }
    write_stage(tx, model, version, before, stage, actor, json!({ "reason": why }))
}

/// Points an alias at a version, or deletes it (audited, with the rollout's reason).
fn set_alias(
    tx: &Transaction<'_>,
    model: &str,
    alias: &str,
    version: Option<u64>,
    actor: &str,
    why: &str,
) -> Result<(), RegistryError> {
    write_alias(tx, model, alias, version, actor, json!({ "reason": why })).map(|_| ())
}

/// The stage a version had before its latest move to Production, from the audit log.
fn stage_before_production(
    tx: &Transaction<'_>,
    model: &str,
    version: u64,
) -> Result<Option<Stage>, RegistryError> {
    let before: Option<String> = tx
        .query_row(
            "SELECT before FROM audit WHERE model = ?1 AND version = ?2 AND action = 'transition_stage'
               AND json_extract(after, '$.stage') = 'Production' ORDER BY seq DESC LIMIT 1",
            params![model, version],
            |r| r.get(0),
        )
        .optional()?;
    Ok(before
        .and_then(|b| serde_json::from_str::<Value>(&b).ok())
        .and_then(|b| b.get("stage").and_then(Value::as_str).map(str::to_string))
        .and_then(|s| s.parse().ok()))
}

/// Aliases on `version` whose latest move came from `from`, with that previous target.
fn moved_aliases(
    tx: &Transaction<'_>,
    model: &str,
    version: u64,
    from: Option<u64>,
) -> Result<BTreeMap<String, Option<u64>>, RegistryError> {
    let mut stmt = tx.prepare("SELECT alias FROM aliases WHERE name = ?1 AND version = ?2")?;
    let aliases: Vec<String> = stmt
        .query_map(params![model, version], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = BTreeMap::new();
    for alias in aliases {
        let before: Option<String> = tx
            .query_row(
                "SELECT before FROM audit WHERE model = ?1 AND action = 'set_alias'
                   AND json_extract(after, '$.alias') = ?2 ORDER BY seq DESC LIMIT 1",
                params![model, alias],
                |r| r.get(0),
            )
            .optional()?;
        let previous = before
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .and_then(|b| b.get("version").and_then(Value::as_u64));
        if previous.is_some() && previous == from {
            out.insert(alias, previous);
        }
    }
    Ok(out)
}

impl Registry {
    /// Starts a rollout of `model` to `to` from the fleet's stable version (audited).
    /// Refused while another rollout of the model is active.
    pub fn start_rollout(
        &self,
        model: &str,
        to: u64,
        plan: RolloutPlan,
        trigger: &str,
        actor: &str,
    ) -> Result<Rollout, RegistryError> {
        let plan = plan.validated()?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let to_stage = stage_of(&tx, model, to)?;
        if let Some(active) = tx
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM rollouts WHERE model = ?1 AND state IN ('progressing','paused')"
                ),
                [model],
                from_row,
            )
            .optional()?
        {
            return Err(RegistryError::Conflict(format!(
                "model `{model}` already has rollout {} to version {} ({}); abort it first with `kiln rollout abort {model}`",
                active.id, active.to_version, active.state
            )));
        }
        let from: Option<u64> = tx
            .query_row("SELECT stable FROM fleet_models WHERE model = ?1", [model], |r| {
                r.get(0)
            })
            .optional()?
            .flatten();
        if from == Some(to) {
            return Err(RegistryError::Conflict(format!(
                "version {to} of `{model}` is already the fleet's stable version"
            )));
        }
        let restore = Restore {
            to_stage: Some(if to_stage == Stage::Production {
                stage_before_production(&tx, model, to)?.unwrap_or(Stage::None)
            } else {
                to_stage
            }),
            from_stage: from.map(|f| stage_of(&tx, model, f)).transpose()?.map(|s| {
                // The old version was archived by the promotion that triggered this.
                if s == Stage::Archived && to_stage == Stage::Production {
                    Stage::Production
                } else {
                    s
                }
            }),
            aliases: moved_aliases(&tx, model, to, from)?,
        };
        let now = now_rfc3339();
        let message = format!("started: {}", plan.summary());
        tx.execute(
            "INSERT INTO rollouts (model, from_version, to_version, strategy, plan, state, step, phase,
                 restore, trigger, message, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'progressing', 0, 'warming', ?6, ?7, ?8, ?9, ?9)",
            params![
                model,
                from,
                to,
                plan.strategy.as_str(),
                to_json(&plan)?,
                to_json(&restore)?,
                trigger,
                message,
                now
            ],
        )?;
        let id = tx.last_insert_rowid() as u64;
        let rollout = get_rollout(&tx, id)?;
        let mut after = summary(&rollout);
        after["plan"] = json!(plan);
        after["trigger"] = json!(trigger);
        audit::append(&tx, actor, "rollout.start", model, Some(to), Value::Null, after)?;
        tx.commit()?;
        tracing::info!(model, to, ?from, strategy = %plan.strategy, trigger, "rollout started");
        Ok(rollout)
    }

    /// One rollout by id.
    pub fn rollout(&self, id: u64) -> Result<Rollout, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        get_rollout(&tx, id)
    }

    /// The active (progressing or paused) rollout of `model`.
    pub fn active_rollout(&self, model: &str) -> Result<Option<Rollout>, RegistryError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM rollouts WHERE model = ?1 AND state IN ('progressing','paused')"
                ),
                [model],
                from_row,
            )
            .optional()?)
    }

    /// Every active rollout.
    pub fn active_rollouts(&self) -> Result<Vec<Rollout>, RegistryError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE state IN ('progressing','paused') ORDER BY id"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Each model's latest rollout, by model name.
    pub fn latest_rollouts(&self) -> Result<Vec<Rollout>, RegistryError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE id IN (SELECT MAX(id) FROM rollouts GROUP BY model) ORDER BY model"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// How many rollouts each model has had, by state: (model, state, count).
    pub fn rollout_counts(&self) -> Result<Vec<(String, String, u64)>, RegistryError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT model, state, COUNT(*) FROM rollouts GROUP BY model, state ORDER BY model, state",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Rollouts, newest first: of `model` if given, at most `limit`.
    pub fn rollouts(&self, model: Option<&str>, limit: usize) -> Result<Vec<Rollout>, RegistryError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE (?1 IS NULL OR model = ?1) ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![model, limit as i64], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The controller's progress within a step (not audited: phases change every few
    /// hundred milliseconds). Returns the stored rollout. Does nothing (and says so with
    /// `None`) if the rollout is no longer active, so a concurrent operator action wins.
    pub fn set_rollout_progress(
        &self,
        id: u64,
        phase: Phase,
        baseline: Option<&FleetCounters>,
        message: &str,
    ) -> Result<Option<Rollout>, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = get_rollout(&tx, id)?;
        if r.state != RolloutState::Progressing {
            return Ok(None);
        }
        let started = if phase == Phase::Analysing && r.phase != Phase::Analysing {
            Some(now_rfc3339())
        } else if phase == Phase::Analysing {
            r.step_started_at.clone()
        } else {
            None
        };
        let baseline = match baseline {
            Some(b) => Some(to_json(b)?),
            None if phase == Phase::Analysing => r.baseline.as_ref().map(to_json).transpose()?,
            None => None,
        };
        tx.execute(
            "UPDATE rollouts SET phase = ?2, step_started_at = ?3, baseline = ?4, message = ?5, updated_at = ?6 WHERE id = ?1",
            params![id, phase.as_str(), started, baseline, message, now_rfc3339()],
        )?;
        let r = get_rollout(&tx, id)?;
        tx.commit()?;
        Ok(Some(r))
    }

    /// Moves a progressing rollout to its next step (audited). At the end, completes it:
    /// see [`Registry::finish_rollout`].
    pub fn advance_rollout(&self, id: u64, message: &str, actor: &str) -> Result<Rollout, RegistryError> {
        let r = self.rollout(id)?;
        if r.step + 1 >= r.plan.step_count() {
            return self.finish_rollout(id, RolloutState::Succeeded, message, actor);
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before = get_rollout(&tx, id)?;
        if before.state != RolloutState::Progressing {
            return Err(RegistryError::Conflict(format!(
                "rollout {id} is {}, not progressing",
                before.state
            )));
        }
        tx.execute(
            "UPDATE rollouts SET step = step + 1, phase = 'warming', step_started_at = NULL, baseline = NULL,
                 message = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, message, now_rfc3339()],
        )?;
        let after = get_rollout(&tx, id)?;
        let mut after_json = summary(&after);
        after_json["next_weight"] = json!(after.plan.weight_at(after.step).0);
        audit::append(
            &tx,
            actor,
            "rollout.step",
            &after.model,
            Some(after.to_version),
            summary(&before),
            after_json,
        )?;
        tx.commit()?;
        Ok(after)
    }

    /// Pauses (`true`) or resumes a rollout (audited), noting when it was paused (the
    /// controller rolls back a rollout paused longer than its plan's `max_pause_ms`).
    /// Resuming restarts the current step.
    pub fn pause_rollout(
        &self,
        model: &str,
        pause: bool,
        message: &str,
        actor: &str,
    ) -> Result<Rollout, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = tx
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM rollouts WHERE model = ?1 AND state IN ('progressing','paused')"
                ),
                [model],
                from_row,
            )
            .optional()?
            .ok_or_else(|| RegistryError::NotFound(format!("model `{model}` has no active rollout")))?;
        let (state, action) = if pause {
            (RolloutState::Paused, "rollout.pause")
        } else {
            (RolloutState::Progressing, "rollout.resume")
        };
        if r.state == state {
            return Ok(r);
        }
        // Resuming re-runs the step from its warm-up, so it is smoke-tested and judged on
        // fresh counters.
        let phase = if pause { r.phase } else { Phase::Warming };
        let now = now_rfc3339();
        tx.execute(
            "UPDATE rollouts SET state = ?2, phase = ?3, step_started_at = CASE WHEN ?4 THEN step_started_at ELSE NULL END,
                 message = ?5, updated_at = ?6, paused_at = CASE WHEN ?4 THEN ?6 ELSE NULL END WHERE id = ?1",
            params![r.id, state.as_str(), phase.as_str(), pause, message, now],
        )?;
        let after = get_rollout(&tx, r.id)?;
        audit::append(
            &tx,
            actor,
            action,
            model,
            Some(r.to_version),
            summary(&r),
            summary(&after),
        )?;
        tx.commit()?;
        Ok(after)
    }

    /// Ends a rollout (audited), with its registry effects in the same transaction:
    /// - `Succeeded`: the new version becomes the fleet's stable one (the old one its warm
    ///   previous) and Production in the registry (archiving the old one);
    /// - `RolledBack` / `Aborted`: the old version keeps serving; if the new one had been
    ///   promoted, its stage and the aliases that moved to it are restored.
    pub fn finish_rollout(
        &self,
        id: u64,
        state: RolloutState,
        message: &str,
        actor: &str,
    ) -> Result<Rollout, RegistryError> {
        if state.is_active() {
            return Err(RegistryError::Invalid(format!("{state} is not an end state")));
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = get_rollout(&tx, id)?;
        if !r.state.is_active() {
            return Err(RegistryError::Conflict(format!(
                "rollout {id} of `{}` already ended ({})",
                r.model, r.state
            )));
        }
        let why = format!("rollout {id} {state}");
        let fleet: FleetModel = tx
            .query_row(
                "SELECT weights, shadow, nodes, serving FROM fleet_models WHERE model = ?1",
                [&r.model],
                |row| {
                    let nodes: Option<String> = row.get(2)?;
                    let serving: Option<String> = row.get(3)?;
                    Ok(FleetModel {
                        weights: None,
                        shadow: row.get(1)?,
                        nodes: nodes.and_then(|n| serde_json::from_str(&n).ok()),
                        serving: serving.and_then(|p| serde_json::from_str(&p).ok()),
                        ..FleetModel::default()
                    })
                },
            )
            .optional()?
            .unwrap_or_default();
        match state {
            RolloutState::Succeeded => {
                let fm = FleetModel {
                    stable: Some(r.to_version),
                    previous: r.from_version,
                    // The shadow was the canary; it serves now.
                    shadow: fleet.shadow.filter(|s| *s != r.to_version),
                    ..fleet
                };
                write_fleet_model(&tx, &r.model, &fm, actor, &why)?;
                set_stage(&tx, &r.model, r.to_version, Stage::Production, actor, &why)?;
                if let Some(from) = r.from_version
                    && stage_of(&tx, &r.model, from)? == Stage::Production
                {
                    set_stage(&tx, &r.model, from, Stage::Archived, actor, &why)?;
                }
            }
            _ => {
                if let Some(from) = r.from_version {
                    if stage_of(&tx, &r.model, r.to_version)? == Stage::Production {
                        let back = r.restore.to_stage.unwrap_or(Stage::None);
                        set_stage(&tx, &r.model, r.to_version, back, actor, &why)?;
                    }
                    if let Some(stage) = r.restore.from_stage {
                        set_stage(&tx, &r.model, from, stage, actor, &why)?;
                    }
                    // Aliases moved from the old version to the new one, also those moved
                    // after the rollout started (a person promotes, then moves `champion`).
                    let mut aliases = r.restore.aliases.clone();
                    aliases.extend(moved_aliases(&tx, &r.model, r.to_version, Some(from))?);
                    for (alias, previous) in &aliases {
                        set_alias(&tx, &r.model, alias, *previous, actor, &why)?;
                    }
                }
            }
        }
        tx.execute(
            "UPDATE rollouts SET state = ?2, message = ?3, updated_at = ?4, paused_at = NULL WHERE id = ?1",
            params![id, state.as_str(), message, now_rfc3339()],
        )?;
        let after = get_rollout(&tx, id)?;
        let action = match state {
            RolloutState::Succeeded => "rollout.succeed",
            RolloutState::RolledBack => "rollout.rollback",
            _ => "rollout.abort",
        };
        audit::append(
            &tx,
            actor,
            action,
            &r.model,
            Some(r.to_version),
            summary(&r),
            summary(&after),
        )?;
        tx.commit()?;
        tracing::info!(model = %r.model, to = r.to_version, from = ?r.from_version, state = %state, message, "rollout ended");
        Ok(after)
    }

    /// Switches a model back to its previous (warm) version after a finished rollout, and
    /// restores it as Production (audited). Instant on the nodes: the version is loaded.
    pub fn revert_to_previous(&self, model: &str, actor: &str) -> Result<FleetModel, RegistryError> {
        let fleet = self.fleet_models()?;
        let fm = fleet
            .get(model)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(format!("the fleet does not serve `{model}`")))?;
        let (Some(stable), Some(previous)) = (fm.stable, fm.previous) else {
            return Err(RegistryError::Conflict(format!(
                "`{model}` has no previous version kept warm to roll back to"
            )));
        };
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let new = FleetModel {
            stable: Some(previous),
            previous: Some(stable),
            ..fm
        };
        let why = format!("rollback of `{model}` to version {previous}");
        write_fleet_model(&tx, model, &new, actor, &why)?;
        set_stage(&tx, model, previous, Stage::Production, actor, &why)?;
        if stage_of(&tx, model, stable)? == Stage::Production {
            set_stage(&tx, model, stable, Stage::Archived, actor, &why)?;
        }
        tx.commit()?;
        Ok(new)
    }
}
