//! [`Authorized`]: the registry in this process, used as one identity. Every operation
//! checks the identity's role and model scope first (deny by default), then runs and is
//! audited under the identity's name. The CLI uses it on `$KILN_HOME` as
//! [`Identity::local`]; the server builds one per request from the caller's token.

use std::sync::Arc;

use kiln_fleet::gitops::{self, Change, VersionEffect};
use kiln_registry::auth::{Action, Identity, NewToken, TokenInfo, alias_action, stage_action};
use kiln_registry::fleet::NodeSource;
use kiln_registry::rollout::{Rollout, RolloutState};
use kiln_registry::{
    AuditEntry, AuditReport, GoldenPair, ModelVersion, NewVersion, PlanOverrides, Registry, RolloutPlan,
    Stage, StageTransition,
};

use crate::api::{
    ApiError, ApiResult, ChangeView, Finish, FleetStatus, IssuedView, ReferenceProfile, Registered,
    RegistryApi, RolledBack, TokenView, WhoAmI,
};

/// The registry, as `identity`.
pub struct Authorized {
    registry: Arc<Registry>,
    identity: Identity,
    default_policy: RolloutPlan,
}

impl Authorized {
    /// `registry` used as `identity`; rollouts started without a model policy use
    /// [`RolloutPlan::default`].
    pub fn new(registry: Arc<Registry>, identity: Identity) -> Authorized {
        Authorized {
            registry,
            identity,
            default_policy: RolloutPlan::default(),
        }
    }

    /// The machine's owner on the registry files: [`Identity::local`].
    pub fn local(registry: Arc<Registry>) -> Authorized {
        Authorized::new(registry, Identity::local())
    }

    /// The identity calls run as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// [`RegistryApi::register`] of a component staged in a file (an upload): streamed
    /// into the registry, never read whole.
    pub fn register_staged(&self, new: NewVersion, file: &std::path::Path) -> ApiResult<Registered> {
        self.check(Action::Deploy, Some(&new.name))?;
        let (version, created) = self.registry.register_file(new, file, self.actor())?;
        Ok(Registered { version, created })
    }

    /// A version's component file, checked against its digest in one streaming pass and
    /// positioned at its start, with its size and digest: what the component download
    /// streams.
    pub fn open_component(&self, name: &str, version: u64) -> ApiResult<(std::fs::File, u64, String)> {
        self.check(Action::Read, Some(name))?;
        let v = self.registry.get(name, version)?;
        let file = self.registry.open_blob(&v.digest)?;
        Ok((file, v.size, v.digest))
    }

    fn check(&self, action: Action, model: Option<&str>) -> ApiResult<()> {
        self.identity.check(action, model).map_err(ApiError::from)
    }

    fn actor(&self) -> &str {
        &self.identity.name
    }

    fn active(&self, name: &str) -> ApiResult<Rollout> {
        self.registry.active_rollout(name)?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "model `{name}` has no active rollout (see `kiln rollout status {name}`)"
            ))
        })
    }
}

/// What the running sync service does after a GitOps file made a version Production.
fn next_step(effect: &VersionEffect) -> &'static str {
    match effect {
        VersionEffect::Rollout { .. } => "`kiln sync` starts the rollout",
        VersionEffect::FirstDeployment => "`kiln sync` serves it at once",
        VersionEffect::InProgress(_) => "`kiln sync` carries on with the rollout",
        VersionEffect::AlreadyServed | VersionEffect::StaticWeights => "the fleet's routing does not change",
    }
}

fn change_view(change: &Change) -> ChangeView {
    ChangeView {
        text: change.to_string(),
        model: change.model().map(str::to_string),
        next: match change {
            Change::Production {
                model, to, effect, ..
            } => Some(format!("{model} {to} is now Production: {}", next_step(effect))),
            _ => None,
        },
    }
}

impl RegistryApi for Authorized {
    fn whoami(&self) -> ApiResult<WhoAmI> {
        Ok(WhoAmI {
            name: self.identity.name.clone(),
            role: self.identity.role,
            models: self.identity.models.clone(),
        })
    }

    fn location(&self) -> String {
        self.registry.home().display().to_string()
    }

    fn register(&self, new: NewVersion) -> ApiResult<Registered> {
        self.check(Action::Deploy, Some(&new.name))?;
        let (version, created) = self.registry.register(new, self.actor())?;
        Ok(Registered { version, created })
    }

    fn list(&self, name: Option<&str>) -> ApiResult<Vec<ModelVersion>> {
        self.check(Action::Read, name)?;
        let mut versions = self.registry.list(name)?;
        versions.retain(|v| self.identity.covers(&v.name));
        Ok(versions)
    }

    fn resolve(&self, reference: &str) -> ApiResult<ModelVersion> {
        self.check(Action::Read, None)?;
        let version = self.registry.resolve(reference)?;
        self.check(Action::Read, Some(&version.name))?;
        Ok(version)
    }

    fn golden(&self, name: &str, version: u64) -> ApiResult<Vec<GoldenPair>> {
        self.check(Action::Read, Some(name))?;
        Ok(self.registry.golden(name, version)?)
    }

    fn transition(
        &self,
        name: &str,
        version: u64,
        stage: Stage,
        archive_existing: bool,
    ) -> ApiResult<StageTransition> {
        self.check(Action::Read, Some(name))?;
        let current = self.registry.get(name, version)?;
        self.check(stage_action(current.stage, stage), Some(name))?;
        Ok(self
            .registry
            .transition_stage_detailed(name, version, stage, archive_existing, self.actor())?)
    }

    fn set_alias(&self, name: &str, alias: &str, version: u64) -> ApiResult<ModelVersion> {
        self.check(alias_action(alias), Some(name))?;
        Ok(self.registry.set_alias(name, alias, version, self.actor())?)
    }

    fn delete_alias(&self, name: &str, alias: &str) -> ApiResult<()> {
        self.check(alias_action(alias), Some(name))?;
        Ok(self.registry.delete_alias(name, alias, self.actor())?)
    }

    fn set_tag(&self, name: &str, version: u64, key: &str, value: &str) -> ApiResult<()> {
        self.check(Action::Deploy, Some(name))?;
        self.registry.set_tag(name, version, key, value, self.actor())?;
        Ok(())
    }

    fn set_reference(
        &self,
        name: &str,
        version: u64,
        reference: &ReferenceProfile,
    ) -> ApiResult<ReferenceProfile> {
        self.check(Action::Deploy, Some(name))?;
        Ok(self
            .registry
            .set_reference(name, version, reference, self.actor())?)
    }

    fn component(&self, name: &str, version: u64) -> ApiResult<Vec<u8>> {
        use std::io::Read;
        let (mut file, size, _) = self.open_component(name, version)?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|e| ApiError::Internal(format!("reading the component of {name}/{version}: {e}")))?;
        Ok(bytes)
    }

    fn reference(&self, name: &str, version: u64) -> ApiResult<Option<ReferenceProfile>> {
        self.check(Action::Read, Some(name))?;
        Ok(self.registry.reference(name, version)?)
    }

    fn delete_tag(&self, name: &str, version: u64, key: &str) -> ApiResult<()> {
        self.check(Action::Deploy, Some(name))?;
        self.registry.delete_tag(name, version, key, self.actor())?;
        Ok(())
    }

    fn describe(&self, name: &str, version: u64, text: &str) -> ApiResult<()> {
        self.check(Action::Deploy, Some(name))?;
        self.registry.set_description(name, version, text, self.actor())?;
        Ok(())
    }

    fn delete_version(&self, name: &str, version: u64, force: bool) -> ApiResult<()> {
        self.check(Action::Release, Some(name))?;
        Ok(self.registry.delete_version(name, version, force, self.actor())?)
    }

    fn audit_log(&self, model: Option<&str>) -> ApiResult<Vec<AuditEntry>> {
        self.check(Action::Read, model)?;
        let mut entries = self.registry.audit_log(model)?;
        entries.retain(|e| self.identity.covers(&e.model));
        Ok(entries)
    }

    fn verify_audit(&self) -> ApiResult<AuditReport> {
        self.check(Action::Read, None)?;
        Ok(self.registry.verify_audit()?)
    }

    fn rollout_start(&self, name: &str, to: u64, plan: PlanOverrides) -> ApiResult<Rollout> {
        self.check(Action::Deploy, Some(name))?;
        let base = self
            .registry
            .rollout_policy(name)?
            .unwrap_or_else(|| self.default_policy.clone());
        let plan = plan.apply(base)?;
        Ok(self.registry.start_rollout(name, to, plan, "cli", self.actor())?)
    }

    fn rollouts(&self, name: Option<&str>) -> ApiResult<Vec<Rollout>> {
        self.check(Action::Read, name)?;
        let mut rollouts = self.registry.rollouts(name, 50)?;
        if name.is_none() {
            // The active ones and the latest of each model.
            let mut seen = std::collections::HashSet::new();
            rollouts.retain(|r| seen.insert(r.model.clone()) || r.state.is_active());
        }
        rollouts.retain(|r| self.identity.covers(&r.model));
        Ok(rollouts)
    }

    fn rollout_pause(&self, name: &str, pause: bool) -> ApiResult<Rollout> {
        self.check(Action::Deploy, Some(name))?;
        let message = if pause {
            "paused by an operator"
        } else {
            "resumed by an operator"
        };
        Ok(self.registry.pause_rollout(name, pause, message, self.actor())?)
    }

    fn rollout_finish(&self, name: &str, how: Finish) -> ApiResult<Rollout> {
        self.check(Action::Release, Some(name))?;
        let r = self.active(name)?;
        let (state, message) = match how {
            Finish::Promote => (RolloutState::Succeeded, "promoted by an operator"),
            Finish::Abort => (RolloutState::Aborted, "aborted by an operator"),
        };
        Ok(self.registry.finish_rollout(r.id, state, message, self.actor())?)
    }

    fn rollout_rollback(&self, name: &str) -> ApiResult<RolledBack> {
        self.check(Action::Release, Some(name))?;
        Ok(match self.registry.active_rollout(name)? {
            Some(r) => RolledBack::Rollout {
                rollout: Box::new(self.registry.finish_rollout(
                    r.id,
                    RolloutState::RolledBack,
                    "rolled back by an operator",
                    self.actor(),
                )?),
            },
            None => {
                let fm = self.registry.revert_to_previous(name, self.actor())?;
                RolledBack::Reverted {
                    stable: fm.stable,
                    previous: fm.previous,
                }
            }
        })
    }

    fn rollout_policy(&self, name: &str, plan: Option<PlanOverrides>) -> ApiResult<Option<RolloutPlan>> {
        self.check(Action::Release, Some(name))?;
        match plan {
            None => {
                self.registry.set_rollout_policy(name, None, self.actor())?;
                Ok(None)
            }
            Some(overrides) => {
                let base = self
                    .registry
                    .rollout_policy(name)?
                    .unwrap_or_else(|| self.default_policy.clone());
                let plan = overrides.apply(base)?;
                self.registry
                    .set_rollout_policy(name, Some(&plan), self.actor())?;
                Ok(Some(plan))
            }
        }
    }

    fn fleet_status(&self) -> ApiResult<FleetStatus> {
        self.check(Action::Read, None)?;
        Ok(FleetStatus {
            generation: self.registry.routing_generation()?,
            nodes: self.registry.nodes()?,
            rollouts: self.registry.active_rollouts()?,
        })
    }

    fn add_node(&self, name: &str, url: &str) -> ApiResult<bool> {
        self.check(Action::Administer, None)?;
        Ok(self
            .registry
            .upsert_node(name, url, NodeSource::Config, self.actor())?)
    }

    fn remove_node(&self, name: &str) -> ApiResult<bool> {
        self.check(Action::Administer, None)?;
        Ok(self.registry.remove_node(name, self.actor())?)
    }

    fn reset_node(&self, name: &str) -> ApiResult<kiln_registry::node_reset::NodeReset> {
        self.check(Action::Administer, None)?;
        Ok(self.registry.request_node_reset(name, self.actor())?)
    }

    fn gitops(&self, toml: &str, apply: bool) -> ApiResult<Vec<ChangeView>> {
        self.check(Action::Read, None)?;
        let file = gitops::parse(toml).map_err(|e| ApiError::Invalid(format!("{e:#}")))?;
        let planned = gitops::plan(&self.registry, &file).map_err(internal)?;
        if !apply {
            return Ok(planned.iter().map(change_view).collect());
        }
        self.check(Action::Release, None)?;
        if planned.iter().any(|c| c.model().is_none()) {
            self.check(Action::Administer, None).map_err(|e| {
                ApiError::Denied(format!("{e}: the file adds, changes or removes fleet nodes"))
            })?;
        }
        let applied = gitops::apply(&self.registry, &file, self.actor()).map_err(internal)?;
        Ok(applied.iter().map(change_view).collect())
    }

    fn create_token(&self, new: &NewToken) -> ApiResult<IssuedView> {
        self.check(Action::Administer, None)?;
        Ok(self.registry.create_token(new, self.actor())?.into())
    }

    fn tokens(&self) -> ApiResult<Vec<TokenView>> {
        self.check(Action::Administer, None)?;
        let now = kiln_types::format::unix_now() as u64;
        Ok(self
            .registry
            .tokens()?
            .into_iter()
            .map(|(info, expires)| TokenView {
                state: info.state(now, expires).to_string(),
                info,
            })
            .collect())
    }

    fn revoke_token(&self, name: &str) -> ApiResult<TokenInfo> {
        self.check(Action::Administer, None)?;
        Ok(self.registry.revoke_token(name, self.actor())?)
    }
}

/// A GitOps failure: the registry's own errors keep their kind, anything else (a file that
/// names a missing version, say) is invalid input.
fn internal(e: anyhow::Error) -> ApiError {
    match e.downcast::<kiln_registry::RegistryError>() {
        Ok(e) => e.into(),
        Err(e) => ApiError::Invalid(format!("{e:#}")),
    }
}
