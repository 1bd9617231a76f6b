//! A model version's profile: its input features and its output columns, laid out from
//! the tensors of its calls the same way on every host, so that a reference made by the
//! CLI, a node's live window and the fleet's merge line up column by column.
//!
//! Columns: the features of the model's inputs in order — `f0`, `f1`, … when the model
//! has one input (a reference's feature names map onto them by position), `input[j]` when
//! it has several; outputs are named after the output, `name[k]` when an output has
//! several values per row. At most [`MAX_COLUMNS`] input and [`MAX_COLUMNS`] output
//! columns are profiled (the first ones): an image model's thousands of pixels are no
//! drift signal, and memory stays bounded.

use crate::drift::{self, DriftError, DriftReport};
use crate::profile::{ProfileConfig, ProfileError, TableProfile};
use kiln_types::Tensor;
use serde::{Deserialize, Serialize};

/// Input (and output) columns profiled per model, at most.
pub const MAX_COLUMNS: usize = 64;

/// What a model version saw (inputs) and said (outputs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Input features, once any input was observed.
    pub inputs: Option<TableProfile>,
    /// Output columns, once any output was observed.
    pub outputs: Option<TableProfile>,
}

/// A version's reference: the profile of the data it was trained or validated on (inputs,
/// and the version's own outputs on them), with the feature names to show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Feature names by position (`f0…` in the profile).
    pub features: Vec<String>,
    /// The profile.
    pub profile: ModelProfile,
}

/// One version's profile over a span of time on one host: what a node's
/// `GET /admin/v1/profiles` lists, and what the sync service merges fleet-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionProfile {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: u64,
    /// Start of the oldest minute merged (unix seconds).
    pub from: u64,
    /// Inputs and outputs seen since then.
    pub profile: ModelProfile,
}

/// The answer of `GET /monitor/v1/drift/{model}` (on `kiln serve` and on the sync
/// service): the report, with the span it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftAnswer {
    /// The span asked for, e.g. `15m`.
    pub since: String,
    /// Start of the oldest minute merged (RFC 3339).
    pub window_start: String,
    /// The sync service: the nodes whose traffic is in the report, and the ones that
    /// could not be asked (name and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<FleetCoverage>,
    /// The report.
    #[serde(flatten)]
    pub report: DriftReport,
}

/// Which nodes a fleet-wide drift report covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetCoverage {
    /// Nodes whose profiles were merged (those without traffic included).
    pub answered: Vec<String>,
    /// Nodes that could not be asked, with the reason.
    pub unreachable: Vec<(String, String)>,
}

/// The `kiln_feature_drift_score` series of a report: (feature, method, score) per input
/// feature, and per output column as `output:NAME`.
pub fn gauge_series(report: &DriftReport) -> Vec<(String, &'static str, f64)> {
    report
        .features
        .iter()
        .map(|f| (f.name.clone(), f.method.id(), f.score))
        .chain(
            report
                .outputs
                .iter()
                .map(|o| (format!("output:{}", o.name), o.method.id(), o.score)),
        )
        .collect()
}

/// The one-line summary of a dataset drift alert (`KilnDataDrift`).
pub fn drift_summary(model: &str, version: &str, report: &DriftReport, since: &str) -> String {
    let drifted: Vec<&str> = report
        .features
        .iter()
        .filter(|f| f.drift)
        .map(|f| f.name.as_str())
        .collect();
    format!(
        "{model} version {version}: {} of {} input features drifted from the reference over the last {since} ({})",
        drifted.len(),
        report.features.len(),
        drifted.join(", ")
    )
}

/// How long a host keeps its per-minute profiles: the longest `since` a drift query takes.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

/// Parses the `since` of a drift query: a whole number and `s`, `m` or `h`, from 1 s up to
/// [`RETENTION`]; the error says what to write.
pub fn parse_since(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let seconds = match (n.parse::<u64>(), unit) {
        (Ok(n), "s") => Some(n),
        (Ok(n), "m") => n.checked_mul(60),
        (Ok(n), "h") => n.checked_mul(3600),
        _ => None,
    };
    match seconds {
        Some(s) if s > 0 && s <= RETENTION.as_secs() => Ok(std::time::Duration::from_secs(s)),
        Some(_) => Err(format!(
            "since={text}: profiles are kept for the last hour; ask for 1s to 60m"
        )),
        None => Err(format!(
            "since={text} is not a duration: write a number and s, m or h, e.g. since=15m"
        )),
    }
}

/// Values per row of a batch tensor (dimension 0 is the batch).
fn per_row(t: &Tensor) -> usize {
    t.shape
        .split_first()
        .map_or(1, |(_, rest)| rest.iter().product::<u64>() as usize)
}

/// Each tensor with its first column and how many of its values per row are profiled,
/// capped at [`MAX_COLUMNS`] in all.
fn spans_of(tensors: &[Tensor]) -> impl Iterator<Item = (&Tensor, usize, usize)> {
    tensors.iter().scan(0, |first, t| {
        let take = per_row(t).min(MAX_COLUMNS.saturating_sub(*first));
        let span = (t, *first, take);
        *first += take;
        Some(span)
    })
}

/// How a profiled column is named: by its position in a single input (`f3`), by its
/// tensor when that has one value per row (`y`), else by both (`y[3]`).
enum ColumnName<'a> {
    Feature(usize),
    Tensor(&'a str),
    Element(&'a str, usize),
}

impl ColumnName<'_> {
    /// Whether `name` is this column's name, compared without formatting it.
    fn is(&self, name: &str) -> bool {
        match *self {
            ColumnName::Feature(j) => name.strip_prefix('f').is_some_and(|n| is_index(n, j)),
            ColumnName::Tensor(t) => name == t,
            ColumnName::Element(t, j) => name
                .strip_prefix(t)
                .and_then(|n| n.strip_prefix('['))
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| is_index(n, j)),
        }
    }
}

impl std::fmt::Display for ColumnName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnName::Feature(j) => write!(f, "f{j}"),
            ColumnName::Tensor(t) => f.write_str(t),
            ColumnName::Element(t, j) => write!(f, "{t}[{j}]"),
        }
    }
}

/// The profiled columns of `tensors`, in order.
fn column_names(tensors: &[Tensor], inputs: bool) -> impl Iterator<Item = ColumnName<'_>> {
    spans_of(tensors).flat_map(move |(t, _, take)| {
        let width = per_row(t);
        (0..take).map(move |j| match (tensors.len(), inputs, width) {
            (1, true, _) => ColumnName::Feature(j),
            (_, _, 1) => ColumnName::Tensor(&t.name),
            _ => ColumnName::Element(&t.name, j),
        })
    })
}

/// Column names for a list of tensors, capped at [`MAX_COLUMNS`], with each tensor's first
/// column and how many of its values per row are profiled.
pub fn layout(tensors: &[Tensor], inputs: bool) -> (Vec<String>, Vec<(usize, usize)>) {
    (
        column_names(tensors, inputs).map(|c| c.to_string()).collect(),
        spans(tensors),
    )
}

/// Each tensor's first column and how many of its columns are profiled: [`layout`]
/// without the names.
fn spans(tensors: &[Tensor]) -> Vec<(usize, usize)> {
    spans_of(tensors).map(|(_, first, take)| (first, take)).collect()
}

/// Whether `table`'s columns are the ones [`layout`] names for `tensors`, compared without
/// formatting a name (this runs for every profiled call).
fn same_layout(table: &TableProfile, tensors: &[Tensor], inputs: bool) -> bool {
    let mut names = table.names();
    column_names(tensors, inputs).all(|c| names.next().is_some_and(|n| c.is(n))) && names.next().is_none()
}

/// Whether `text` is `j` written as `format!("{j}")` writes it.
fn is_index(text: &str, j: usize) -> bool {
    text.parse::<usize>().is_ok_and(|n| n == j) && (text == "0" || !text.starts_with('0'))
}

/// What a profile reads of one tensor: all of it, or the first columns of each row.
#[derive(Debug, Clone, Copy)]
pub struct Cut<'a> {
    tensor: &'a Tensor,
    /// `(width, take)`: the first `take` of each row's `width` values; `None`: whole.
    columns: Option<(usize, usize)>,
}

impl<'a> Cut<'a> {
    /// The tensor cut.
    pub fn tensor(&self) -> &'a Tensor {
        self.tensor
    }

    /// Bytes of data the cut keeps.
    pub fn data_len(&self) -> usize {
        match self.columns {
            None => self.tensor.data.len(),
            Some((width, take)) => self.tensor.data.len() / width * take,
        }
    }

    /// Dimensions of the cut's shape.
    pub fn rank(&self) -> usize {
        match self.columns {
            None => self.tensor.shape.len(),
            Some(_) => 2,
        }
    }

    /// Appends the cut's shape to `shape` and its data to `data` (no other allocation).
    pub fn copy_into(&self, shape: &mut Vec<u64>, data: &mut Vec<u8>) {
        let t = self.tensor;
        match self.columns {
            None => {
                shape.extend_from_slice(&t.shape);
                data.extend_from_slice(&t.data);
            }
            Some((width, take)) => {
                shape.extend([t.shape.first().copied().unwrap_or(1), take as u64]);
                let size = t.element_type.size();
                for row in t.data.chunks_exact(width * size) {
                    data.extend_from_slice(&row[..take * size]);
                }
            }
        }
    }

    /// The cut as a tensor of its own.
    pub fn to_tensor(&self) -> Tensor {
        let (mut shape, mut data) = (
            Vec::with_capacity(self.rank()),
            Vec::with_capacity(self.data_len()),
        );
        self.copy_into(&mut shape, &mut data);
        Tensor {
            name: self.tensor.name.clone(),
            element_type: self.tensor.element_type,
            shape,
            data,
        }
    }
}

/// The part of `tensors` a profile reads: each tensor cut to its profiled columns, so that
/// observing the cuts lays out and records exactly what observing `tensors` would. What
/// a host copies to profile a request elsewhere (off the request path) without copying a
/// wide tensor whole.
pub fn profiled_cuts(tensors: &[Tensor]) -> impl Iterator<Item = Cut<'_>> {
    let every_column = tensors.iter().map(per_row).sum::<usize>() <= MAX_COLUMNS;
    spans_of(tensors).map(move |(tensor, _, take)| {
        let width = per_row(tensor);
        // A tensor cut to one column would be named without its `[0]`: keep it whole.
        let whole = every_column || take == width || take == 1 || tensor.check_len().is_err();
        Cut {
            tensor,
            columns: (!whole).then_some((width, take)),
        }
    })
}

/// Feeds `tensors` into `table` (created with their layout on first use). A call whose
/// layout differs from the table's (a dynamic shape that changed) is refused whole.
fn observe(
    table: &mut Option<TableProfile>,
    tensors: &[Tensor],
    inputs: bool,
    config: ProfileConfig,
) -> Result<(), ProfileError> {
    let (profile, spans) = match table {
        // Every call after the first: the layout is checked without building its names.
        Some(p) if same_layout(p, tensors, inputs) => (p, spans(tensors)),
        Some(p) => {
            return Err(ProfileError::ColumnMismatch {
                expected: p.names().map(str::to_string).collect(),
                found: layout(tensors, inputs).0,
            });
        }
        None => {
            let (names, spans) = layout(tensors, inputs);
            (table.insert(TableProfile::new(names, config)?), spans)
        }
    };
    // Check every tensor first, so a refused call changes nothing.
    for t in tensors {
        t.check_len()
            .map_err(|e| ProfileError::InvalidTensor(e.to_string()))?;
    }
    for (t, &(first, take)) in tensors.iter().zip(&spans) {
        let width = per_row(t);
        if take == 0 {
            continue;
        }
        if take == width {
            profile.observe_tensor(t, first)?;
        } else {
            let cut = Cut {
                tensor: t,
                columns: Some((width, take)),
            };
            profile.observe_tensor(&cut.to_tensor(), first)?;
        }
    }
    Ok(())
}

impl ModelProfile {
    /// Heap bytes of its input and output profiles ([`TableProfile::heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        [&self.inputs, &self.outputs]
            .into_iter()
            .flatten()
            .map(TableProfile::heap_bytes)
            .sum()
    }

    /// Records a call's inputs.
    pub fn observe_inputs(&mut self, tensors: &[Tensor], config: ProfileConfig) -> Result<(), ProfileError> {
        observe(&mut self.inputs, tensors, true, config)
    }

    /// Records a call's outputs.
    pub fn observe_outputs(&mut self, tensors: &[Tensor], config: ProfileConfig) -> Result<(), ProfileError> {
        observe(&mut self.outputs, tensors, false, config)
    }

    /// Adds `other` in; tables of another layout are refused (nothing changes).
    pub fn merge(&mut self, other: &ModelProfile) -> Result<(), ProfileError> {
        let mut merged = self.clone();
        for (mine, theirs) in [
            (&mut merged.inputs, &other.inputs),
            (&mut merged.outputs, &other.outputs),
        ] {
            match (mine.as_mut(), theirs) {
                (Some(m), Some(t)) => m.merge(t)?,
                (None, Some(t)) => *mine = Some(t.clone()),
                (_, None) => {}
            }
        }
        *self = merged;
        Ok(())
    }

    /// Rows of inputs seen.
    pub fn rows(&self) -> u64 {
        self.inputs.as_ref().map_or(0, TableProfile::rows)
    }
}

/// Drift of `current` against `reference`, features shown under `feature_names` (by
/// position; the profile's own `f0…` where none is given). Outputs are compared when both
/// sides have them (prediction drift).
pub fn drift(
    reference: &ModelProfile,
    current: &ModelProfile,
    feature_names: &[String],
) -> Result<DriftReport, DriftError> {
    // The default sizes always validate, so an empty table cannot fail to build.
    let Ok(empty) = TableProfile::new(Vec::<String>::new(), ProfileConfig::default()) else {
        unreachable!("the default profile sizes are valid")
    };
    let (ro, co) = match (&reference.outputs, &current.outputs) {
        (Some(r), Some(c)) => (r, c),
        _ => (&empty, &empty),
    };
    let ri = reference.inputs.as_ref().unwrap_or(&empty);
    let ci = current.inputs.as_ref().unwrap_or(&empty);
    let mut report = drift::report(ri, ci, ro, co)?;
    for (column, name) in report.features.iter_mut().zip(feature_names) {
        column.name = name.clone();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_check_without_names_agrees_with_the_names() {
        let config = ProfileConfig::default();
        let cases: Vec<(Vec<Tensor>, bool)> = vec![
            (vec![Tensor::from_f32("x", &[1, 12], &[0.0; 12])], true),
            (vec![Tensor::from_f32("x", &[1, 12], &[0.0; 12])], false),
            (
                vec![
                    Tensor::from_f32("a", &[1, 2], &[0.0; 2]),
                    Tensor::from_f32("b", &[1], &[0.0]),
                ],
                true,
            ),
            (vec![Tensor::from_f32("y", &[2, 1], &[0.0; 2])], false),
            (vec![Tensor::from_f32("wide", &[1, 70], &[0.0; 70])], false),
        ];
        for (i, (tensors, inputs)) in cases.iter().enumerate() {
            let (names, spans_named) = layout(tensors, *inputs);
            assert_eq!(spans(tensors), spans_named, "case {i}");
            let table = TableProfile::new(names, config).unwrap();
            for (j, (others, other_inputs)) in cases.iter().enumerate() {
                let expected = layout(others, *other_inputs).0 == layout(tensors, *inputs).0;
                assert_eq!(
                    same_layout(&table, others, *other_inputs),
                    expected,
                    "table of case {i}, call of case {j}"
                );
            }
        }
        // `f01` is not `f1`; `x[1` is not `x[1]`.
        let odd = TableProfile::new(vec!["f01".to_string()], config).unwrap();
        assert!(!same_layout(
            &odd,
            &[Tensor::from_f32("x", &[1, 1], &[0.0])],
            true
        ));
        let odd = TableProfile::new(vec!["x[0".to_string(), "x[1]".to_string()], config).unwrap();
        assert!(!same_layout(
            &odd,
            &[Tensor::from_f32("x", &[1, 2], &[0.0; 2])],
            false
        ));
    }

    #[test]
    fn layouts_name_one_inputs_features_by_position_and_several_by_tensor() {
        let one = [Tensor::from_f32("x", &[1, 3], &[0.0; 3])];
        assert_eq!(layout(&one, true).0, ["f0", "f1", "f2"]);
        let two = [
            Tensor::from_f32("a", &[1, 2], &[0.0; 2]),
            Tensor::from_f32("b", &[1], &[0.0]),
        ];
        assert_eq!(layout(&two, true).0, ["a[0]", "a[1]", "b"]);
        assert_eq!(layout(&one, false).0, ["x[0]", "x[1]", "x[2]"]);
        let (names, spans) = layout(&[Tensor::from_f32("img", &[1, 100], &[0.0; 100])], true);
        assert_eq!((names.len(), spans[0]), (MAX_COLUMNS, (0, MAX_COLUMNS)));
    }

    #[test]
    fn the_profiled_part_lays_out_and_records_what_the_whole_tensors_would() {
        let config = ProfileConfig::default();
        let wide: Vec<f32> = (0..2 * 100).map(|i| i as f32).collect();
        let cases = [
            vec![Tensor::from_f32("img", &[2, 100], &wide)],
            vec![
                Tensor::from_f32("a", &[2, 60], &wide[..120]),
                Tensor::from_f32("b", &[2, 10], &wide[..20]),
                Tensor::from_f32("c", &[2, 3], &wide[..6]),
            ],
            vec![
                Tensor::from_f32("x", &[2, 3], &wide[..6]),
                Tensor::from_i64("k", &[1, 2]),
            ],
        ];
        for tensors in cases {
            for inputs in [true, false] {
                let part: Vec<Tensor> = profiled_cuts(&tensors).map(|c| c.to_tensor()).collect();
                assert_eq!(layout(&part, inputs).0, layout(&tensors, inputs).0);
                let bytes: usize = part.iter().map(|t| t.data.len()).sum();
                assert!(bytes <= 2 * MAX_COLUMNS * 8, "{bytes} bytes copied");
                let (mut whole, mut cut) = (ModelProfile::default(), ModelProfile::default());
                if inputs {
                    whole.observe_inputs(&tensors, config).unwrap();
                    cut.observe_inputs(&part, config).unwrap();
                } else {
                    whole.observe_outputs(&tensors, config).unwrap();
                    cut.observe_outputs(&part, config).unwrap();
                }
                assert_eq!(whole, cut);
            }
        }
    }

    #[test]
    fn a_call_of_another_layout_changes_nothing_and_merges_keep_rows() {
        let config = ProfileConfig::default();
        let mut p = ModelProfile::default();
        p.observe_inputs(&[Tensor::from_f32("x", &[2, 2], &[1.0, 2.0, 3.0, 4.0])], config)
            .unwrap();
        assert!(
            p.observe_inputs(&[Tensor::from_f32("x", &[1, 3], &[1.0, 2.0, 3.0])], config)
                .is_err()
        );
        assert_eq!(p.rows(), 2);
        let mut q = ModelProfile::default();
        q.observe_inputs(&[Tensor::from_f32("x", &[1, 2], &[5.0, 6.0])], config)
            .unwrap();
        q.observe_outputs(&[Tensor::from_f32("y", &[1], &[0.5])], config)
            .unwrap();
        p.merge(&q).unwrap();
        assert_eq!(p.rows(), 3);
        assert_eq!(p.outputs.as_ref().map(TableProfile::rows), Some(1));
        let f1 = p.inputs.as_ref().unwrap().column("f1").unwrap();
        assert_eq!((f1.min(), f1.max()), (Some(2.0), Some(6.0)));
    }

    #[test]
    fn drift_shows_the_reference_feature_names_and_compares_outputs_when_both_have_them() {
        let config = ProfileConfig::default();
        let mut reference = ModelProfile::default();
        let mut current = ModelProfile::default();
        // Same inputs on both sides: no drift; outputs only on the reference side.
        let values: Vec<f32> = (0..200).map(|i| (i % 50) as f32 * 0.37).collect();
        for p in [&mut reference, &mut current] {
            p.observe_inputs(&[Tensor::from_f32("x", &[100, 2], &values)], config)
                .unwrap();
        }
        reference
            .observe_outputs(&[Tensor::from_f32("y", &[100], &values[..100])], config)
            .unwrap();
        let names = vec!["sepal".to_string(), "petal".to_string()];
        let report = drift(&reference, &current, &names).unwrap();
        assert_eq!(
            report
                .features
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>(),
            ["sepal", "petal"]
        );
        assert!(report.features.iter().all(|f| !f.drift), "{report:?}");
        assert!(report.outputs.is_empty());
        assert!(!report.dataset_drift);
        assert_eq!(gauge_series(&report).len(), 2);
    }
}
