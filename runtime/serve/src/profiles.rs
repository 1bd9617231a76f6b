//! What each served version sees and says, for drift (issue 14): per model version, one
//! `TableProfile` of its input features and one of its output columns per minute of
//! traffic, kept for [`RETENTION`] and merged on demand (`since`). Cache hits count: they
//! are traffic the model's answers were given for.
//!
//! Columns are laid out by `kiln_monitor::model` (the same on every host).
//!
//! Memory: live windows are smaller than a reference (see [`live_config`]): per column and
//! minute, 512 values (4 KiB) or a KLL sketch of k = 256, plus at most 21 value counts; at
//! most 60 windows × (64 + 64) columns per version. In the soak (the MLP, 16 columns, a
//! few thousand requests a second) a node's RSS grew about 0.4 MiB a minute while the
//! windows filled.

use kiln_monitor::model::ModelProfile;
pub use kiln_monitor::model::VersionProfile;
use kiln_monitor::profile::ProfileConfig;
use kiln_types::Tensor;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use kiln_monitor::model::RETENTION;
const WINDOW_SECONDS: u64 = 60;

/// The profile sizes of a live one-minute window: 512 exact values per column (a quiet
/// model's minute is exact), then a KLL sketch of k = 256 (0.9 % rank error at most,
/// ~6 KiB): the reference side keeps the larger defaults.
pub fn live_config() -> ProfileConfig {
    ProfileConfig {
        exact_capacity: 512,
        kll_k: 256,
    }
}

/// The merged profiles of a version over a span of time.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Inputs and outputs.
    pub profile: ModelProfile,
    /// Start of the oldest window merged (unix seconds).
    pub from: u64,
}

struct Window {
    minute: u64,
    profile: ModelProfile,
}

/// One version's windows.
#[derive(Default)]
pub struct VersionProfiles {
    windows: Mutex<VecDeque<Window>>,
    /// Tensors that did not fit the columns set by the first request (a dynamic shape
    /// that changed); counted, not profiled.
    pub skipped: std::sync::atomic::AtomicU64,
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl VersionProfiles {
    fn with_window<R>(&self, f: impl FnOnce(&mut Window) -> R) -> R {
        let minute = now_seconds() / WINDOW_SECONDS;
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.back().is_none_or(|w| w.minute != minute) {
            windows.push_back(Window {
                minute,
                profile: ModelProfile::default(),
            });
            let keep = RETENTION.as_secs() / WINDOW_SECONDS;
            while windows.front().is_some_and(|w| w.minute + keep <= minute) {
                windows.pop_front();
            }
        }
        let window = windows.back_mut().expect("a window was just ensured");
        f(window)
    }

    /// Records a request's inputs.
    pub fn observe_inputs(&self, inputs: &[Tensor]) {
        if self
            .with_window(|w| w.profile.observe_inputs(inputs, live_config()))
            .is_err()
        {
            self.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Records a request's outputs.
    pub fn observe_outputs(&self, outputs: &[Tensor]) {
        if self
            .with_window(|w| w.profile.observe_outputs(outputs, live_config()))
            .is_err()
        {
            self.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The windows of the last `since` merged; `None` without traffic in that span.
    pub fn snapshot(&self, since: Duration) -> Option<Snapshot> {
        let oldest = now_seconds().saturating_sub(since.as_secs()) / WINDOW_SECONDS;
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut merged: Option<Snapshot> = None;
        for w in windows.iter().filter(|w| w.minute >= oldest) {
            match &mut merged {
                // Windows of another layout (a dynamic shape changed) cannot merge: the
                // latest layout's windows are kept.
                Some(m) => {
                    if m.profile.merge(&w.profile).is_err() {
                        *m = Snapshot {
                            profile: w.profile.clone(),
                            from: w.minute * WINDOW_SECONDS,
                        };
                    }
                }
                None => {
                    merged = Some(Snapshot {
                        profile: w.profile.clone(),
                        from: w.minute * WINDOW_SECONDS,
                    })
                }
            }
        }
        merged.filter(|m| m.profile.inputs.is_some())
    }

    /// Whether every window is older than the retention (nothing left to ask about).
    fn expired(&self) -> bool {
        let keep = RETENTION.as_secs() / WINDOW_SECONDS;
        let minute = now_seconds() / WINDOW_SECONDS;
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.back().is_none_or(|w| w.minute + keep <= minute)
    }
}

/// Every version's profiles, by (model, version).
#[derive(Default)]
pub struct Profiles {
    /// By model, then version: a request's lookup borrows the model name (no allocation).
    versions: RwLock<HashMap<String, HashMap<u64, Arc<VersionProfiles>>>>,
}

impl Profiles {
    /// The profiles of `model`/`version`, created on first use.
    pub fn version(&self, model: &str, version: u64) -> Arc<VersionProfiles> {
        if let Some(p) = self.get(model, version) {
            return p;
        }
        self.versions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(model.to_string())
            .or_default()
            .entry(version)
            .or_default()
            .clone()
    }

    /// The profiles of `model`/`version` if it had traffic.
    pub fn get(&self, model: &str, version: u64) -> Option<Arc<VersionProfiles>> {
        self.versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .and_then(|versions| versions.get(&version))
            .cloned()
    }

    /// Every version with traffic in the last `since`, its windows merged.
    pub fn all(&self, since: Duration) -> Vec<VersionProfile> {
        let versions: Vec<(String, u64, Arc<VersionProfiles>)> = self
            .versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|(model, versions)| versions.iter().map(|(v, p)| (model.clone(), *v, p.clone())))
            .collect();
        let mut out: Vec<VersionProfile> = versions
            .into_iter()
            .filter_map(|(model, version, p)| {
                p.snapshot(since).map(|s| VersionProfile {
                    model,
                    version,
                    from: s.from,
                    profile: s.profile,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));
        out
    }

    /// Forgets versions with no window left in the retention.
    pub fn prune(&self) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        for by_version in versions.values_mut() {
            by_version.retain(|_, p| !p.expired());
        }
        versions.retain(|_, by_version| !by_version.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_monitor::model::MAX_COLUMNS;

    #[test]
    fn inputs_and_outputs_are_profiled_by_position_and_merged_over_windows() {
        let p = VersionProfiles::default();
        p.observe_inputs(&[Tensor::from_f32("x", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]);
        p.observe_inputs(&[Tensor::from_f32("x", &[1, 3], &[7.0, 8.0, 9.0])]);
        p.observe_outputs(&[
            Tensor::from_f32("label", &[3], &[0.0, 1.0, 1.0]),
            Tensor::from_f32("probabilities", &[3, 2], &[0.1, 0.9, 0.2, 0.8, 0.3, 0.7]),
        ]);
        let s = p.snapshot(Duration::from_secs(60)).unwrap().profile;
        let inputs = s.inputs.as_ref().unwrap();
        assert_eq!(inputs.names().collect::<Vec<_>>(), ["f0", "f1", "f2"]);
        assert_eq!(inputs.rows(), 3);
        let f1 = inputs.column("f1").unwrap();
        assert_eq!((f1.min(), f1.max(), f1.count()), (Some(2.0), Some(8.0), 3));
        let outputs = s.outputs.unwrap();
        assert_eq!(
            outputs.names().collect::<Vec<_>>(),
            ["label", "probabilities[0]", "probabilities[1]"]
        );
        assert_eq!(
            outputs.column("probabilities[1]").unwrap().max(),
            Some(0.9f32 as f64)
        );
        // A request of another width is counted, not mixed in.
        p.observe_inputs(&[Tensor::from_f32("x", &[1, 2], &[1.0, 2.0])]);
        assert_eq!(p.skipped.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(p.snapshot(Duration::from_secs(60)).unwrap().profile.rows(), 3);
    }

    #[test]
    fn wide_inputs_are_cut_to_the_first_columns() {
        let p = VersionProfiles::default();
        let values: Vec<f32> = (0..2 * 100).map(|i| i as f32).collect();
        p.observe_inputs(&[Tensor::from_f32("pixels", &[2, 100], &values)]);
        let s = p.snapshot(Duration::from_secs(60)).unwrap().profile;
        let inputs = s.inputs.unwrap();
        assert_eq!(inputs.len(), MAX_COLUMNS);
        let last = inputs.column(&format!("f{}", MAX_COLUMNS - 1)).unwrap();
        assert_eq!((last.min(), last.max()), (Some(63.0), Some(163.0)));
    }

    #[test]
    fn a_version_without_traffic_has_no_snapshot_and_profiles_are_shared_by_key() {
        let all = Profiles::default();
        assert!(all.get("m", 1).is_none());
        let a = all.version("m", 1);
        assert!(a.snapshot(Duration::from_secs(60)).is_none());
        assert!(Arc::ptr_eq(&a, &all.version("m", 1)));
        all.prune();
        assert!(all.get("m", 1).is_none(), "a version with no window is forgotten");
    }
}
