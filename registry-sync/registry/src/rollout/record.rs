//! A rollout's record: where it is (state, phase, step), what it would restore, and the
//! new version's weight at each point.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::analysis::FleetCounters;
use crate::error::RegistryError;
use crate::model::Stage;
use crate::plan::RolloutPlan;

/// Where a rollout is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Moving through its steps.
    Progressing,
    /// Held at its current weights until resumed.
    Paused,
    /// Done: the new version serves everything and is the stable one.
    Succeeded,
    /// Stopped by analysis or a failed smoke test: the old version serves everything.
    RolledBack,
    /// Stopped by an operator (or superseded): the old version serves everything.
    Aborted,
}

impl RolloutState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Progressing => "progressing",
            RolloutState::Paused => "paused",
            RolloutState::Succeeded => "succeeded",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
        }
    }

    /// Progressing or paused.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Progressing | RolloutState::Paused)
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RolloutState {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "progressing" => RolloutState::Progressing,
            "paused" => RolloutState::Paused,
            "succeeded" => RolloutState::Succeeded,
            "rolled_back" => RolloutState::RolledBack,
            "aborted" => RolloutState::Aborted,
            other => return Err(RegistryError::Corrupt(format!("unknown rollout state `{other}`"))),
        })
    }
}

/// Where a step is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The new version is pushed (at its previous weight) and loading on the nodes.
    Warming,
    /// Its golden requests are being replayed on every node.
    Smoke,
    /// The step's weight is being pushed.
    Shifting,
    /// The step's weight is live; counters are being watched.
    Analysing,
}

impl Phase {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Warming => "warming",
            Phase::Smoke => "smoke",
            Phase::Shifting => "shifting",
            Phase::Analysing => "analysing",
        }
    }
}

impl FromStr for Phase {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "warming" => Phase::Warming,
            "smoke" => Phase::Smoke,
            "shifting" => Phase::Shifting,
            "analysing" => Phase::Analysing,
            other => return Err(RegistryError::Corrupt(format!("unknown rollout phase `{other}`"))),
        })
    }
}

/// What a rollback puts back in the registry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Restore {
    /// The new version's stage before the rollout (it returns there if it was promoted).
    pub to_stage: Option<Stage>,
    /// The old version's stage before the rollout (Production, usually).
    pub from_stage: Option<Stage>,
    /// Aliases that moved to the new version, with the version they pointed at before.
    pub aliases: BTreeMap<String, Option<u64>>,
}

/// One rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Rollout {
    pub id: u64,
    pub model: String,
    /// The stable version when it started (None for a first deployment).
    pub from_version: Option<u64>,
    pub to_version: u64,
    pub plan: RolloutPlan,
    pub state: RolloutState,
    /// Index of the current step (see [`RolloutPlan::weight_at`]).
    pub step: usize,
    pub phase: Phase,
    /// When the current step's analysis window opened.
    pub step_started_at: Option<String>,
    /// Counters at the start of the window.
    pub baseline: Option<FleetCounters>,
    pub restore: Restore,
    /// When it was paused (while paused): past `plan.max_pause_ms` it is rolled back.
    #[serde(default)]
    pub paused_at: Option<String>,
    /// `cli`, `registry`, `gitops` or `mlflow`.
    pub trigger: String,
    /// The latest decision or reason, for people.
    pub message: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Rollout {
    /// The new version's weight (percent) and shadow flag right now: the current step's
    /// once it is live, the previous step's while the step is warming up.
    pub fn current_weight(&self) -> (u32, bool) {
        match self.state {
            RolloutState::Succeeded => return (100, false),
            RolloutState::RolledBack | RolloutState::Aborted => return (0, false),
            _ => {}
        }
        match self.phase {
            Phase::Shifting | Phase::Analysing => self.plan.weight_at(self.step),
            Phase::Warming | Phase::Smoke if self.step == 0 => (0, false),
            Phase::Warming | Phase::Smoke => {
                let (w, shadow) = self.plan.weight_at(self.step - 1);
                if shadow { (0, false) } else { (w, false) }
            }
        }
    }
}
