import json
import numpy as np
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
from evidently.metrics import ValueDrift, DriftedColumnsCount

rng = np.random.default_rng(0)
def frame(n, shift):
    return pd.DataFrame({
        "x_num":   rng.normal(0 + shift, 1, n),            # float -> Numerical
        "x_int3":  rng.integers(0, 3, n),                  # int, 3 uniques -> Categorical (<=10)
        "x_cat":   rng.choice(["a", "b", "c", "d"], n, p=[.4, .3, .2, .1] if shift == 0 else [.1, .2, .3, .4]),
        "x_bin":   rng.choice(["y", "n"], n),
        "pred":    rng.normal(0.5 + shift / 4, 0.2, n),
    })

for n in (500, 2000):   # <=1000 and >1000 reference rows
    ref, cur = frame(n, 0.0), frame(n, 0.5)
    snap = Report([DataDriftPreset()], include_tests=True).run(current_data=cur, reference_data=ref)
    d = snap.dict()
    print(f"--- n_ref={n}")
    for m in d["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            print(f'{cfg["column"]:7s} method={cfg.get("method")!r:32s} threshold={cfg.get("threshold")} '
                  f'score={m["value"]:.6g}')
        else:
            print(m["metric_name"], m["value"])
    # verdicts are tests on the snapshot
    for t in d["tests"]:
        print("   test:", t["name"], "->", t["status"], "|", t.get("description"))
if True:
    m0 = d["tests"][0]
    print(json.dumps(m0, indent=1, default=str)[:900])
