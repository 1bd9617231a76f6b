//! Mergeable, bounded-memory profiles of what a model sees and says: one [`ColumnProfile`]
//! per input feature or output column, grouped in a [`TableProfile`], kept per model
//! version and time window on the serving path and merged across windows and nodes.
//!
//! A column profile holds exactly what Evidently 0.7.23's default drift tests need
//! (`docs/research/monitoring.md` §1):
//!
//! - the number of finite values (`count`) and of NaN/±inf values (`missing`, which
//!   Evidently drops before every test);
//! - `(n, mean, M2)` merged by Chan's parallel formula, for the reference's population std
//!   that normalises the Wasserstein distance;
//! - the source [`ValueType`]: integer tensors make a column a candidate for Evidently's
//!   "integer with at most 10 unique values is categorical" rule, floats never are;
//! - an exact value→count map of up to [`DISTINCT_CAPACITY`] (21) distinct values, after
//!   which it is dropped and marked overflowed;
//! - the values themselves, exactly, up to [`ProfileConfig::exact_capacity`], after which
//!   every value (those kept so far and all later ones) goes into a DataSketches KLL
//!   quantile sketch of parameter [`ProfileConfig::kll_k`].
//!
//! # When results are exact
//!
//! - `count`, `missing`, min and max are always exact; mean and std are exact up to
//!   floating-point rounding (~1e-15 relative).
//! - "how many distinct values, if at most 21" is always exact, so every question the
//!   method selection asks (≤ 2, ≤ 5, ≤ 10 unique; reference > 20 unique) is answered
//!   exactly, whatever the size of the window.
//! - Per-value counts (chi-square, Z-test, and Jensen–Shannon/PSI over one bin per value)
//!   are exact while a column has at most 21 distinct values **or** still holds its values.
//! - The distribution (KS statistic, Wasserstein distance, Sturges histograms for
//!   Jensen–Shannon/PSI) is exact while the column holds its values: at most
//!   `exact_capacity` of them, also after merges whose total fits.
//!
//! # When sketched, and how far off
//!
//! Past `exact_capacity` the distribution comes from the KLL sketch. Its normalised rank
//! error ε (`|F̂(x) − F(x)|`, DataSketches' a-priori bound at 99% confidence) is 0.27% for
//! the default k = 1024 (1.3% at k = 200); measured on 10^4–10^6 normal values the worst
//! error over 2000 points was 0.10–0.19%. Hence, per column: the KS statistic is off by at
//! most ε_ref + ε_cur; each histogram share by at most 2ε; the Wasserstein distance by at
//! most (ε_ref + ε_cur + 1/[`QUANTILE_GRID`])·(max − min). A p-value inherits the error of
//! D through a steep function, so it is reliable in its verdict away from the threshold,
//! not in its digits. KLL compaction is randomised (DataSketches seeds it per thread), so
//! two runs over the same stream may differ within these bounds.
//!
//! # Cost on the serving path
//!
//! Observing a value is a few flops, a scan of at most 21 map entries (none once the map
//! has overflowed) and a push, or a KLL update once sketched; nothing is allocated per
//! value. Measured in release on the 2-core build machine, feeding [batch 64, 10] tensors:
//! 7–8 ns per value while exact, 32–47 ns per value once sketched (the KLL update), plus
//! one fold of the 4096 kept values into the sketch when a column switches.
//!
//! # Memory
//!
//! A column holds either its values (8 bytes each: 32 KiB at the default 4096) or the
//! sketch (~3k retained items: 24 KiB at k = 1024, measured 2350–3000 items for 10^4–10^6
//! values), never both, plus at most 21 (value, count) pairs: under 33 KiB per column per
//! window, and under 44 KiB as JSON (base64).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use datasketches::common::SearchCriteria;
use datasketches::kll::{KllFloat, KllSketch, SortedView};
use kiln_types::{ElementType, Tensor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// How many values a column keeps exactly before it switches to the KLL sketch: 32 KiB,
/// about what the default sketch itself takes, so switching never grows a profile, and
/// enough that any reference of ≤ 1000 rows (the only case where Evidently runs KS) and
/// current windows up to 4096 rows get exact scores.
pub const DEFAULT_EXACT_CAPACITY: usize = 4096;
/// KLL parameter k: 0.27% rank error bound (measured ≤ 0.19%) in ~24 KiB. k = 200 (the
/// DataSketches default) would be 1.3% in ~5 KiB: too coarse next to the 0.1 thresholds of
/// Wasserstein and Jensen–Shannon.
pub const DEFAULT_KLL_K: u16 = 1024;
/// Distinct values a column counts exactly; one more than the largest question asked
/// ("reference has more than 20 unique values?").
pub const DISTINCT_CAPACITY: usize = 21;
/// Points of the quantile grid that stands in for a sketched column's values wherever a
/// sample is needed (Wasserstein distance): its discretisation adds at most
/// 1/`QUANTILE_GRID` of rank error, well under the sketch's own.
pub const QUANTILE_GRID: usize = 8192;
/// Largest `exact_capacity` accepted (8 MiB per column): larger windows belong in the sketch.
pub const MAX_EXACT_CAPACITY: usize = 1 << 20;

/// Sizes of a profile: how many values stay exact, and the KLL sketch's k beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileConfig {
    /// Values kept exactly before switching to the sketch (at most [`MAX_EXACT_CAPACITY`]).
    pub exact_capacity: usize,
    /// KLL parameter k, 8..=65535 (DataSketches' range).
    pub kll_k: u16,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            exact_capacity: DEFAULT_EXACT_CAPACITY,
            kll_k: DEFAULT_KLL_K,
        }
    }
}

impl ProfileConfig {
    /// Checks the sizes, so that building a sketch later cannot fail.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.exact_capacity > MAX_EXACT_CAPACITY {
            return Err(ProfileError::InvalidConfig(format!(
                "exact_capacity {} is above the maximum {MAX_EXACT_CAPACITY}; lower it and let the \
                 KLL sketch take larger windows",
                self.exact_capacity
            )));
        }
        if self.kll_k < 8 {
            return Err(ProfileError::InvalidConfig(format!(
                "kll_k {} is below DataSketches' minimum of 8; use 200..=2048 (default {DEFAULT_KLL_K})",
                self.kll_k
            )));
        }
        Ok(())
    }
}

/// What kind of tensor a column's values came from; Evidently's type inference depends on
/// the pandas dtype, and this is its stand-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Nothing observed yet.
    #[default]
    Unknown,
    /// Only integer or boolean values (I8..I64, U8..U64, BOOL tensors, or
    /// [`ColumnProfile::observe_int`]).
    Integer,
    /// At least one value from a float source (F16/F32/F64 or [`ColumnProfile::observe_float`]).
    Float,
}

impl ValueType {
    /// The type of the union, as pandas types a concatenation: int with float is float.
    pub fn merge(self, other: ValueType) -> ValueType {
        match (self, other) {
            (ValueType::Unknown, t) | (t, ValueType::Unknown) => t,
            (ValueType::Integer, ValueType::Integer) => ValueType::Integer,
            _ => ValueType::Float,
        }
    }
}

/// Why a profile could not be built, fed, merged or read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// The [`ProfileConfig`] is out of range.
    #[error("invalid profile configuration: {0}")]
    InvalidConfig(String),
    /// Two columns of a table have the same name.
    #[error("column `{0}` appears twice; column names of a profile must be unique")]
    DuplicateColumn(String),
    /// Two tables to merge do not have the same columns in the same order.
    #[error(
        "cannot merge profiles with different columns: {expected:?} and {found:?}; \
         profiles merge only within one model version"
    )]
    ColumnMismatch {
        /// This table's column names.
        expected: Vec<String>,
        /// The other table's column names.
        found: Vec<String>,
    },
    /// A row has a different number of values than the table has columns.
    #[error("a row of {found} values was given to a profile of {expected} columns")]
    RowLength {
        /// Columns in the table.
        expected: usize,
        /// Values in the row.
        found: usize,
    },
    /// A tensor has more values per row than there are columns from `first_column` on.
    #[error(
        "tensor `{tensor}` has {per_row} values per row, which do not fit in columns \
         {first_column}.. of a profile of {columns} columns"
    )]
    TensorColumns {
        /// The tensor's name.
        tensor: String,
        /// Column the tensor's first value goes to.
        first_column: usize,
        /// Values per row of the tensor.
        per_row: usize,
        /// Columns in the table.
        columns: usize,
    },
    /// The tensor's data does not match its shape and element type.
    #[error("cannot profile tensor: {0}")]
    InvalidTensor(String),
    /// The KLL sketch refused a merge (different `m`, or more than 2^64 values).
    #[error("cannot merge the quantile sketches: {0}")]
    Sketch(String),
    /// A serialized profile is inconsistent with itself.
    #[error("corrupt profile: {0}")]
    Corrupt(String),
}

type Sketch = KllSketch<KllFloat<f64>>;

/// A mergeable, bounded-memory summary of one column (see the module documentation for
/// what is exact and what is sketched).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ColumnProfileWire", into = "ColumnProfileWire")]
pub struct ColumnProfile {
    config: ProfileConfig,
    value_type: ValueType,
    count: u64,
    missing: u64,
    mean: f64,
    m2: f64,
    distinct: Distinct,
    values: Values,
}

/// The exact value→count map, abandoned past [`DISTINCT_CAPACITY`] distinct values.
#[derive(Debug, Clone, PartialEq, Default)]
struct Distinct {
    entries: Vec<(f64, u64)>,
    overflowed: bool,
}

impl Distinct {
    #[inline]
    fn observe(&mut self, v: f64) {
        if self.overflowed {
            return;
        }
        if let Some(entry) = self.entries.iter_mut().find(|e| e.0 == v) {
            entry.1 += 1;
        } else if self.entries.len() < DISTINCT_CAPACITY {
            if self.entries.capacity() == 0 {
                self.entries.reserve_exact(DISTINCT_CAPACITY);
            }
            self.entries.push((v, 1));
        } else {
            self.overflow();
        }
    }

    fn overflow(&mut self) {
        self.overflowed = true;
        self.entries = Vec::new();
    }

    fn merge(&mut self, other: &Distinct) {
        if self.overflowed {
            return;
        }
        if other.overflowed {
            self.overflow();
            return;
        }
        for &(v, c) in &other.entries {
            if let Some(entry) = self.entries.iter_mut().find(|e| e.0 == v) {
                entry.1 += c;
            } else if self.entries.len() < DISTINCT_CAPACITY {
                self.entries.push((v, c));
            } else {
                self.overflow();
                return;
            }
        }
    }
}

/// The values themselves while they fit, else the sketch; never both.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    Exact(Vec<f64>),
    Sketched(Box<Sketch>),
}

impl Default for ColumnProfile {
    fn default() -> Self {
        ColumnProfile::with_valid_config(ProfileConfig::default())
    }
}

impl ColumnProfile {
    /// An empty profile with these sizes.
    pub fn new(config: ProfileConfig) -> Result<ColumnProfile, ProfileError> {
        config.validate()?;
        Ok(ColumnProfile::with_valid_config(config))
    }

    fn with_valid_config(config: ProfileConfig) -> ColumnProfile {
        ColumnProfile {
            config,
            value_type: ValueType::Unknown,
            count: 0,
            missing: 0,
            mean: 0.0,
            m2: 0.0,
            distinct: Distinct::default(),
            values: Values::Exact(Vec::new()),
        }
    }

    /// Records a value from a float source; NaN and ±inf count as missing.
    #[inline]
    pub fn observe_float(&mut self, v: f64) {
        self.value_type = self.value_type.merge(ValueType::Float);
        self.push(v);
    }

    /// Records a value from an integer source (exact up to 2^53 in magnitude).
    #[inline]
    pub fn observe_int(&mut self, v: i64) {
        self.value_type = self.value_type.merge(ValueType::Integer);
        self.push(v as f64);
    }

    /// The hot path: a few flops, a scan of at most 21 map entries (none once overflowed),
    /// and an amortised push or a KLL update; no allocation per value.
    #[inline]
    fn push(&mut self, v: f64) {
        if !v.is_finite() {
            self.missing += 1;
            return;
        }
        // -0.0 and 0.0 are one value to pandas' nunique/value_counts; keep one key.
        let v = if v == 0.0 { 0.0 } else { v };
        self.count += 1;
        let delta = v - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (v - self.mean);
        self.distinct.observe(v);
        match &mut self.values {
            Values::Exact(buf) if buf.len() < self.config.exact_capacity => buf.push(v),
            Values::Exact(_) => {
                self.fold_into_sketch();
                self.sketch_update(v);
            }
            Values::Sketched(_) => self.sketch_update(v),
        }
    }

    #[inline]
    fn sketch_update(&mut self, v: f64) {
        if let (Values::Sketched(s), Ok(item)) = (&mut self.values, KllFloat::<f64>::new(v)) {
            s.update(item);
        }
    }

    fn new_sketch(&self) -> Sketch {
        // k was checked by ProfileConfig::validate (here and on deserialization); the
        // DataSketches default only stands in if that invariant were ever broken.
        KllSketch::new(self.config.kll_k).unwrap_or_default()
    }

    /// Moves the exact values into a new sketch (once per window, when it fills up).
    fn fold_into_sketch(&mut self) {
        if let Values::Exact(buf) = &self.values {
            let mut sketch = self.new_sketch();
            for item in buf.iter().filter_map(|&v| KllFloat::<f64>::new(v).ok()) {
                sketch.update(item);
            }
            self.values = Values::Sketched(Box::new(sketch));
        }
    }

    /// Adds `other` into `self`, as if `self` had seen `other`'s values too. Exact stays
    /// exact while the total fits in `self`'s `exact_capacity`.
    pub fn merge(&mut self, other: &ColumnProfile) -> Result<(), ProfileError> {
        // The only fallible step first, so that an error leaves `self` untouched.
        let merged_values = match (&self.values, &other.values) {
            (Values::Exact(a), Values::Exact(b)) if a.len() + b.len() <= self.config.exact_capacity => {
                let mut all = Vec::with_capacity(a.len() + b.len());
                all.extend_from_slice(a);
                all.extend_from_slice(b);
                Values::Exact(all)
            }
            (mine, theirs) => {
                let mut sketch = match mine {
                    Values::Sketched(s) => (**s).clone(),
                    Values::Exact(a) => {
                        let mut s = self.new_sketch();
                        a.iter()
                            .filter_map(|&v| KllFloat::<f64>::new(v).ok())
                            .for_each(|i| s.update(i));
                        s
                    }
                };
                match theirs {
                    Values::Sketched(s) => {
                        sketch.merge(s).map_err(|e| ProfileError::Sketch(e.to_string()))?
                    }
                    Values::Exact(b) => b
                        .iter()
                        .filter_map(|&v| KllFloat::<f64>::new(v).ok())
                        .for_each(|i| sketch.update(i)),
                }
                Values::Sketched(Box::new(sketch))
            }
        };
        self.values = merged_values;
        if other.count > 0 {
            if self.count == 0 {
                self.mean = other.mean;
                self.m2 = other.m2;
            } else {
                // Chan, Golub & LeVeque's pairwise update.
                let (na, nb) = (self.count as f64, other.count as f64);
                let n = na + nb;
                let delta = other.mean - self.mean;
                self.mean += delta * (nb / n);
                self.m2 += other.m2 + delta * delta * (na * nb / n);
            }
        }
        self.count += other.count;
        self.missing += other.missing;
        self.value_type = self.value_type.merge(other.value_type);
        self.distinct.merge(&other.distinct);
        Ok(())
    }

    /// The sizes this profile was built with.
    pub fn config(&self) -> ProfileConfig {
        self.config
    }

    /// What kind of tensor the values came from.
    pub fn value_type(&self) -> ValueType {
        self.value_type
    }

    /// Finite values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// NaN and ±inf values seen (not part of any statistic, as in Evidently).
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Mean of the finite values (0 when there are none).
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Population standard deviation (numpy's `np.std`, ddof = 0) of the finite values.
    pub fn std(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2 / self.count as f64).max(0.0).sqrt()
        }
    }

    /// Smallest finite value, exact in both representations.
    pub fn min(&self) -> Option<f64> {
        match &self.values {
            Values::Exact(v) => v.iter().copied().reduce(f64::min),
            Values::Sketched(s) => s.min_item().map(|x| **x),
        }
    }

    /// Largest finite value, exact in both representations.
    pub fn max(&self) -> Option<f64> {
        match &self.values {
            Values::Exact(v) => v.iter().copied().reduce(f64::max),
            Values::Sketched(s) => s.max_item().map(|x| **x),
        }
    }

    /// Heap bytes the profile holds: its values (the buffer's capacity) or its sketch's
    /// retained items, and its value counts. Vectors' spare capacity inside the sketch
    /// and the allocator's own overhead are not counted, so this is a lower bound.
    pub fn heap_bytes(&self) -> usize {
        let values = match &self.values {
            Values::Exact(v) => v.capacity() * std::mem::size_of::<f64>(),
            Values::Sketched(s) => {
                std::mem::size_of::<Sketch>() + s.num_retained() * std::mem::size_of::<f64>()
            }
        };
        values + self.distinct.entries.capacity() * std::mem::size_of::<(f64, u64)>()
    }

    /// Whether the values themselves are still held (so the distribution is exact).
    pub fn is_exact(&self) -> bool {
        matches!(self.values, Values::Exact(_))
    }

    /// The a-priori bound on the normalised rank error of this column's distribution: 0
    /// while exact (values held, or a sketch that has not compacted yet), else the KLL
    /// sketch's single-sided bound at 99% confidence (DataSketches'
    /// `normalized_rank_error`, 0.0027 for k = 1024).
    pub fn rank_error(&self) -> f64 {
        match &self.values {
            Values::Sketched(s) if s.is_estimation_mode() => s.normalized_rank_error(),
            _ => 0.0,
        }
    }

    /// The number of distinct finite values if it is at most [`DISTINCT_CAPACITY`], else
    /// `None` ("more than 21").
    pub fn distinct_count(&self) -> Option<usize> {
        if self.distinct.overflowed {
            None
        } else {
            Some(self.distinct.entries.len())
        }
    }

    /// The exact (value, count) map, in first-seen order, while there are at most
    /// [`DISTINCT_CAPACITY`] distinct values.
    pub fn distinct_values(&self) -> Option<&[(f64, u64)]> {
        if self.distinct.overflowed {
            None
        } else {
            Some(&self.distinct.entries)
        }
    }

    /// Exact (value, count) pairs in ascending value order when known: from the distinct
    /// map (≤ 21 values) or from the values held; `None` once both are gone.
    pub fn value_counts(&self) -> Option<Vec<(f64, u64)>> {
        if !self.distinct.overflowed {
            let mut entries = self.distinct.entries.clone();
            entries.sort_by(|a, b| a.0.total_cmp(&b.0));
            return Some(entries);
        }
        let Values::Exact(values) = &self.values else {
            return None;
        };
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let mut out: Vec<(f64, u64)> = Vec::new();
        for v in sorted {
            match out.last_mut() {
                Some(last) if last.0 == v => last.1 += 1,
                _ => out.push((v, 1)),
            }
        }
        Some(out)
    }

    /// The distribution of the finite values for rank and histogram queries, exact or
    /// sketched; `None` for a column without finite values.
    pub fn distribution(&self) -> Option<Distribution> {
        if self.count == 0 {
            return None;
        }
        let inner = match &self.values {
            Values::Exact(v) => {
                let mut sorted = v.clone();
                sorted.sort_by(f64::total_cmp);
                DistributionInner::Exact(sorted)
            }
            Values::Sketched(s) => DistributionInner::Sketched {
                view: s.sorted_view(),
                min: s.min_item().map(|x| **x)?,
                max: s.max_item().map(|x| **x)?,
            },
        };
        Some(Distribution {
            inner,
            count: self.count,
        })
    }
}

/// A column's distribution, ready for queries: its sorted values, or a sorted view of
/// its sketch.
pub struct Distribution {
    inner: DistributionInner,
    count: u64,
}

enum DistributionInner {
    Exact(Vec<f64>),
    Sketched {
        view: SortedView<KllFloat<f64>>,
        min: f64,
        max: f64,
    },
}

impl Distribution {
    /// Number of values described.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether queries are answered from the values themselves.
    pub fn is_exact(&self) -> bool {
        matches!(self.inner, DistributionInner::Exact(_))
    }

    /// Smallest value (exact also when sketched).
    pub fn min(&self) -> f64 {
        match &self.inner {
            DistributionInner::Exact(v) => v.first().copied().unwrap_or(f64::NAN),
            DistributionInner::Sketched { min, .. } => *min,
        }
    }

    /// Largest value (exact also when sketched).
    pub fn max(&self) -> f64 {
        match &self.inner {
            DistributionInner::Exact(v) => v.last().copied().unwrap_or(f64::NAN),
            DistributionInner::Sketched { max, .. } => *max,
        }
    }

    /// Number of values `< x` (estimated when sketched).
    pub fn count_below(&self, x: f64) -> f64 {
        self.rank(x, SearchCriteria::Exclusive)
    }

    /// Number of values `<= x` (estimated when sketched).
    pub fn count_at_most(&self, x: f64) -> f64 {
        self.rank(x, SearchCriteria::Inclusive)
    }

    fn rank(&self, x: f64, criteria: SearchCriteria) -> f64 {
        match &self.inner {
            DistributionInner::Exact(v) => match criteria {
                SearchCriteria::Exclusive => v.partition_point(|&y| y < x) as f64,
                SearchCriteria::Inclusive => v.partition_point(|&y| y <= x) as f64,
            },
            DistributionInner::Sketched { view, .. } => {
                let Ok(item) = KllFloat::<f64>::new(x) else {
                    return f64::NAN;
                };
                view.rank(&item, criteria).unwrap_or(0.0) * view.total_weight() as f64
            }
        }
    }

    /// The values in ascending order when exact; when sketched, the [`QUANTILE_GRID`]
    /// quantiles at mid-ranks `(i + 0.5)/G`, an equally weighted pseudo-sample with the
    /// sketch's distribution.
    pub fn sample(&self) -> Cow<'_, [f64]> {
        match &self.inner {
            DistributionInner::Exact(v) => Cow::Borrowed(v),
            DistributionInner::Sketched { view, .. } => {
                let g = QUANTILE_GRID as f64;
                Cow::Owned(
                    (0..QUANTILE_GRID)
                        .filter_map(|i| {
                            view.quantile((i as f64 + 0.5) / g, SearchCriteria::Inclusive)
                                .ok()?
                        })
                        .map(|x| *x)
                        .collect(),
                )
            }
        }
    }
}

/// The JSON form of a [`ColumnProfile`]. Values travel as base64 of little-endian f64
/// (bit-exact; JSON numbers may lose an ulp in some parsers, and an ulp decides which
/// Sturges bin a value falls in), the sketch as base64 of its DataSketches binary form.
#[derive(Serialize, Deserialize)]
struct ColumnProfileWire {
    value_type: ValueType,
    count: u64,
    missing: u64,
    /// `null` when non-finite (an overflow JSON cannot carry).
    mean: Option<f64>,
    m2: Option<f64>,
    /// Distinct values (base64 f64) and their counts; absent once more than 21.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    distinct: Option<DistinctWire>,
    /// The values (base64 f64) while exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    /// The KLL sketch (base64 of `KllSketch::serialize`) once past `exact_capacity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kll: Option<String>,
    exact_capacity: usize,
    kll_k: u16,
}

#[derive(Serialize, Deserialize)]
struct DistinctWire {
    values: String,
    counts: Vec<u64>,
}

fn encode_f64s(values: impl IntoIterator<Item = f64>) -> String {
    let bytes: Vec<u8> = values.into_iter().flat_map(f64::to_le_bytes).collect();
    BASE64.encode(bytes)
}

fn decode_f64s(field: &str, text: &str) -> Result<Vec<f64>, ProfileError> {
    let bytes = BASE64
        .decode(text)
        .map_err(|e| ProfileError::Corrupt(format!("`{field}` is not base64: {e}")))?;
    if bytes.len() % 8 != 0 {
        return Err(ProfileError::Corrupt(format!(
            "`{field}` is not a whole number of f64 values"
        )));
    }
    let values: Vec<f64> = bytes
        .chunks_exact(8)
        .filter_map(|c| c.first_chunk::<8>())
        .map(|b| f64::from_le_bytes(*b))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(ProfileError::Corrupt(format!(
            "`{field}` holds a non-finite value"
        )));
    }
    Ok(values)
}

impl From<ColumnProfile> for ColumnProfileWire {
    fn from(p: ColumnProfile) -> Self {
        let (exact, kll) = match &p.values {
            Values::Exact(v) => (Some(encode_f64s(v.iter().copied())), None),
            Values::Sketched(s) => (None, Some(BASE64.encode(s.serialize()))),
        };
        let distinct = (!p.distinct.overflowed).then(|| DistinctWire {
            values: encode_f64s(p.distinct.entries.iter().map(|e| e.0)),
            counts: p.distinct.entries.iter().map(|e| e.1).collect(),
        });
        ColumnProfileWire {
            value_type: p.value_type,
            count: p.count,
            missing: p.missing,
            mean: p.mean.is_finite().then_some(p.mean),
            m2: p.m2.is_finite().then_some(p.m2),
            distinct,
            exact,
            kll,
            exact_capacity: p.config.exact_capacity,
            kll_k: p.config.kll_k,
        }
    }
}

impl TryFrom<ColumnProfileWire> for ColumnProfile {
    type Error = ProfileError;

    fn try_from(w: ColumnProfileWire) -> Result<Self, ProfileError> {
        let config = ProfileConfig {
            exact_capacity: w.exact_capacity,
            kll_k: w.kll_k,
        };
        config.validate()?;
        let values = match (w.exact, w.kll) {
            (Some(text), None) => {
                let v = decode_f64s("exact", &text)?;
                if v.len() as u64 != w.count || v.len() > config.exact_capacity {
                    return Err(ProfileError::Corrupt(format!(
                        "{} exact values for a count of {} and a capacity of {}",
                        v.len(),
                        w.count,
                        config.exact_capacity
                    )));
                }
                Values::Exact(v)
            }
            (None, Some(text)) => {
                let bytes = BASE64
                    .decode(text)
                    .map_err(|e| ProfileError::Corrupt(format!("`kll` is not base64: {e}")))?;
                let sketch = Sketch::deserialize(&bytes)
                    .map_err(|e| ProfileError::Corrupt(format!("`kll` is not a KLL sketch: {e}")))?;
                if sketch.n() != w.count {
                    return Err(ProfileError::Corrupt(format!(
                        "the sketch holds {} values for a count of {}",
                        sketch.n(),
                        w.count
                    )));
                }
                Values::Sketched(Box::new(sketch))
            }
            _ => {
                return Err(ProfileError::Corrupt(
                    "a column profile needs exactly one of `exact` and `kll`".to_string(),
                ));
            }
        };
        let distinct = match w.distinct {
            None => Distinct {
                entries: Vec::new(),
                overflowed: true,
            },
            Some(d) => {
                let keys = decode_f64s("distinct.values", &d.values)?;
                let consistent = keys.len() == d.counts.len()
                    && keys.len() <= DISTINCT_CAPACITY
                    && d.counts.iter().try_fold(0u64, |acc, &c| acc.checked_add(c)) == Some(w.count)
                    && keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k));
                if !consistent {
                    return Err(ProfileError::Corrupt(format!(
                        "{} distinct values with {} counts do not add up to a count of {}",
                        keys.len(),
                        d.counts.len(),
                        w.count
                    )));
                }
                Distinct {
                    entries: keys.into_iter().zip(d.counts).collect(),
                    overflowed: false,
                }
            }
        };
        Ok(ColumnProfile {
            config,
            value_type: w.value_type,
            count: w.count,
            missing: w.missing,
            mean: w.mean.unwrap_or(f64::NAN),
            m2: w.m2.unwrap_or(f64::INFINITY),
            distinct,
            values,
        })
    }
}

/// One named column of a [`TableProfile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedColumn {
    /// Feature or output column name.
    pub name: String,
    /// Its profile.
    pub profile: ColumnProfile,
}

/// The profiles of a model's input features (or of its output columns) for one window,
/// in a fixed column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TableProfileWire")]
pub struct TableProfile {
    columns: Vec<NamedColumn>,
}

#[derive(Deserialize)]
struct TableProfileWire {
    columns: Vec<NamedColumn>,
}

impl TryFrom<TableProfileWire> for TableProfile {
    type Error = ProfileError;

    fn try_from(w: TableProfileWire) -> Result<Self, ProfileError> {
        check_unique(w.columns.iter().map(|c| c.name.as_str()))?;
        Ok(TableProfile { columns: w.columns })
    }
}

fn check_unique<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), ProfileError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(ProfileError::DuplicateColumn(name.to_string()));
        }
    }
    Ok(())
}

impl TableProfile {
    /// Heap bytes of its columns ([`ColumnProfile::heap_bytes`]) and their names.
    pub fn heap_bytes(&self) -> usize {
        self.columns.capacity() * std::mem::size_of::<NamedColumn>()
            + self
                .columns
                .iter()
                .map(|c| c.name.capacity() + c.profile.heap_bytes())
                .sum::<usize>()
    }

    /// An empty profile with one column per name, in that order.
    pub fn new<I, S>(names: I, config: ProfileConfig) -> Result<TableProfile, ProfileError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        config.validate()?;
        let columns: Vec<NamedColumn> = names
            .into_iter()
            .map(|n| NamedColumn {
                name: n.into(),
                profile: ColumnProfile::with_valid_config(config),
            })
            .collect();
        check_unique(columns.iter().map(|c| c.name.as_str()))?;
        Ok(TableProfile { columns })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the table has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Column names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// (name, profile) pairs, in order.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &ColumnProfile)> {
        self.columns.iter().map(|c| (c.name.as_str(), &c.profile))
    }

    /// The profile of column `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name).map(|c| &c.profile)
    }

    /// The profile of column `name`, to feed it directly (typed values, say).
    pub fn column_mut(&mut self, name: &str) -> Option<&mut ColumnProfile> {
        self.columns
            .iter_mut()
            .find(|c| c.name == name)
            .map(|c| &mut c.profile)
    }

    /// Rows seen: the most values (finite or missing) any column has seen.
    pub fn rows(&self) -> u64 {
        self.columns
            .iter()
            .map(|c| c.profile.count + c.profile.missing)
            .max()
            .unwrap_or(0)
    }

    /// Records one row of float values, one per column in order.
    pub fn observe_row(&mut self, row: &[f64]) -> Result<(), ProfileError> {
        if row.len() != self.columns.len() {
            return Err(ProfileError::RowLength {
                expected: self.columns.len(),
                found: row.len(),
            });
        }
        for (c, &v) in self.columns.iter_mut().zip(row) {
            c.profile.observe_float(v);
        }
        Ok(())
    }

    /// Records float columns given column-wise (`columns[i]` feeds column i; lengths may
    /// differ, each value is one observation).
    pub fn observe_columns(&mut self, columns: &[&[f64]]) -> Result<(), ProfileError> {
        if columns.len() != self.columns.len() {
            return Err(ProfileError::RowLength {
                expected: self.columns.len(),
                found: columns.len(),
            });
        }
        for (c, values) in self.columns.iter_mut().zip(columns) {
            for &v in *values {
                c.profile.observe_float(v);
            }
        }
        Ok(())
    }

    /// Records a batch tensor: dimension 0 is the batch, every other position (flattened
    /// row-major: shape [batch, a, b] gives a·b columns) goes to one column, starting at
    /// `first_column`. A rank-0 or rank-1 tensor feeds one column. Integer and boolean
    /// tensors mark their columns [`ValueType::Integer`]. Returns the rows recorded.
    pub fn observe_tensor(&mut self, tensor: &Tensor, first_column: usize) -> Result<u64, ProfileError> {
        tensor
            .check_len()
            .map_err(|e| ProfileError::InvalidTensor(e.to_string()))?;
        let (rows, per_row) = match tensor.shape.split_first() {
            None => (1u64, 1usize),
            Some((&batch, rest)) => (
                batch,
                Tensor::element_count(rest).map_err(|e| ProfileError::InvalidTensor(e.to_string()))?,
            ),
        };
        let columns = self.columns.len();
        let too_wide = || ProfileError::TensorColumns {
            tensor: tensor.name.clone(),
            first_column,
            per_row,
            columns,
        };
        let end = first_column.checked_add(per_row).ok_or_else(too_wide)?;
        let cols = self.columns.get_mut(first_column..end).ok_or_else(too_wide)?;
        if per_row == 0 || rows == 0 {
            return Ok(0);
        }
        let value_type = match tensor.element_type {
            ElementType::F16 | ElementType::F32 | ElementType::F64 => ValueType::Float,
            _ => ValueType::Integer,
        };
        for c in cols.iter_mut() {
            c.profile.value_type = c.profile.value_type.merge(value_type);
        }
        let d = &tensor.data;
        match tensor.element_type {
            ElementType::F16 => feed::<2>(cols, d, |b| f16_to_f64(u16::from_le_bytes(b))),
            ElementType::F32 => feed::<4>(cols, d, |b| f32::from_le_bytes(b) as f64),
            ElementType::F64 => feed::<8>(cols, d, f64::from_le_bytes),
            ElementType::I8 => feed::<1>(cols, d, |b| b[0] as i8 as f64),
            ElementType::I16 => feed::<2>(cols, d, |b| i16::from_le_bytes(b) as f64),
            ElementType::I32 => feed::<4>(cols, d, |b| i32::from_le_bytes(b) as f64),
            ElementType::I64 => feed::<8>(cols, d, |b| i64::from_le_bytes(b) as f64),
            ElementType::U8 | ElementType::Bool => feed::<1>(cols, d, |b| b[0] as f64),
            ElementType::U16 => feed::<2>(cols, d, |b| u16::from_le_bytes(b) as f64),
            ElementType::U32 => feed::<4>(cols, d, |b| u32::from_le_bytes(b) as f64),
            ElementType::U64 => feed::<8>(cols, d, |b| u64::from_le_bytes(b) as f64),
        }
        Ok(rows)
    }

    /// Adds `other` (same columns, same order) into `self`; on error nothing is changed.
    pub fn merge(&mut self, other: &TableProfile) -> Result<(), ProfileError> {
        if !self.names().eq(other.names()) {
            return Err(ProfileError::ColumnMismatch {
                expected: self.names().map(str::to_string).collect(),
                found: other.names().map(str::to_string).collect(),
            });
        }
        // Merge into copies first so a sketch error part-way leaves `self` as it was.
        let mut merged = self.columns.clone();
        for (mine, theirs) in merged.iter_mut().zip(&other.columns) {
            mine.profile.merge(&theirs.profile)?;
        }
        self.columns = merged;
        Ok(())
    }
}

/// Decodes `data` as rows of `cols.len()` little-endian elements of `W` bytes each and
/// feeds element i of every row to column i.
#[inline]
fn feed<const W: usize>(cols: &mut [NamedColumn], data: &[u8], decode: impl Fn([u8; W]) -> f64) {
    let row_bytes = W * cols.len();
    for row in data.chunks_exact(row_bytes) {
        for (c, bytes) in cols.iter_mut().zip(row.chunks_exact(W)) {
            if let Some(b) = bytes.first_chunk::<W>() {
                c.profile.push(decode(*b));
            }
        }
    }
}

/// IEEE 754 binary16 to f64 (exact: every f16 is an f64).
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f64.powi(-24),
        0x1f if mantissa == 0.0 => sign * f64::INFINITY,
        0x1f => f64::NAN,
        e => sign * (1.0 + mantissa / 1024.0) * 2f64.powi(e - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, offset: f64) -> Vec<f64> {
        (0..n).map(|i| ((i * 37) % 101) as f64 / 7.0 + offset).collect()
    }

    #[test]
    fn heap_bytes_count_the_values_then_stay_bounded_once_sketched() {
        let config = ProfileConfig {
            exact_capacity: 512,
            kll_k: 256,
        };
        let mut p = ColumnProfile::new(config).unwrap();
        assert_eq!(p.heap_bytes(), 0);
        // Few distinct values: the value counts (21 reserved) and the values themselves.
        (0..512).for_each(|i| p.observe_float((i % 4) as f64));
        assert!(p.is_exact());
        assert!(p.heap_bytes() >= 512 * 8 + 21 * 16, "{}", p.heap_bytes());
        // Past the exact capacity and 21 values: the sketch's retained items only, which
        // stop growing (at most about 3k of them for k = 256).
        let mut x = 1u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1_000_000) as f64
        };
        (0..100_000).for_each(|_| p.observe_float(next()));
        let at_100k = p.heap_bytes();
        assert!(!p.is_exact());
        assert!((2048..=8 * 1024).contains(&at_100k), "{at_100k}");
        (0..900_000).for_each(|_| p.observe_float(next()));
        assert!(p.heap_bytes() <= 8 * 1024, "{} after 1M values", p.heap_bytes());
        // A table adds its columns' names.
        let mut t = TableProfile::new(["a", "bb"], config).unwrap();
        assert!(t.heap_bytes() >= 3 + 2 * std::mem::size_of::<NamedColumn>());
        t.columns[0].profile = p.clone();
        assert!(t.heap_bytes() >= p.heap_bytes());
    }

    fn profile_of(values: &[f64], config: ProfileConfig) -> ColumnProfile {
        let mut p = ColumnProfile::new(config).unwrap();
        values.iter().for_each(|&v| p.observe_float(v));
        p
    }

    fn small(exact_capacity: usize) -> ProfileConfig {
        ProfileConfig {
            exact_capacity,
            kll_k: DEFAULT_KLL_K,
        }
    }

    #[test]
    fn mean_and_population_std_match_numpy_in_one_pass_and_merged() {
        // python3 -c 'import numpy as np; d=np.array([((i*37)%101)/7.0 + o for i in range(1000)]); print(d.mean(), d.std())'
        for (offset, mean, std) in [
            (0.0, 7.144285714285714, 4.168506559761603),
            (1e6, 1000007.1442857143, 4.168506559761792),
        ] {
            let values = data(1000, offset);
            let whole = profile_of(&values, ProfileConfig::default());
            let mut merged = profile_of(&values[..137], ProfileConfig::default());
            merged
                .merge(&profile_of(&values[137..], ProfileConfig::default()))
                .unwrap();
            for p in [&whole, &merged] {
                assert!(
                    (p.mean() - mean).abs() <= 1e-12 * mean.abs(),
                    "mean {} vs numpy {mean}",
                    p.mean()
                );
                // A large offset costs Welford a few digits; numpy's two-pass std has them.
                assert!(
                    (p.std() - std).abs() <= 1e-9 * std,
                    "std {} vs numpy {std}",
                    p.std()
                );
            }
        }
    }

    #[test]
    fn non_finite_values_are_counted_missing_and_nothing_else() {
        let mut p = ColumnProfile::default();
        for v in [1.0, f64::NAN, f64::INFINITY, 2.0, f64::NEG_INFINITY, -0.0, 0.0] {
            p.observe_float(v);
        }
        assert_eq!((p.count(), p.missing()), (4, 3));
        assert_eq!((p.min(), p.max()), (Some(0.0), Some(2.0)));
        // -0.0 and 0.0 are one value, as in pandas.
        assert_eq!(p.value_counts(), Some(vec![(0.0, 2), (1.0, 1), (2.0, 1)]));
    }

    #[test]
    fn values_stay_exact_up_to_capacity_then_fold_into_the_sketch() {
        let values = data(100, 0.0);
        let exact = profile_of(&values[..64], small(64));
        assert!(exact.is_exact());
        assert_eq!(exact.rank_error(), 0.0);
        let sketched = profile_of(&values, small(64));
        assert!(!sketched.is_exact());
        assert_eq!(sketched.count(), 100);
        // min and max survive the switch exactly.
        assert_eq!(sketched.min(), values.iter().copied().reduce(f64::min));
        assert_eq!(sketched.max(), values.iter().copied().reduce(f64::max));
        // 100 values in a k = 1024 sketch: no compaction yet, so ranks are still exact.
        let d = sketched.distribution().unwrap();
        assert_eq!(
            d.count_below(5.0),
            values.iter().filter(|&&v| v < 5.0).count() as f64
        );
        assert_eq!(
            d.count_at_most(5.0),
            values.iter().filter(|&&v| v <= 5.0).count() as f64
        );
    }

    #[test]
    fn merging_exact_profiles_stays_exact_only_while_the_total_fits() {
        let values = data(100, 0.0);
        let mut a = profile_of(&values[..40], small(64));
        a.merge(&profile_of(&values[40..60], small(64))).unwrap();
        assert!(a.is_exact());
        assert_eq!(a.count(), 60);
        a.merge(&profile_of(&values[60..], small(64))).unwrap();
        assert!(!a.is_exact());
        assert_eq!(a.count(), 100);
        let d = a.distribution().unwrap();
        assert_eq!(d.count_at_most(f64::MAX), 100.0);
        // Sketch + sketch and exact + sketch both keep every value's weight.
        let mut b = profile_of(&values, small(64));
        b.merge(&a).unwrap();
        let mut c = profile_of(&values[..10], small(64));
        c.merge(&b).unwrap();
        assert_eq!((b.count(), c.count()), (200, 210));
        assert_eq!(c.distribution().unwrap().count_at_most(f64::MAX), 210.0);
    }

    #[test]
    fn distinct_values_are_exact_up_to_21_and_merge_by_union() {
        let mut p = ColumnProfile::default();
        (0..21).for_each(|i| p.observe_int(i % 21));
        (0..21).for_each(|i| p.observe_int(i % 21));
        assert_eq!(p.distinct_count(), Some(21));
        assert_eq!(p.value_type(), ValueType::Integer);
        let mut other = ColumnProfile::default();
        other.observe_int(3);
        p.merge(&other).unwrap();
        assert_eq!(p.distinct_count(), Some(21));
        assert_eq!(p.value_counts().unwrap()[3], (3.0, 3));
        other.observe_int(99);
        p.merge(&other).unwrap();
        assert_eq!(p.distinct_count(), None);
        // Past the map, counts still come from the values held...
        assert_eq!(p.value_counts().unwrap().len(), 22);
        // ...until those go into the sketch.
        let mut q = profile_of(&data(200, 0.0), small(64));
        assert_eq!(q.distinct_count(), None);
        assert_eq!(q.value_counts(), None);
        q.observe_int(1);
        assert_eq!(q.value_type(), ValueType::Float);
    }

    #[test]
    fn json_round_trip_keeps_exact_and_sketched_profiles() {
        for (n, config) in [
            (500, ProfileConfig::default()),
            (100_000, ProfileConfig::default()),
        ] {
            let values = data(n, 0.25);
            let p = profile_of(&values, config);
            let json = serde_json::to_string(&p).unwrap();
            // Bounded: at most 4096 f64 or a k = 1024 sketch, base64.
            assert!(
                json.len() < 44 * 1024,
                "{} bytes of JSON for {n} values",
                json.len()
            );
            let back: ColumnProfile = serde_json::from_str(&json).unwrap();
            assert_eq!(
                (back.count(), back.missing(), back.is_exact()),
                (p.count(), p.missing(), p.is_exact())
            );
            assert_eq!(
                (back.mean(), back.std(), back.min(), back.max()),
                (p.mean(), p.std(), p.min(), p.max())
            );
            let (d1, d2) = (p.distribution().unwrap(), back.distribution().unwrap());
            for x in [0.5, 3.0, 7.25, 14.0] {
                assert_eq!(d1.count_below(x), d2.count_below(x));
            }
        }
    }

    #[test]
    fn inconsistent_json_is_rejected() {
        let p = profile_of(&data(10, 0.0), ProfileConfig::default());
        let good: serde_json::Value = serde_json::to_value(&p).unwrap();
        let broken = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            serde_json::from_value::<ColumnProfile>(v)
                .unwrap_err()
                .to_string()
        };
        assert!(broken(&|v| v["count"] = 11.into()).contains("corrupt profile"));
        assert!(broken(&|v| v["kll"] = "AAAA".into()).contains("exactly one of"));
        assert!(broken(&|v| v["exact"] = "not base64!".into()).contains("base64"));
        assert!(broken(&|v| v["kll_k"] = 2.into()).contains("kll_k"));
        assert!(broken(&|v| v["distinct"]["counts"][0] = 5.into()).contains("distinct"));
    }

    fn f16_tensor(bits: &[u16]) -> Tensor {
        Tensor {
            name: "h".into(),
            element_type: ElementType::F16,
            shape: vec![bits.len() as u64],
            data: bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn observe_tensor_maps_positions_to_columns_and_types() {
        let mut t = TableProfile::new(["a", "b", "c", "d", "label"], ProfileConfig::default()).unwrap();
        // [batch 3, 2 features] of f32 into columns a, b.
        let x = Tensor::from_f32("x", &[3, 2], &[1.0, 10.0, 2.0, 20.0, 3.0, f32::NAN]);
        assert_eq!(t.observe_tensor(&x, 0).unwrap(), 3);
        // [batch 2, 1, 2] of f64, flattened per row into columns c, d.
        let y = Tensor {
            name: "y".into(),
            element_type: ElementType::F64,
            shape: vec![2, 1, 2],
            data: [5.0f64, 6.0, 7.0, 8.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        t.observe_tensor(&y, 2).unwrap();
        // [batch 4] of i64 into `label`.
        t.observe_tensor(&Tensor::from_i64("label", &[0, 1, 1, 2]), 4)
            .unwrap();
        let col = |n: &str| t.column(n).unwrap();
        assert_eq!((col("a").count(), col("a").mean()), (3, 2.0));
        assert_eq!(
            (col("b").count(), col("b").missing(), col("b").mean()),
            (2, 1, 15.0)
        );
        assert_eq!((col("c").mean(), col("d").mean()), (6.0, 7.0));
        assert_eq!(col("a").value_type(), ValueType::Float);
        assert_eq!(col("label").value_type(), ValueType::Integer);
        assert_eq!(
            col("label").value_counts(),
            Some(vec![(0.0, 1), (1.0, 2), (2.0, 1)])
        );
        assert_eq!(t.rows(), 4);
    }

    #[test]
    fn observe_tensor_decodes_every_element_type() {
        let cases: Vec<(ElementType, Vec<u8>, Vec<f64>)> = vec![
            (ElementType::I8, vec![0xff, 0x7f], vec![-1.0, 127.0]),
            (ElementType::U8, vec![0xff, 0x01], vec![255.0, 1.0]),
            (ElementType::Bool, vec![1, 0], vec![1.0, 0.0]),
            (
                ElementType::I16,
                [-300i16, 7].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![-300.0, 7.0],
            ),
            (
                ElementType::U16,
                [65535u16, 7].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![65535.0, 7.0],
            ),
            (
                ElementType::I32,
                [-70000i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![-70000.0, 7.0],
            ),
            (
                ElementType::U32,
                [4_000_000_000u32, 7]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![4e9, 7.0],
            ),
            (
                ElementType::I64,
                [-5i64, 1 << 40].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![-5.0, 2f64.powi(40)],
            ),
            (
                ElementType::U64,
                [9u64, 1 << 50].iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![9.0, 2f64.powi(50)],
            ),
        ];
        for (element_type, data, expected) in cases {
            let mut t = TableProfile::new(["v"], ProfileConfig::default()).unwrap();
            let tensor = Tensor {
                name: "v".into(),
                element_type,
                shape: vec![2],
                data,
            };
            t.observe_tensor(&tensor, 0).unwrap();
            let p = t.column("v").unwrap();
            let mut seen: Vec<f64> = p.value_counts().unwrap().iter().map(|e| e.0).collect();
            let mut want = expected.clone();
            want.sort_by(f64::total_cmp);
            seen.sort_by(f64::total_cmp);
            assert_eq!(seen, want, "{element_type:?}");
            assert_eq!(p.value_type(), ValueType::Integer, "{element_type:?}");
        }
        // IEEE half: 1, -2, the largest finite, the smallest subnormal; inf and NaN are missing.
        let mut t = TableProfile::new(["h"], ProfileConfig::default()).unwrap();
        t.observe_tensor(&f16_tensor(&[0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x7e00]), 0)
            .unwrap();
        let p = t.column("h").unwrap();
        assert_eq!((p.count(), p.missing(), p.value_type()), (4, 2, ValueType::Float));
        assert_eq!(
            p.value_counts().unwrap().iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![-2.0, 2f64.powi(-24), 1.0, 65504.0]
        );
    }

    #[test]
    fn bad_tensors_and_rows_are_errors_not_panics() {
        let mut t = TableProfile::new(["a", "b"], ProfileConfig::default()).unwrap();
        let wide = Tensor::from_f32("x", &[1, 3], &[1.0, 2.0, 3.0]);
        assert!(matches!(
            t.observe_tensor(&wide, 0),
            Err(ProfileError::TensorColumns { per_row: 3, .. })
        ));
        let x = Tensor::from_f32("x", &[1, 2], &[1.0, 2.0]);
        assert!(matches!(
            t.observe_tensor(&x, 1),
            Err(ProfileError::TensorColumns { .. })
        ));
        assert!(matches!(
            t.observe_tensor(&x, usize::MAX),
            Err(ProfileError::TensorColumns { .. })
        ));
        let mut short = x.clone();
        short.data.pop();
        assert!(matches!(
            t.observe_tensor(&short, 0),
            Err(ProfileError::InvalidTensor(_))
        ));
        assert!(matches!(
            t.observe_row(&[1.0]),
            Err(ProfileError::RowLength {
                expected: 2,
                found: 1
            })
        ));
        assert_eq!(t.rows(), 0, "a failed observation must not count");
    }

    #[test]
    fn tables_need_unique_names_and_merge_only_with_the_same_columns() {
        assert_eq!(
            TableProfile::new(["a", "a"], ProfileConfig::default()).unwrap_err(),
            ProfileError::DuplicateColumn("a".into())
        );
        assert!(
            TableProfile::new(
                ["a"],
                ProfileConfig {
                    exact_capacity: MAX_EXACT_CAPACITY + 1,
                    kll_k: 200
                }
            )
            .is_err()
        );
        let mut a = TableProfile::new(["x", "y"], ProfileConfig::default()).unwrap();
        let b = TableProfile::new(["y", "x"], ProfileConfig::default()).unwrap();
        assert!(matches!(a.merge(&b), Err(ProfileError::ColumnMismatch { .. })));
        a.observe_row(&[1.0, 2.0]).unwrap();
        let mut c = TableProfile::new(["x", "y"], ProfileConfig::default()).unwrap();
        c.observe_columns(&[&[3.0, 4.0], &[5.0, f64::NAN]]).unwrap();
        a.merge(&c).unwrap();
        assert_eq!(a.rows(), 3);
        assert_eq!(a.column("x").unwrap().mean(), 8.0 / 3.0);
        let json = serde_json::to_string(&a).unwrap();
        let back: TableProfile = serde_json::from_str(&json).unwrap();
        assert_eq!(back.names().collect::<Vec<_>>(), vec!["x", "y"]);
        let dup = json.replace("\"y\"", "\"x\"");
        assert!(serde_json::from_str::<TableProfile>(&dup).is_err());
    }
}
