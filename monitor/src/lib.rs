//! What Kiln watches in what it serves (issue 14): mergeable per-column profiles of a
//! model's inputs and outputs (`profile`), drift between a reference profile and a live one
//! by the method Evidently picks by default (`drift`, on the statistics in `stats`), a
//! rollout canary's outputs against the stable version's (`shift`), SLO recording and
//! multi-window multi-burn-rate alerting rules for Prometheus (`slo`), and the reference
//! files drift starts from (`dataset`: CSV and `.npy`; `parquet_file` with the `parquet`
//! feature).
//! Pure: no I/O, no async runtime, so every host (nodes, the sync service, the edges) can
//! use it.

pub mod burn;
pub mod dataset;
pub mod drift;
#[cfg(feature = "prometheus")]
pub mod gauges;
pub mod model;
#[cfg(feature = "parquet")]
pub mod parquet_file;
pub mod profile;
pub mod shift;
pub mod slo;
pub mod stats;
