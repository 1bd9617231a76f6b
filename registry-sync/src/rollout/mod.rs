//! Rollouts: plans, their analysis, and their records in the registry database. The sync
//! service's controller drives them; the CLI only writes intents (start, pause, abort...)
//! that the controller acts on, so every state change is in one place and audited.

pub mod analysis;
pub mod plan;
mod record;
mod store;

pub use analysis::{FleetCounters, NodeCounters, StepFigures, Verdict, judge, step_figures};
pub use plan::{RolloutPlan, Strategy, format_duration_ms, parse_duration_ms};
pub use record::{Phase, Restore, Rollout, RolloutState};
