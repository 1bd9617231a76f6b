"""Reference drift numbers from Evidently 0.7.23 for monitor/tests/evidently.rs.

Usage: python evidently_compare.py OUT_DIR

Generates, with fixed seeds, datasets in both of Evidently's regimes (reference <= 1000
rows: p-value tests; > 1000 rows: distances), each in a stable and a drifted variant,
writes them as CSV (OUT_DIR/<name>_reference.csv, OUT_DIR/<name>_current.csv), reads them
back (so Evidently sees exactly the bytes the Rust test parses), runs
`Report([DataDriftPreset()], include_tests=True)` on all columns, a PSI `ValueDrift` per
column, and `DataDriftPreset(columns=features)` for the feature-only dataset drift, and
writes everything to OUT_DIR/evidently.json.

Must run in a Python with evidently==0.7.23 and pandas<3 (pandas 3 breaks Evidently's
import); see monitor/tests/evidently.rs for the command that creates it.
"""

import json
import os
import sys

import evidently
import numpy as np
import pandas as pd
from evidently import Report
from evidently.core.datasets import infer_column_type
from evidently.metrics import ValueDrift
from evidently.presets import DataDriftPreset
from scipy.stats import ks_2samp

OUTPUTS = ["pred", "label"]


def make_frame(rng, n, drifted):
    """One frame of every column kind the drift rules distinguish."""

    def shift(stable, moved):
        return moved if drifted else stable

    def with_missing(values, share):
        values = values.copy()
        idx = rng.choice(len(values), int(len(values) * share), replace=False)
        values[idx[: len(idx) // 2]] = np.nan
        values[idx[len(idx) // 2 : len(idx) // 2 + 3]] = np.inf  # inf is dropped like NaN
        values[idx[len(idx) // 2 + 3 :]] = np.nan
        return values

    return pd.DataFrame(
        {
            # float, normal: KS / Wasserstein
            "num_normal": rng.normal(shift(0.0, 0.5), 1.0, n),
            # float, small shift: scores near the thresholds
            "num_mild": rng.normal(shift(0.0, 0.12), 1.0, n),
            # float, skewed, scale change
            "num_lognormal": rng.lognormal(0.0, shift(0.5, 0.6), n),
            # float with NaN and inf (dropped before the test; changes the row count)
            "num_missing": with_missing(rng.normal(shift(10.0, 10.4), 3.0, n), shift(0.1, 0.2)),
            # int, 6 values: categorical -> chi-square / Jensen-Shannon
            "int_cat": rng.choice(6, n, p=shift([0.3, 0.2, 0.2, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.1, 0.1])),
            # int, a category only the drifted current has: chi-square p = 0
            "int_new_cat": rng.choice(shift(4, 5), n),
            # int 0/1: categorical with 2 values -> Z-test
            "binary": rng.binomial(1, shift(0.3, 0.38), n),
            # int, one value on both sides: Z-test p = 1, Jensen-Shannon 0
            "constant": np.full(n, 7, dtype=np.int64),
            # float with 4 values: numerical with <= 5 values -> chi-square / Jensen-Shannon
            "float_few": rng.choice([0.5, 1.5, 2.5, 3.5], n, p=shift([0.4, 0.3, 0.2, 0.1], [0.3, 0.3, 0.2, 0.2])),
            # float with 2 values: numerical with <= 2 values -> Z-test
            "float_two": rng.choice([0.0, 1.0], n, p=shift([0.5, 0.5], [0.42, 0.58])),
            # int, 15 values: numerical (> 10), per-value bins (<= 20 reference values)
            "int_mid": rng.integers(0, shift(15, 15), n) + (rng.random(n) < shift(0.0, 0.3)).astype(np.int64),
            # int, 61 values: numerical with Sturges bins over int64 data
            "int_wide": rng.integers(shift(0, 4), shift(61, 65), n),
            # model outputs: a score and a class
            "pred": rng.beta(shift(2.0, 2.4), 5.0, n),
            "label": rng.choice(3, n, p=shift([0.5, 0.3, 0.2], [0.45, 0.3, 0.25])),
        }
    )


DATASETS = [
    # name, reference rows, current rows, drifted, seed
    ("small_stable", 500, 500, False, 11),
    ("small_drifted", 500, 500, True, 12),
    ("small_ref_big_current", 500, 12000, True, 13),  # max(n) > 10000: KS by kstwo.sf
    ("boundary_stable", 1100, 900, False, 14),  # 1100 rows, but num_missing has < 1000
    ("large_stable", 2500, 2500, False, 15),
    ("large_drifted", 2500, 2500, True, 16),
]


def roundtrip(frame, path):
    frame.to_csv(path, index=False)
    back = pd.read_csv(path, float_precision="round_trip")
    for column in frame.columns:
        assert back[column].dtype == frame[column].dtype, (path, column, back[column].dtype)
        a, b = frame[column].to_numpy(), back[column].to_numpy()
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (path, column)
    return back


def value_drifts(snapshot):
    """ValueDrift metrics by column: (method, threshold, score)."""
    out = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            out[config["column"]] = (config["method"], config["threshold"], float(metric["value"]))
    return out


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for name, n_ref, n_cur, drifted, seed in DATASETS:
        rng = np.random.default_rng(seed)
        reference = roundtrip(make_frame(rng, n_ref, False), os.path.join(out_dir, f"{name}_reference.csv"))
        current = roundtrip(make_frame(rng, n_cur, drifted), os.path.join(out_dir, f"{name}_current.csv"))
        features = [c for c in reference.columns if c not in OUTPUTS]

        snapshot = Report([DataDriftPreset()], include_tests=True).run(current_data=current, reference_data=reference).dict()
        drifts = value_drifts(snapshot)
        verdicts = {}
        for test in snapshot["tests"]:
            prefix = "Value Drift for column "
            if test["name"].startswith(prefix):
                verdicts[test["name"][len(prefix) :]] = test["status"] == "FAIL"

        psi_snapshot = Report([ValueDrift(column=c, method="psi") for c in reference.columns]).run(
            current_data=current, reference_data=reference
        ).dict()
        psis = value_drifts(psi_snapshot)

        feature_snapshot = Report([DataDriftPreset(columns=features)], include_tests=True).run(
            current_data=current, reference_data=reference
        ).dict()
        share = None
        for metric in feature_snapshot["metrics"]:
            if metric["config"]["type"].endswith("DriftedColumnsCount"):
                share = float(metric["value"]["share"])
        dataset_drift = None
        for test in feature_snapshot["tests"]:
            if test["name"].startswith("Share of Drifted Columns"):
                dataset_drift = test["status"] == "FAIL"

        columns = []
        for column in reference.columns:
            method, threshold, score = drifts[column]
            ref_clean = reference[column].replace([-np.inf, np.inf], np.nan).dropna()
            cur_clean = current[column].replace([-np.inf, np.inf], np.nan).dropna()
            # The KS statistic Evidently's p-value comes from (it only reports the p-value).
            statistic = float(ks_2samp(ref_clean, cur_clean).statistic) if method == "K-S p_value" else None
            columns.append(
                {
                    "name": column,
                    "dtype": "int" if current[column].dtype.kind == "i" else "float",
                    "role": "output" if column in OUTPUTS else "feature",
                    "kind": infer_column_type(current[column]).value,
                    "method": method,
                    "threshold": float(threshold),
                    "score": score,
                    "drift": verdicts[column],
                    "psi": psis[column][2],
                    "statistic": statistic,
                    "reference_count": int(ref_clean.shape[0]),
                    "current_count": int(cur_clean.shape[0]),
                }
            )
        results.append(
            {
                "name": name,
                "reference_csv": f"{name}_reference.csv",
                "current_csv": f"{name}_current.csv",
                "columns": columns,
                "feature_drift_share": share,
                "feature_dataset_drift": dataset_drift,
            }
        )
    with open(os.path.join(out_dir, "evidently.json"), "w") as f:
        json.dump({"evidently": evidently.__version__, "datasets": results}, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
