//! `kiln rollout ...`: start, watch and steer rollouts. The commands write intents to the
//! registry database; the running `kiln sync` carries them out (so they work from any
//! machine sharing the registry, and survive a restart of the service).

use clap::{Args, Subcommand};
use comfy_table::{Table, presets};
use kiln_registry::rollout::{Rollout, RolloutState};
use kiln_registry::{PlanOverrides, RolloutPlan};
use kiln_registry_server::RegistryApi;
use kiln_registry_server::api::{Finish, RolledBack};

use crate::render::{trim_lines, truncate};

/// The flags that make a rollout plan.
#[derive(Debug, Args, Clone, Default)]
pub struct PlanArgs {
    /// canary, blue-green or direct.
    #[arg(long)]
    pub strategy: Option<String>,
    /// Canary weights in percent: 5,25,50,100.
    #[arg(long, value_delimiter = ',')]
    pub steps: Option<Vec<u32>>,
    /// Analysis interval per step (canary) or bake time (blue-green): 30s, 500ms, 2m.
    #[arg(long)]
    pub interval: Option<String>,
    /// Roll back above this canary 5xx rate (0.01 = 1 %).
    #[arg(long)]
    pub max_error_rate: Option<f64>,
    /// Roll back when the canary's 5xx rate exceeds stable's by more than this.
    #[arg(long)]
    pub max_error_rate_increase: Option<f64>,
    /// Roll back above this canary p99 latency: 50ms, 1s.
    #[arg(long)]
    pub max_p99: Option<String>,
    /// Shadow the new version first, rolling back above this disagreement share.
    #[arg(long)]
    pub max_disagreement: Option<f64>,
    /// Roll back when the canary's outputs drift from the stable version's on the same
    /// traffic by more than this distance (normed Wasserstein / Jensen-Shannon; 0.1 is
    /// Evidently's threshold). Judged at the end of each canary step below 100 %.
    #[arg(long)]
    pub max_prediction_drift: Option<f64>,
    /// Fewest canary requests needed to judge a step.
    #[arg(long)]
    pub min_requests: Option<u64>,
    /// Roll back, even below --min-requests, once the canary has answered this many
    /// requests with a 5xx and none successfully in a step (0 = off; default 5).
    #[arg(long)]
    pub max_consecutive_errors: Option<u64>,
    /// Roll back a rollout paused longer than this: 1h (the default), 30m.
    #[arg(long)]
    pub max_pause: Option<String>,
    /// Roll back when a node that fails during the rollout stays failing longer than
    /// this (the rollout holds meanwhile): 30s (the default).
    #[arg(long)]
    pub max_node_downtime: Option<String>,
}

impl PlanArgs {
    /// The flags as changes to a plan.
    pub fn overrides(&self) -> PlanOverrides {
        PlanOverrides {
            strategy: self.strategy.clone(),
            steps: self.steps.clone(),
            interval: self.interval.clone(),
            max_error_rate: self.max_error_rate,
            max_error_rate_increase: self.max_error_rate_increase,
            max_p99: self.max_p99.clone(),
            max_disagreement: self.max_disagreement,
            max_prediction_drift: self.max_prediction_drift,
            min_requests: self.min_requests,
            max_consecutive_errors: self.max_consecutive_errors,
            max_pause: self.max_pause.clone(),
            max_node_downtime: self.max_node_downtime.clone(),
        }
    }

    /// The plan: these flags over `base`.
    pub fn plan(&self, base: RolloutPlan) -> anyhow::Result<RolloutPlan> {
        Ok(self.overrides().apply(base)?)
    }
}

/// Progressive delivery of model versions to the fleet.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start rolling NAME out to a version (it becomes Production when the rollout succeeds).
    Start {
        name: String,
        /// The version to roll out.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Show rollouts (the active ones and the latest of each model).
    Status {
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hold the current weights.
    Pause { name: String },
    /// Continue a paused rollout (its current step restarts).
    Resume { name: String },
    /// Skip the remaining steps: the new version takes all traffic now.
    Promote { name: String },
    /// Stop the rollout: the stable version takes all traffic back.
    Abort { name: String },
    /// Roll back: stop the active rollout, or switch back to the previous (warm) version.
    Rollback { name: String },
    /// Set the rollout policy that promoting NAME in the registry starts.
    Policy {
        name: String,
        #[command(flatten)]
        plan: PlanArgs,
        /// Remove the model's policy (the service default applies).
        #[arg(long)]
        clear: bool,
    },
}

/// The state, with when a paused rollout is rolled back (its max pause).
fn state_text(r: &Rollout) -> String {
    let Some(paused_at) = r.paused_at.as_deref().filter(|_| r.state == RolloutState::Paused) else {
        return r.state.to_string();
    };
    let deadline = time::OffsetDateTime::parse(paused_at, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t + time::Duration::milliseconds(i64::try_from(r.plan.max_pause_ms).unwrap_or(i64::MAX)))
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    match deadline {
        Some(at) => format!("{} (rolled back at {at} unless resumed)", r.state),
        None => r.state.to_string(),
    }
}

fn describe(r: &Rollout) -> String {
    let (weight, shadow) = r.current_weight();
    format!(
        "rollout {} of {}: {} → {} ({}), {}, step {}/{}, {}",
        r.id,
        r.model,
        r.from_version.map_or("-".to_string(), |v| v.to_string()),
        r.to_version,
        r.plan.summary(),
        state_text(r),
        (r.step + 1).min(r.plan.step_count()),
        r.plan.step_count(),
        if shadow {
            "shadowing".to_string()
        } else {
            format!("{weight}% on the new version")
        }
    )
}

fn table(rollouts: &[Rollout]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header([
        "ID", "MODEL", "FROM", "TO", "STRATEGY", "STATE", "STEP", "WEIGHT", "PHASE", "MESSAGE",
    ]);
    for r in rollouts {
        let (weight, shadow) = r.current_weight();
        t.add_row([
            r.id.to_string(),
            r.model.clone(),
            r.from_version.map_or("-".to_string(), |v| v.to_string()),
            r.to_version.to_string(),
            r.plan.strategy.to_string(),
            state_text(r),
            format!(
                "{}/{}",
                (r.step + 1).min(r.plan.step_count()),
                r.plan.step_count()
            ),
            if shadow {
                "shadow".to_string()
            } else {
                format!("{weight}%")
            },
            if r.state.is_active() {
                r.phase.as_str().to_string()
            } else {
                "-".to_string()
            },
            truncate(&r.message, 100),
        ]);
    }
    trim_lines(&t.to_string())
}

/// Runs a `kiln rollout` command; returns what to print.
pub fn run(registry: &dyn RegistryApi, cmd: RolloutCommand) -> anyhow::Result<String> {
    Ok(match cmd {
        RolloutCommand::Start { name, to, plan } => {
            let r = registry.rollout_start(&name, to, plan.overrides())?;
            format!(
                "started {}\n`kiln sync` carries it out; watch it with `kiln rollout status {name}`",
                describe(&r)
            )
        }
        RolloutCommand::Status { name, json } => {
            let rollouts = registry.rollouts(name.as_deref())?;
            if json {
                serde_json::to_string_pretty(&rollouts)?
            } else if rollouts.is_empty() {
                "no rollouts".to_string()
            } else {
                table(&rollouts)
            }
        }
        RolloutCommand::Pause { name } => {
            format!("paused {}", describe(&registry.rollout_pause(&name, true)?))
        }
        RolloutCommand::Resume { name } => {
            format!("resumed {}", describe(&registry.rollout_pause(&name, false)?))
        }
        RolloutCommand::Promote { name } => format!(
            "promoted {}",
            describe(&registry.rollout_finish(&name, Finish::Promote)?)
        ),
        RolloutCommand::Abort { name } => format!(
            "aborted {}",
            describe(&registry.rollout_finish(&name, Finish::Abort)?)
        ),
        RolloutCommand::Rollback { name } => match registry.rollout_rollback(&name)? {
            RolledBack::Rollout { rollout } => format!("rolled back {}", describe(&rollout)),
            RolledBack::Reverted { stable, previous } => format!(
                "{name}: version {} serves again (it was kept warm); version {} is kept warm for a roll forward",
                stable.unwrap_or_default(),
                previous.unwrap_or_default()
            ),
        },
        RolloutCommand::Policy { name, plan, clear } => {
            if clear {
                registry.rollout_policy(&name, None)?;
                format!("{name}: rollout policy cleared (the service default applies)")
            } else {
                match registry.rollout_policy(&name, Some(plan.overrides()))? {
                    Some(p) => format!("{name}: promoting a version starts {}", p.summary()),
                    None => format!("{name}: the service default applies"),
                }
            }
        }
    })
}
