//! What each served version sees and says, for drift (issue 14): per model version, one
//! `TableProfile` of its input features and one of its output columns per minute of
//! traffic, kept for [`RETENTION`] and merged on demand (`since`). Cache hits count: they
//! are traffic the model's answers were given for.
//!
//! Columns are laid out by `kiln_monitor::model` (the same on every host).
//!
//! Windows: one per minute for the current minute and the [`FINE_MINUTES`] before it;
//! older minutes are merged into windows of up to [`COARSE_MINUTES`] (aligned on the
//! clock), so a version keeps at most 16 + 10 windows instead of 60. A `since` of up to 15
//! minutes is answered from minute windows; a longer one may start up to 4 minutes
//! earlier, at the start of a merged window (the answer's `from` says where), and a merged
//! window is dropped once its last minute is past [`RETENTION`].
//!
//! Memory: live windows are smaller than a reference (see [`live_config`]): per column and
//! window, 512 values (4 KiB) or a KLL sketch of k = 256, plus at most 21 value counts; at
//! most 26 windows × (64 + 64) columns per version. A busy window of 16 columns takes about
//! 165 KiB of heap, so a busy version holds about 4 MiB once its hour is full.

use kiln_monitor::model::ModelProfile;
pub use kiln_monitor::model::VersionProfile;
use kiln_monitor::profile::ProfileConfig;
use kiln_types::Tensor;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use kiln_monitor::model::RETENTION;
const WINDOW_SECONDS: u64 = 60;
/// Minutes kept one window per minute.
pub const FINE_MINUTES: u64 = 15;
/// Minutes per window beyond [`FINE_MINUTES`].
pub const COARSE_MINUTES: u64 = 5;

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
    /// First minute with traffic (unix minutes).
    minute: u64,
    /// The minute after the last one merged in.
    end: u64,
    /// Whether minutes were merged into it (past the fine span).
    coarse: bool,
    profile: ModelProfile,
}

/// Starts the window of `minute` if it is new: merges minute windows older than
/// [`FINE_MINUTES`] into their 5-minute windows and drops windows past [`RETENTION`].
fn roll(windows: &mut VecDeque<Window>, minute: u64) {
    if windows.back().is_some_and(|w| w.minute == minute && !w.coarse) {
        return;
    }
    windows.push_back(Window {
        minute,
        end: minute + 1,
        coarse: false,
        profile: ModelProfile::default(),
    });
    let keep = RETENTION.as_secs() / WINDOW_SECONDS;
    let fine_from = minute.saturating_sub(FINE_MINUTES);
    let mut rolled: VecDeque<Window> = VecDeque::with_capacity(windows.len());
    for w in windows.drain(..) {
        if w.end + keep <= minute + 1 {
            continue; // its last minute is past the retention
        }
        if w.coarse || w.minute >= fine_from {
            rolled.push_back(w);
            continue;
        }
        let bucket = w.minute / COARSE_MINUTES;
        match rolled.back_mut() {
            Some(c) if c.coarse && c.minute / COARSE_MINUTES == bucket => {
                // Windows of another layout (a dynamic shape changed) cannot merge: the
                // later layout is kept, as a snapshot does.
                if c.profile.merge(&w.profile).is_err() {
                    c.profile = w.profile;
                    c.minute = w.minute;
                }
                c.end = w.end;
            }
            _ => rolled.push_back(Window { coarse: true, ..w }),
        }
    }
    *windows = rolled;
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
        self.with_window_at(now_seconds() / WINDOW_SECONDS, f)
    }

    fn with_window_at<R>(&self, minute: u64, f: impl FnOnce(&mut Window) -> R) -> R {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        roll(&mut windows, minute);
        let window = windows.back_mut().expect("roll leaves the current window last");
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
        self.snapshot_at(now_seconds(), since)
    }

    fn snapshot_at(&self, now: u64, since: Duration) -> Option<Snapshot> {
        let oldest = now.saturating_sub(since.as_secs()) / WINDOW_SECONDS;
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut merged: Option<Snapshot> = None;
        for w in windows.iter().filter(|w| w.end > oldest) {
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

    /// Heap bytes its windows hold ([`ModelProfile::heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.capacity() * std::mem::size_of::<Window>()
            + windows.iter().map(|w| w.profile.heap_bytes()).sum::<usize>()
    }

    /// Whether every window is older than the retention (nothing left to ask about).
    fn expired(&self) -> bool {
        let keep = RETENTION.as_secs() / WINDOW_SECONDS;
        let minute = now_seconds() / WINDOW_SECONDS;
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.back().is_none_or(|w| w.end + keep <= minute + 1)
    }

    /// How many windows are kept (tests).
    #[cfg(test)]
    fn window_count(&self) -> usize {
        self.windows.lock().unwrap_or_else(|p| p.into_inner()).len()
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

    /// Heap bytes of every version's windows ([`VersionProfiles::heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        versions
            .values()
            .flat_map(HashMap::values)
            .map(|p| p.heap_bytes())
            .sum()
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
    fn minutes_past_the_fine_span_merge_into_five_minute_windows_and_the_hour_is_kept() {
        let p = VersionProfiles::default();
        // One row a minute for two hours, value = its minute, from a 5-aligned minute.
        let start = 28_000_000u64;
        for m in start..start + 120 {
            p.with_window_at(m, |w| {
                w.profile
                    .observe_inputs(
                        &[Tensor::from_f32("x", &[1, 1], &[(m - start) as f32])],
                        live_config(),
                    )
                    .unwrap()
            });
            assert!(
                p.window_count() <= 16 + 10,
                "{} windows at minute {m}",
                p.window_count()
            );
        }
        let now = (start + 119) * WINDOW_SECONDS + 30;
        // since=15m reaches into minute 104 (now is 30 s into minute 119): minute windows.
        let s = p.snapshot_at(now, Duration::from_secs(15 * 60)).unwrap();
        let x = s.profile.inputs.as_ref().unwrap().column("f0").unwrap().clone();
        assert_eq!((x.count(), x.min(), x.max()), (16, Some(104.0), Some(119.0)));
        assert_eq!(s.from, (start + 104) * WINDOW_SECONDS);
        // The hour: every minute still counted once, merged windows included.
        let s = p.snapshot_at(now, Duration::from_secs(3600)).unwrap();
        let x = s.profile.inputs.as_ref().unwrap().column("f0").unwrap().clone();
        assert_eq!((x.count(), x.min(), x.max()), (60, Some(60.0), Some(119.0)));
        // since=20m reaches into minute 99, the last of a merged window (95..99), and takes
        // it whole; `from` says so.
        let s = p.snapshot_at(now, Duration::from_secs(20 * 60)).unwrap();
        let x = s.profile.inputs.as_ref().unwrap().column("f0").unwrap().clone();
        assert_eq!((x.count(), x.min()), (25, Some(95.0)));
        assert_eq!(s.from, (start + 95) * WINDOW_SECONDS);
        // Quiet for an hour: everything expires.
        p.with_window_at(start + 119 + 61, |_| ());
        assert_eq!(p.window_count(), 1, "only the new, empty minute");
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
