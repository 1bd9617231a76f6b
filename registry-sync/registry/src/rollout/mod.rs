//! Rollouts: their analysis, and their records in the registry database (plans are
//! [`crate::plan`]). The sync service's controller drives them; the CLI only writes
//! intents (start, pause, abort...) that the controller acts on, so every state change is
//! in one place and audited.

pub mod analysis;
mod record;
mod store;

pub use analysis::{FleetCounters, NodeCounters, StepFigures, Verdict, judge, step_figures};
pub use record::{Phase, Restore, Rollout, RolloutState};
