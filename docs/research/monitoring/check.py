import numpy as np, pandas as pd
from scipy import stats
from scipy.spatial import distance
from evidently import Report
from evidently.metrics import ValueDrift
exec(open('drift.py').read().split('for n in')[0].split('rng = ')[0])
rng = np.random.default_rng(1)
n=2000
ref = pd.DataFrame({"x": rng.normal(0,1,n), "c": rng.choice(list("abcd"), n)})
cur = pd.DataFrame({"x": rng.normal(0.3,1.2,n), "c": rng.choice(list("abcde"), n, p=[.3,.3,.2,.1,.1])})
snap = Report([ValueDrift(column="x"), ValueDrift(column="x", method="psi"), ValueDrift(column="x", method="jensenshannon"),
               ValueDrift(column="c"), ValueDrift(column="c", method="psi"), ValueDrift(column="x", method="ks")]).run(cur, ref).dict()
for m in snap["metrics"]: print(m["metric_name"], m["value"])
r, c = ref.x.values, cur.x.values
print("wass/std(ddof0):", stats.wasserstein_distance(r, c)/np.std(r))
edges = np.histogram_bin_edges(np.concatenate([r, c]), bins="sturges")
print("n_bins sturges:", len(edges)-1)
p = np.histogram(r, edges)[0]/len(r); q = np.histogram(c, edges)[0]/len(c)
def fill(a):
    a=a.copy(); nz=a[a!=0].min(); a[a==0]= nz/1e6 if nz<=1e-4 else 1e-4; return a
pf,qf=fill(p),fill(q)
print("psi:", np.sum((pf-qf)*np.log(pf/qf)), " js(no fill, ln):", distance.jensenshannon(p,q))
keys=sorted(set(ref.c)|set(cur.c))
pc=np.array([(ref.c==k).mean() for k in keys]); qc=np.array([(cur.c==k).mean() for k in keys])
print("cat js:", distance.jensenshannon(pc,qc), "cat psi:", np.sum((fill(pc)-fill(qc))*np.log(fill(pc)/fill(qc))))
print("ks p:", stats.ks_2samp(r,c).pvalue)
