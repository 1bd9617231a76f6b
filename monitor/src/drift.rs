//! Data and prediction drift between a reference profile (stored with the model version in
//! the registry) and a live one, by exactly the method Evidently 0.7.23's
//! `DataDriftPreset()` picks for each column by default (`docs/research/monitoring.md` §1):
//!
//! | reference rows | column | unique values, reference ∪ current | method | drift if |
//! |---|---|---|---|---|
//! | ≤ 1000 | numerical | > 5 | `ks` p-value | p ≤ 0.05 |
//! | ≤ 1000 | numerical 3..=5, categorical > 2 | | `chisquare` p-value | p < 0.05 |
//! | ≤ 1000 | any | ≤ 2 | `z` p-value | p < 0.05 |
//! | > 1000 | numerical | > 5 | `wasserstein` (normed by the reference's std) | ≥ 0.1 |
//! | > 1000 | numerical ≤ 5, categorical | | `jensenshannon` distance | ≥ 0.1 |
//!
//! Rows are counted after dropping NaN and ±inf, per column. The column type is Evidently's
//! rule on the **current** data: float columns are numerical; integer columns are
//! categorical with at most 10 unique values, else numerical. (Evidently 0.7.23 classifies
//! unsigned-integer pandas dtypes as "unknown" and skips them, an artefact of
//! `dtype.name.startswith("int")`; here unsigned tensors follow the integer rule.)
//! Every column also gets its PSI (Evidently's `psi` test, same binning) as an extra field.
//!
//! **Dataset drift counts features only**: `dataset_drift` is "at least half of the input
//! features drifted" (Evidently's `drift_share = 0.5`, `share >= 0.5`). Output columns are
//! reported with the same per-column tests as *prediction drift* but do not vote: a model
//! whose inputs are stable while its outputs move is a different alarm than shifted
//! inputs, and Evidently's preset would otherwise let one output column tip a two-feature
//! model into "dataset drift". Evidently counts every column it is given; pass the outputs
//! as features to get its number.
//!
//! Scores are exact (equal to Evidently's to ~1e-12) when both profiles still hold what the
//! method needs (see [`crate::profile`]); otherwise they come from the sketches, within
//! the bounds documented there, and [`ColumnDrift::exact`] says so.

use crate::profile::{ColumnProfile, Distribution, TableProfile, ValueType};
use crate::stats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Dataset drift when at least this share of the features drifted (Evidently's default).
pub const DRIFT_SHARE_THRESHOLD: f64 = 0.5;
/// Reference sizes up to this use the p-value tests, above it the distances (Evidently).
pub const SMALL_REFERENCE_ROWS: u64 = 1000;
/// Integer columns with at most this many unique values are categorical (Evidently's
/// `INTEGER_CARDINALITY_LIMIT`).
pub const INTEGER_CARDINALITY_LIMIT: usize = 10;

/// A drift test, named by Evidently's stattest id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Two-sample Kolmogorov–Smirnov p-value.
    Ks,
    /// Pearson chi-square p-value over the categories.
    Chisquare,
    /// Two-proportion Z-test p-value.
    Z,
    /// Wasserstein-1 distance divided by the reference's population std.
    Wasserstein,
    /// Jensen–Shannon distance (natural log) of the binned shares.
    Jensenshannon,
}

impl Method {
    /// Evidently's stattest id (`"ks"`, `"chisquare"`, ...), as in the JSON.
    pub fn id(self) -> &'static str {
        match self {
            Method::Ks => "ks",
            Method::Chisquare => "chisquare",
            Method::Z => "z",
            Method::Wasserstein => "wasserstein",
            Method::Jensenshannon => "jensenshannon",
        }
    }

    /// The name Evidently shows for the method (its `config.method` when auto-selected).
    pub fn display_name(self) -> &'static str {
        match self {
            Method::Ks => "K-S p_value",
            Method::Chisquare => "chi-square p_value",
            Method::Z => "Z-test p_value",
            Method::Wasserstein => "Wasserstein distance (normed)",
            Method::Jensenshannon => "Jensen-Shannon distance",
        }
    }

    /// Evidently's default threshold: 0.05 for the p-values, 0.1 for the distances.
    pub fn default_threshold(self) -> f64 {
        match self {
            Method::Ks | Method::Chisquare | Method::Z => 0.05,
            Method::Wasserstein | Method::Jensenshannon => 0.1,
        }
    }

    /// Evidently's verdict, with its comparisons: KS `p <= t`, chi-square and Z `p < t`,
    /// distances `score >= t`.
    pub fn detects(self, score: f64, threshold: f64) -> bool {
        match self {
            Method::Ks => score <= threshold,
            Method::Chisquare | Method::Z => score < threshold,
            Method::Wasserstein | Method::Jensenshannon => score >= threshold,
        }
    }
}

/// Evidently's column type, as far as drift is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Float columns, and integer columns with more than 10 unique current values.
    Numerical,
    /// Integer (or boolean) columns with at most 10 unique current values.
    Categorical,
}

/// The drift verdict for one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    /// Feature or output column name.
    pub name: String,
    /// Evidently's type for the column.
    pub kind: ColumnKind,
    /// The test Evidently picks by default.
    pub method: Method,
    /// Its score: a p-value (`ks`, `chisquare`, `z`) or a distance.
    pub score: f64,
    /// Its default threshold.
    pub threshold: f64,
    /// Whether the column drifted, by the method's comparison.
    pub drift: bool,
    /// Population stability index with Evidently's binning (drift by PSI if >= 0.1).
    pub psi: f64,
    /// Whether score and PSI were computed from exact data (else from the sketches).
    pub exact: bool,
}

/// Drift of one model version's inputs and outputs between a reference and a window:
/// the body of `GET /monitor/v1/drift/{model}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Model name, filled in by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Model version, filled in by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Rows in the current window.
    pub rows: u64,
    /// Rows in the reference.
    pub reference_rows: u64,
    /// Whether at least `drift_share_threshold` of the features drifted.
    pub dataset_drift: bool,
    /// Share of features that drifted (0 without features).
    pub drift_share: f64,
    /// 0.5, Evidently's default.
    pub drift_share_threshold: f64,
    /// Input features, in profile order.
    pub features: Vec<ColumnDrift>,
    /// Output columns (prediction drift), in profile order; they do not count towards
    /// `dataset_drift`.
    pub outputs: Vec<ColumnDrift>,
}

/// Which side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The stored reference profile.
    Reference,
    /// The live window.
    Current,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Reference => "reference",
            Side::Current => "current",
        })
    }
}

/// Why drift could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// A column has no finite values on one side (Evidently raises the same).
    #[error(
        "column `{column}` has no finite values in the {side} data, so it has no distribution \
         to compare; wait for traffic that sets it, or profile the reference again"
    )]
    EmptyColumn {
        /// The column.
        column: String,
        /// The side without values.
        side: Side,
    },
    /// Reference and current tables do not have the same columns.
    #[error(
        "the {table} of the reference ({reference:?}) and of the current window ({current:?}) \
         differ; drift compares profiles of one model version"
    )]
    ColumnsMismatch {
        /// `"features"` or `"outputs"`.
        table: &'static str,
        /// Reference column names.
        reference: Vec<String>,
        /// Current column names.
        current: Vec<String>,
    },
    /// Neither side knows its per-value counts (only for profiles this crate cannot build:
    /// a categorical current column always has them).
    #[error("column `{column}` has more than 21 distinct values and no exact values on either side")]
    UnknownCategories {
        /// The column.
        column: String,
    },
}

/// Evidently's type of a column, from the current profile.
pub fn column_kind(current: &ColumnProfile) -> ColumnKind {
    let few = current
        .distinct_count()
        .is_some_and(|n| n <= INTEGER_CARDINALITY_LIMIT);
    if current.value_type() == ValueType::Integer && few {
        ColumnKind::Categorical
    } else {
        ColumnKind::Numerical
    }
}

/// Unique values over reference ∪ current, if at most 21 (`None`: more).
fn union_distinct(reference: &ColumnProfile, current: &ColumnProfile) -> Option<usize> {
    let (r, c) = (reference.distinct_values()?, current.distinct_values()?);
    let mut keys: Vec<f64> = r.iter().chain(c).map(|e| e.0).collect();
    keys.sort_by(f64::total_cmp);
    keys.dedup();
    Some(keys.len())
}

/// Evidently's default method for a column (`_get_default_stattest`).
pub fn default_method(reference: &ColumnProfile, current: &ColumnProfile) -> Method {
    let union = union_distinct(reference, current);
    let at_most = |limit: usize| union.is_some_and(|u| u <= limit);
    match (reference.count() <= SMALL_REFERENCE_ROWS, column_kind(current)) {
        (true, ColumnKind::Numerical) if !at_most(5) => Method::Ks,
        (true, _) if at_most(2) => Method::Z,
        (true, _) => Method::Chisquare,
        (false, ColumnKind::Numerical) if !at_most(5) => Method::Wasserstein,
        (false, _) => Method::Jensenshannon,
    }
}

/// The distance a canary's outputs are judged by against the stable version's (the
/// rollouts' `max_prediction_drift`): Evidently's large-reference choice whatever the row
/// counts, so that one threshold means the same on a quiet model and a busy one:
/// `wasserstein` (normed by the stable side's std) for numerical columns with more than 5
/// unique values, else `jensenshannon`. Both are 0 for equal distributions and grow with
/// the shift; Evidently flags either at 0.1.
pub fn distance_method(reference: &ColumnProfile, current: &ColumnProfile) -> Method {
    let few = union_distinct(reference, current).is_some_and(|u| u <= 5);
    match column_kind(current) {
        ColumnKind::Numerical if !few => Method::Wasserstein,
        _ => Method::Jensenshannon,
    }
}

/// Drift of one column by its default method, plus PSI.
pub fn column_drift(
    name: &str,
    reference: &ColumnProfile,
    current: &ColumnProfile,
) -> Result<ColumnDrift, DriftError> {
    column_drift_by(name, reference, current, default_method(reference, current))
}

/// Drift of one column by `method` (its threshold the method's default), plus PSI.
pub fn column_drift_by(
    name: &str,
    reference: &ColumnProfile,
    current: &ColumnProfile,
    method: Method,
) -> Result<ColumnDrift, DriftError> {
    let empty = |side| DriftError::EmptyColumn {
        column: name.to_string(),
        side,
    };
    let rd = reference.distribution().ok_or_else(|| empty(Side::Reference))?;
    let cd = current.distribution().ok_or_else(|| empty(Side::Current))?;
    let kind = column_kind(current);
    let unknown = || DriftError::UnknownCategories {
        column: name.to_string(),
    };
    // Evidently's binning, shared by the Jensen-Shannon score and the PSI.
    let (r_shares, c_shares, shares_exact) =
        binned_shares(reference, current, kind, &rd, &cd).ok_or_else(unknown)?;
    let (score, score_exact) = match method {
        Method::Z => {
            let bins = value_bins(reference, current, &rd, &cd).ok_or_else(unknown)?;
            (z_test(&bins), bins.exact)
        }
        Method::Chisquare => {
            let bins = value_bins(reference, current, &rd, &cd).ok_or_else(unknown)?;
            let k_norm = cd.count() as f64 / rd.count() as f64;
            let expected: Vec<f64> = bins.reference.iter().map(|&r| r * k_norm).collect();
            (stats::chisquare_pvalue(&bins.current, &expected), bins.exact)
        }
        Method::Ks => {
            let d = ks_statistic(&rd, &cd);
            (
                stats::ks_2samp_pvalue(d, rd.count(), cd.count()),
                rd.is_exact() && cd.is_exact(),
            )
        }
        Method::Wasserstein => {
            let w = stats::wasserstein_distance(&rd.sample(), &cd.sample());
            (w / reference.std().max(0.001), rd.is_exact() && cd.is_exact())
        }
        Method::Jensenshannon => (stats::jensenshannon_distance(&r_shares, &c_shares), shares_exact),
    };
    let (mut r, mut c) = (r_shares, c_shares);
    stats::fill_zeroes(&mut r);
    stats::fill_zeroes(&mut c);
    let threshold = method.default_threshold();
    Ok(ColumnDrift {
        name: name.to_string(),
        kind,
        method,
        score,
        threshold,
        drift: method.detects(score, threshold),
        psi: stats::psi(&r, &c),
        exact: score_exact && shares_exact,
    })
}

/// Drift of every feature and output column, and dataset drift over the features.
pub fn report(
    reference_features: &TableProfile,
    current_features: &TableProfile,
    reference_outputs: &TableProfile,
    current_outputs: &TableProfile,
) -> Result<DriftReport, DriftError> {
    let features = table_drift("features", reference_features, current_features)?;
    let outputs = table_drift("outputs", reference_outputs, current_outputs)?;
    let drifted = features.iter().filter(|f| f.drift).count();
    let drift_share = if features.is_empty() {
        0.0
    } else {
        drifted as f64 / features.len() as f64
    };
    Ok(DriftReport {
        model: None,
        version: None,
        rows: current_features.rows().max(current_outputs.rows()),
        reference_rows: reference_features.rows().max(reference_outputs.rows()),
        dataset_drift: !features.is_empty() && drift_share >= DRIFT_SHARE_THRESHOLD,
        drift_share,
        drift_share_threshold: DRIFT_SHARE_THRESHOLD,
        features,
        outputs,
    })
}

fn table_drift(
    table: &'static str,
    reference: &TableProfile,
    current: &TableProfile,
) -> Result<Vec<ColumnDrift>, DriftError> {
    if !reference.names().eq(current.names()) {
        return Err(DriftError::ColumnsMismatch {
            table,
            reference: reference.names().map(str::to_string).collect(),
            current: current.names().map(str::to_string).collect(),
        });
    }
    reference
        .columns()
        .zip(current.columns())
        .map(|((name, r), (_, c))| column_drift(name, r, c))
        .collect()
}

/// Per-category counts on both sides over the union of categories, in ascending order of
/// value (an estimated side adds a last bin for the values only it has).
struct ValueBins {
    reference: Vec<f64>,
    current: Vec<f64>,
    exact: bool,
}

/// One bin per distinct value (Evidently's `get_binned_data` for categorical columns and
/// numerical ones with ≤ 20 unique reference values). Exact when both sides know their
/// counts; when one side has lost them (> 21 distinct values, past `exact_capacity`), its
/// mass on the other side's values comes from its sketch and the rest goes to one extra
/// bin, which the Jensen–Shannon distance cannot tell from many bins.
fn value_bins(
    reference: &ColumnProfile,
    current: &ColumnProfile,
    rd: &Distribution,
    cd: &Distribution,
) -> Option<ValueBins> {
    match (reference.value_counts(), current.value_counts()) {
        (Some(r), Some(c)) => {
            let mut merged: BTreeMap<u64, (f64, f64, f64)> = BTreeMap::new();
            // Key by the order-preserving bit pattern so the map sorts like the values.
            for (v, n) in r {
                merged.entry(order_key(v)).or_insert((v, 0.0, 0.0)).1 += n as f64;
            }
            for (v, n) in c {
                merged.entry(order_key(v)).or_insert((v, 0.0, 0.0)).2 += n as f64;
            }
            Some(ValueBins {
                reference: merged.values().map(|e| e.1).collect(),
                current: merged.values().map(|e| e.2).collect(),
                exact: true,
            })
        }
        (Some(r), None) => {
            let (known, estimated) = estimate_on(&r, cd);
            Some(ValueBins {
                reference: known,
                current: estimated,
                exact: false,
            })
        }
        (None, Some(c)) => {
            let (known, estimated) = estimate_on(&c, rd);
            Some(ValueBins {
                reference: estimated,
                current: known,
                exact: false,
            })
        }
        (None, None) => None,
    }
}

/// The counts of `known` and the sketched side's estimated counts at the same values,
/// plus a last bin with the sketched side's remaining mass.
fn estimate_on(known: &[(f64, u64)], other: &Distribution) -> (Vec<f64>, Vec<f64>) {
    let mut counts: Vec<f64> = known.iter().map(|e| e.1 as f64).collect();
    let mut estimated: Vec<f64> = known
        .iter()
        .map(|e| (other.count_at_most(e.0) - other.count_below(e.0)).max(0.0))
        .collect();
    let rest = (other.count() as f64 - estimated.iter().sum::<f64>()).max(0.0);
    counts.push(0.0);
    estimated.push(rest);
    (counts, estimated)
}

fn order_key(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 { !bits } else { bits | (1 << 63) }
}

/// Evidently's Z-test over the two categories (`z_stattest.py`).
fn z_test(bins: &ValueBins) -> f64 {
    let (n1, n2): (f64, f64) = (bins.reference.iter().sum(), bins.current.iter().sum());
    let present = |counts: &[f64]| counts.iter().filter(|&&c| c > 0.0).count();
    // Both sides one and the same value: p = 1 by definition (the z statistic would be 0/0).
    if present(&bins.reference) == 1 && present(&bins.current) == 1 {
        let first = |counts: &[f64]| counts.iter().position(|&c| c > 0.0);
        if first(&bins.reference) == first(&bins.current) {
            return 1.0;
        }
    }
    // Values equal to the smallest key map to 0, all others to 1: p is the share of "others".
    let (r0, c0) = (
        bins.reference.first().copied().unwrap_or(0.0),
        bins.current.first().copied().unwrap_or(0.0),
    );
    stats::proportions_z_test_pvalue((n1 - r0) / n1, n1, (n2 - c0) / n2, n2)
}

/// `get_binned_data`: Sturges histogram shares for numerical columns with more than 20
/// unique reference values, else one bin per value; plus whether they are exact.
fn binned_shares(
    reference: &ColumnProfile,
    current: &ColumnProfile,
    kind: ColumnKind,
    rd: &Distribution,
    cd: &Distribution,
) -> Option<(Vec<f64>, Vec<f64>, bool)> {
    let many_reference_values = reference.distinct_count().is_none_or(|n| n > 20);
    if kind == ColumnKind::Numerical && many_reference_values {
        // pandas concatenates int with int as int64, which makes numpy widen bins to >= 1.
        let integer =
            reference.value_type() == ValueType::Integer && current.value_type() == ValueType::Integer;
        let edges = stats::sturges_bin_edges(
            rd.min().min(cd.min()),
            rd.max().max(cd.max()),
            rd.count() + cd.count(),
            integer,
        );
        return Some((
            histogram_shares(rd, &edges),
            histogram_shares(cd, &edges),
            rd.is_exact() && cd.is_exact(),
        ));
    }
    let bins = value_bins(reference, current, rd, cd)?;
    let (nr, nc) = (rd.count() as f64, cd.count() as f64);
    Some((
        bins.reference.iter().map(|&x| x / nr).collect(),
        bins.current.iter().map(|&x| x / nc).collect(),
        bins.exact,
    ))
}

/// `np.histogram(values, edges)[0] / len(values)` from a distribution: half-open bins, the
/// last one closed.
fn histogram_shares(d: &Distribution, edges: &[f64]) -> Vec<f64> {
    let last = edges.len().saturating_sub(1);
    let cum: Vec<f64> = edges
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            if i == last {
                d.count_at_most(e)
            } else {
                d.count_below(e)
            }
        })
        .collect();
    let n = d.count() as f64;
    cum.windows(2).map(|w| (w[1] - w[0]).max(0.0) / n).collect()
}

/// The KS statistic of two distributions: scipy's exact computation when both hold their
/// values, else the largest ECDF gap over both sides' samples (values or quantile grid),
/// each side answering from its own sketch.
fn ks_statistic(rd: &Distribution, cd: &Distribution) -> f64 {
    let (rs, cs) = (rd.sample(), cd.sample());
    if rd.is_exact() && cd.is_exact() {
        return stats::ks_statistic(&rs, &cs);
    }
    let (nr, nc) = (rd.count() as f64, cd.count() as f64);
    rs.iter()
        .chain(cs.iter())
        .map(|&x| (rd.count_at_most(x) / nr - cd.count_at_most(x) / nc).abs())
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::profile::ProfileConfig;

    fn floats(values: impl IntoIterator<Item = f64>) -> ColumnProfile {
        let mut p = ColumnProfile::default();
        values.into_iter().for_each(|v| p.observe_float(v));
        p
    }

    fn ints(values: impl IntoIterator<Item = i64>) -> ColumnProfile {
        let mut p = ColumnProfile::default();
        values.into_iter().for_each(|v| p.observe_int(v));
        p
    }

    fn spread(n: usize) -> impl Iterator<Item = f64> {
        (0..n).map(|i| ((i * 7919) % 1000) as f64 / 1000.0)
    }

    #[test]
    fn methods_serialize_as_evidently_stattest_ids() {
        let ids: Vec<String> = [
            Method::Ks,
            Method::Chisquare,
            Method::Z,
            Method::Wasserstein,
            Method::Jensenshannon,
        ]
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
        assert_eq!(
            ids,
            [
                "\"ks\"",
                "\"chisquare\"",
                "\"z\"",
                "\"wasserstein\"",
                "\"jensenshannon\""
            ]
        );
        assert_eq!(
            serde_json::from_str::<Method>("\"wasserstein\"").unwrap(),
            Method::Wasserstein
        );
    }

    #[test]
    fn verdicts_compare_like_evidently_at_the_threshold() {
        // KS uses <=, chi-square and Z use <, the distances >=.
        assert!(Method::Ks.detects(0.05, 0.05));
        assert!(!Method::Chisquare.detects(0.05, 0.05));
        assert!(!Method::Z.detects(0.05, 0.05));
        assert!(Method::Wasserstein.detects(0.1, 0.1));
        assert!(Method::Jensenshannon.detects(0.1, 0.1));
        assert!(!Method::Jensenshannon.detects(0.0999, 0.1));
    }

    #[test]
    fn default_method_follows_evidentlys_selection_table() {
        let many = floats(spread(1000));
        let many_more = floats(spread(1001));
        // Numerical, > 5 values: KS up to 1000 reference rows, Wasserstein from 1001.
        assert_eq!(default_method(&many, &many), Method::Ks);
        assert_eq!(default_method(&many_more, &many), Method::Wasserstein);
        // Float with 3..=5 values: chi-square / Jensen-Shannon; with <= 2: Z / Jensen-Shannon.
        let five = floats((0..1000).map(|i| (i % 5) as f64));
        let two = floats((0..1000).map(|i| (i % 2) as f64));
        assert_eq!(default_method(&five, &five), Method::Chisquare);
        assert_eq!(default_method(&two, &two), Method::Z);
        let two_big = floats((0..1001).map(|i| (i % 2) as f64));
        assert_eq!(default_method(&two_big, &two), Method::Jensenshannon);
        // The union counts: 2 values each, 4 together.
        let other_two = floats((0..1000).map(|i| (i % 2 + 2) as f64));
        assert_eq!(default_method(&two, &other_two), Method::Chisquare);
        // Integer with <= 10 current values: categorical (chi-square even with 8 values).
        let eight = ints((0..1000).map(|i| i % 8));
        assert_eq!(column_kind(&eight), ColumnKind::Categorical);
        assert_eq!(default_method(&eight, &eight), Method::Chisquare);
        // ... but the same values as floats are numerical with > 5 values: KS.
        let eight_f = floats((0..1000).map(|i| (i % 8) as f64));
        assert_eq!(default_method(&eight_f, &eight_f), Method::Ks);
        // Integer with 11 current values: numerical.
        let eleven = ints((0..1000).map(|i| i % 11));
        assert_eq!(column_kind(&eleven), ColumnKind::Numerical);
        assert_eq!(default_method(&eleven, &eleven), Method::Ks);
        // The type comes from the current side only.
        assert_eq!(default_method(&eleven, &eight), Method::Chisquare);
        // Rows are counted after dropping NaN: 1100 rows with 100 NaN are 1000 -> still KS.
        let nan = floats(
            spread(1100)
                .enumerate()
                .map(|(i, v)| if i % 11 == 0 { f64::NAN } else { v }),
        );
        assert_eq!(nan.count(), 1000);
        assert_eq!(default_method(&nan, &many), Method::Ks);
    }

    #[test]
    fn an_empty_side_is_a_typed_error() {
        let values = floats(spread(10));
        let all_nan = floats([f64::NAN, f64::INFINITY]);
        assert_eq!(
            column_drift("x", &all_nan, &values).unwrap_err(),
            DriftError::EmptyColumn {
                column: "x".into(),
                side: Side::Reference
            }
        );
        assert_eq!(
            column_drift("x", &values, &ColumnProfile::default()).unwrap_err(),
            DriftError::EmptyColumn {
                column: "x".into(),
                side: Side::Current
            }
        );
        let a = TableProfile::new(["x"], ProfileConfig::default()).unwrap();
        let b = TableProfile::new(["y"], ProfileConfig::default()).unwrap();
        assert!(matches!(
            report(&a, &b, &a, &a),
            Err(DriftError::ColumnsMismatch {
                table: "features",
                ..
            })
        ));
    }

    #[test]
    fn one_constant_value_on_both_sides_is_no_drift() {
        // Evidently: Z-test p = 1 for one identical value; Jensen-Shannon 0 with > 1000 rows.
        let c = ints(std::iter::repeat_n(7, 500));
        let d = column_drift("c", &c, &c).unwrap();
        assert_eq!((d.method, d.score, d.drift, d.psi), (Method::Z, 1.0, false, 0.0));
        let big = ints(std::iter::repeat_n(7, 1500));
        let d = column_drift("c", &big, &c).unwrap();
        assert_eq!((d.method, d.score, d.drift), (Method::Jensenshannon, 0.0, false));
    }

    #[test]
    fn sketched_categories_are_estimated_and_flagged() {
        // Reference: 2000 ints over 31 values (past the map, and sketched at capacity 64);
        // current: 6 values, so categorical -> Jensen-Shannon over the current's categories
        // plus one bin for the rest of the reference.
        let reference: Vec<i64> = (0..2000).map(|i| (i * 13) % 31).collect();
        let current: Vec<i64> = (0..1500).map(|i| (i * 7) % 6).collect();
        let build = |values: &[i64], exact_capacity| {
            let mut p = ColumnProfile::new(ProfileConfig {
                exact_capacity,
                ..ProfileConfig::default()
            })
            .unwrap();
            values.iter().for_each(|&v| p.observe_int(v));
            p
        };
        let exact = column_drift("c", &build(&reference, 4096), &build(&current, 4096)).unwrap();
        let sketched = column_drift("c", &build(&reference, 64), &build(&current, 64)).unwrap();
        assert_eq!(
            (exact.method, sketched.method),
            (Method::Jensenshannon, Method::Jensenshannon)
        );
        assert!(exact.exact && !sketched.exact);
        assert!(exact.drift && sketched.drift);
        assert!(
            (exact.score - sketched.score).abs() < 0.01,
            "{} vs {}",
            exact.score,
            sketched.score
        );
    }

    #[test]
    fn dataset_drift_counts_features_only() {
        let config = ProfileConfig::default();
        let mut rf = TableProfile::new(["a", "b"], config).unwrap();
        let mut cf = rf.clone();
        let mut ro = TableProfile::new(["score"], config).unwrap();
        let mut co = ro.clone();
        for (i, v) in spread(400).enumerate() {
            rf.observe_row(&[v, v]).unwrap();
            // Feature a shifts by half its range, b does not.
            cf.observe_row(&[v + if i % 2 == 0 { 0.5 } else { 0.0 }, v])
                .unwrap();
            ro.observe_row(&[v]).unwrap();
            co.observe_row(&[v * 3.0]).unwrap();
        }
        let r = report(&rf, &cf, &ro, &co).unwrap();
        assert_eq!((r.rows, r.reference_rows), (400, 400));
        assert!(r.features[0].drift && !r.features[1].drift && r.outputs[0].drift);
        // One of two features: share 0.5 >= 0.5 -> dataset drift; the output does not vote.
        assert_eq!((r.drift_share, r.dataset_drift), (0.5, true));
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "rows",
            "reference_rows",
            "dataset_drift",
            "drift_share",
            "drift_share_threshold",
            "features",
            "outputs",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert!(json.get("model").is_none());
        assert_eq!(json["features"][0]["method"], "ks");
        assert_eq!(json["outputs"][0]["name"], "score");
        let r = report(&rf, &rf, &ro, &co).unwrap();
        assert_eq!((r.drift_share, r.dataset_drift), (0.0, false));
        assert!(r.outputs[0].drift, "prediction drift is still reported");
    }
}
