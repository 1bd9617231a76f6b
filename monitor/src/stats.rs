//! The statistics behind Evidently 0.7.23's default drift tests, each a port of the scipy
//! 1.17 / numpy 2.x / Evidently routine named on it, so that a drift score computed here
//! is the number Evidently prints (to ~1e-12 relative on the same data; the unit tests
//! below check every routine against values scipy computed).
//!
//! Plain functions on slices and counts: nothing here knows about profiles or sketches,
//! so the same code serves exact samples and the pseudo-samples a sketch yields.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// The two-sample Kolmogorov–Smirnov statistic `D = sup |F_a − F_b|` of two **sorted**
/// samples, as `scipy.stats.ks_2samp` computes it (ECDFs by `searchsorted(side='right')`
/// at every data point). Returns 0 when either sample is empty.
pub fn ks_statistic(a_sorted: &[f64], b_sorted: &[f64]) -> f64 {
    let (n1, n2) = (a_sorted.len(), b_sorted.len());
    if n1 == 0 || n2 == 0 {
        return 0.0;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let (mut max_s, mut min_s) = (f64::NEG_INFINITY, f64::INFINITY);
    // Walk the merged data; at each distinct value both ECDFs count the values <= it.
    while i < n1 || j < n2 {
        let x = match (a_sorted.get(i), b_sorted.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        while i < n1 && a_sorted[i] <= x {
            i += 1;
        }
        while j < n2 && b_sorted[j] <= x {
            j += 1;
        }
        let diff = i as f64 / n1 as f64 - j as f64 / n2 as f64;
        max_s = max_s.max(diff);
        min_s = min_s.min(diff);
    }
    // scipy clips the negative side at 0 and takes the larger of the two one-sided values.
    max_s.max((-min_s).clamp(0.0, 1.0))
}

/// The two-sided p-value of a two-sample KS statistic `d` for sample sizes `n1`, `n2`,
/// as `scipy.stats.ks_2samp(..., method='auto')` computes it in scipy 1.17: the exact
/// distribution (`_attempt_exact_2kssamp`) when `max(n1, n2) <= 10000`, else (or when
/// the exact computation fails) `kstwo.sf(d, round(n1*n2/(n1+n2)))`.
pub fn ks_2samp_pvalue(d: f64, n1: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 || d.is_nan() {
        return f64::NAN;
    }
    const MAX_AUTO_N: u64 = 10_000;
    let mut d = d;
    if n1.max(n2) <= MAX_AUTO_N {
        let (ok, rounded, p) = attempt_exact_2kssamp(n1, n2, d);
        d = rounded;
        if ok {
            return p.clamp(0.0, 1.0);
        }
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = m * n / (m + n);
    kstwo_sf(d, en.round_ties_even() as u64).clamp(0.0, 1.0)
}

/// `scipy.stats._stats_py._attempt_exact_2kssamp` for the two-sided alternative:
/// (success, d rounded to the lattice, probability).
fn attempt_exact_2kssamp(n1: u64, n2: u64, d: f64) -> (bool, f64, f64) {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return (true, d, 1.0);
    }
    let prob = if n1 == n2 {
        Some(compute_prob_outside_square(n1, h))
    } else {
        compute_outer_prob_inside_method(n1, n2, g, h)
    };
    match prob {
        Some(p) if (0.0..=1.0).contains(&p) => (true, d, p),
        _ => (false, d, f64::NAN),
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `scipy.stats._stats_py._compute_prob_outside_square`: P(D_{n,n} >= h/n), summed
/// with the Horner-like scheme scipy uses to avoid cancellation.
fn compute_prob_outside_square(n: u64, h: u64) -> f64 {
    let (nf, hf) = (n as f64, h as f64);
    let mut p = 0.0;
    let mut k = (nf / hf).floor() as i64;
    while k >= 0 {
        let kh = k as f64 * hf;
        let mut p1 = 1.0;
        for j in 0..h {
            let j = j as f64;
            p1 = (nf - kh - j) * p1 / (nf + kh + j + 1.0);
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// `scipy.stats._stats_pythran._compute_outer_prob_inside_method`: the proportion of
/// lattice paths from (0,0) to (m,n) that leave the band |x/m − y/n| < h/lcm(m,n)
/// (Hodges 1958, with Viehmann's 2021 recursion for 1 − p). `None` where scipy's
/// Python would have indexed outside its window (never observed; kept total anyway).
fn compute_outer_prob_inside_method(m: u64, n: u64, g: u64, h: u64) -> Option<f64> {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (m, n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    let mg = m / g;
    let ng = n / g;
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h as f64 / mg as f64).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for slot in a.iter_mut().take(maxj as usize) {
        *slot = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((((ng * i - h) as f64) / mg as f64).floor() as i64 + 1).max(0);
        minj = minj.min(n);
        maxj = ((((ng * i + h) as f64) / mg as f64).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return Some(1.0);
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let prev = *a.get(usize::try_from(jj + minj - lastminj).ok()?)?;
            val = (prev * fi + val * j as f64) / (fi + j as f64);
            *a.get_mut(jj as usize)? = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            // numpy slice assignment: clipped at the end of the array.
            let start = (maxj - minj) as usize;
            let end = (start + (lastlen - curlen) as usize).min(len_a);
            for slot in a.iter_mut().take(end).skip(start) {
                *slot = 1.0;
            }
        }
    }
    a.get((maxj - minj - 1) as usize).copied()
}

/// The survival function of the two-sided one-sample KS statistic, `scipy.stats.kstwo.sf(d, n)`
/// (`scipy.stats._ksstats._kolmogn(n, d, cdf=False)`, after Simard & L'Ecuyer 2011: Ruben–
/// Gambino at the ends, Durbin's matrix (Marsaglia–Tsang–Wang), Pomeranz, Pelz–Good and
/// 2·Smirnov in the regions scipy picks them).
pub fn kstwo_sf(d: f64, n: u64) -> f64 {
    if d.is_nan() || n == 0 {
        return f64::NAN;
    }
    if d >= 1.0 {
        return 0.0;
    }
    if d <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * d;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            (1..=n).fold(1.0, |p, i| p * (i as f64 * (1.0 / nf) * (2.0 * t - 1.0)))
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return clip01(1.0 - prob);
    }
    if t >= nf - 1.0 {
        return clip01(2.0 * (1.0 - d).powf(nf));
    }
    if d >= 0.5 {
        return clip01(2.0 * smirnov_sf(n, d));
    }
    let nxsquared = t * d;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return clip01(1.0 - clip01(kolmogn_dmtw_cdf(n, d)));
        }
        if nxsquared <= 4.0 {
            return clip01(1.0 - clip01(kolmogn_pomeranz_cdf(n, d)));
        }
        return clip01(2.0 * smirnov_sf(n, d));
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return clip01(2.0 * smirnov_sf(n, d));
    }
    let cdf = if n <= 100_000 && nf * d.powf(1.5) <= 1.4 {
        kolmogn_dmtw_cdf(n, d)
    } else {
        kolmogn_pelz_good_cdf(n, d)
    };
    clip01(1.0 - clip01(cdf))
}

fn clip01(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

const E128: i32 = 128;
// 2^128 and 2^-128, the rescaling steps scipy uses.
const EP128: f64 = 3.402_823_669_209_385e38;
const EM128: f64 = 2.938_735_877_055_719e-39;

/// `_ksstats._log_nfactorial_div_n_pow_n`: log(n!/n^n) by Stirling with the n·log(n) term
/// removed up front.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    // scipy's digits verbatim (B_2j/(2j)/(2j-1)), so a reader can diff them against _ksstats.py.
    #[allow(clippy::excessive_precision)]
    const STIRLING: [f64; 8] = [
        -2.955065359477124183e-2,
        6.4102564102564102564e-3,
        -1.9175269175269175269e-3,
        8.4175084175084175084e-4,
        -5.952380952380952381e-4,
        7.9365079365079365079e-4,
        -2.7777777777777777778e-3,
        8.3333333333333333333e-2,
    ];
    let rn = 1.0 / n;
    let x = rn / n;
    let poly = STIRLING.iter().fold(0.0, |acc, &c| acc * x + c);
    n.ln() / 2.0 - n + (2.0 * PI).ln() / 2.0 + rn * poly
}

/// `_ksstats._kolmogn_DMTW`: Pr(D_n <= d) by Durbin's matrix, computed as Marsaglia, Tsang
/// and Wang (2003) do, rescaling by 2^128 to stay in range.
fn kolmogn_dmtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powi(j as i32)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;

    let mut hm = vec![0.0; m * m];
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    let mut hpwr = vec![0.0; m * m];
    for i in 0..m {
        hpwr[i * m + i] = 1.0;
    }
    let mut nn = n;
    let mut expnt: i32 = 0;
    let mut h_expnt: i32 = 0;
    while nn > 0 {
        if nn % 2 == 1 {
            hpwr = matmul(&hpwr, &hm, m);
            expnt += h_expnt;
        }
        hm = matmul(&hm, &hm, m);
        h_expnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > EP128 {
            for x in hm.iter_mut() {
                *x /= EP128;
            }
            h_expnt += E128;
        }
        nn /= 2;
    }
    let mut p = hpwr[(k - 1) * m + (k - 1)];
    let nf = n as f64;
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < EM128 {
            p *= EP128;
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p = libm::ldexp(p, expnt);
    }
    clip01(p)
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * m];
    for i in 0..m {
        for k in 0..m {
            let aik = a[i * m + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..m {
                c[i * m + j] += aik * b[k * m + j];
            }
        }
    }
    c
}

/// `_ksstats._pomeranz_compute_j1j2`: the non-zero window of row `i`.
fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1) / 2, (i + 1) % 2);
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// `_ksstats._kolmogn_Pomeranz`: Pr(D_n <= d) by Pomeranz's (1974) recursion.
fn kolmogn_pomeranz_cdf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let n = n as i64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![0.0; npwrs];
    let mut twogpower = vec![0.0; npwrs];
    let mut onem2gpower = vec![0.0; npwrs];
    gpower[0] = 1.0;
    twogpower[0] = 1.0;
    onem2gpower[0] = 1.0;
    let mut expnt: i32 = 0;
    let (g_over_n, two_g_over_n, one_minus_two_g_over_n) = (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        let mf = m as f64;
        gpower[m] = gpower[m - 1] * g_over_n / mf;
        twogpower[m] = twogpower[m - 1] * two_g_over_n / mf;
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / mf;
    }
    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s): (i64, i64) = (0, 0);
    let mut j1 = pomeranz_j1j2(0, n, ll, ceilf, roundf).0;
    for i in 1..(2 * n + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.fill(0.0);
        let (next_j1, j2) = pomeranz_j1j2(i, n, ll, ceilf, roundf);
        j1 = next_j1;
        let pwrs = if i == 1 || i == 2 * n + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let src = numpy_slice(&v0, k1 - v0s, k1 - v0s + ln2);
            let kernel = numpy_slice(pwrs, 0, ln2);
            let conv = convolve_full(src, kernel);
            let conv_start = j1 - k1;
            let conv_len = j2 - j1 + 1;
            let piece = numpy_slice(&conv, conv_start, conv_start + conv_len);
            for (dst, &s) in v1.iter_mut().zip(piece) {
                *dst = s;
            }
            let max = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < max && max < EM128 {
                for x in v1.iter_mut() {
                    *x *= EP128;
                }
                expnt -= E128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let mut ans = usize::try_from(n - v1s)
        .ok()
        .and_then(|i| v1.get(i))
        .copied()
        .unwrap_or(f64::NAN);
    for m in 1..=n {
        if ans.abs() > EP128 {
            ans *= EM128;
            expnt += E128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = libm::ldexp(ans, expnt);
    }
    clip01(ans)
}

/// `a[start:end]` with numpy's clipping at both ends (indices here are never negative
/// in scipy's use; a negative start is clipped to 0 rather than wrapped).
fn numpy_slice(a: &[f64], start: i64, end: i64) -> &[f64] {
    let len = a.len() as i64;
    let s = start.clamp(0, len) as usize;
    let e = end.clamp(0, len) as usize;
    if s >= e { &[] } else { &a[s..e] }
}

/// `np.convolve(a, v)` in 'full' mode.
fn convolve_full(a: &[f64], v: &[f64]) -> Vec<f64> {
    if a.is_empty() || v.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0.0; a.len() + v.len() - 1];
    for (i, &x) in a.iter().enumerate() {
        for (j, &y) in v.iter().enumerate() {
            out[i + j] += x * y;
        }
    }
    out
}

/// `_ksstats._kolmogn_PelzGood`: the Pelz–Good (1976) approximation of Pr(D_n <= x).
fn kolmogn_pelz_good_cdf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let sqrt2pi = (2.0 * PI).sqrt();
    let nf = n as f64;
    let z = nf.sqrt() * x;
    let (zsquared, zthree, zfour, zsix) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let qlog = -pi2 / 8.0 / zsquared;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();
    let k1a = -zsquared;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * zsix + 2.0 * zfour;
    let k2b = (2.0 * zfour - 5.0 * zsquared) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * zsquared) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * zsquared) / 64.0;
    let k3c = pi4 * (-60.0 * zsquared + 212.0 * zfour) / 16.0;
    let k3b = pi2 * (135.0 * zfour - 96.0 * zsix) / 4.0;
    let k3a = -30.0 * zsix - 90.0 * z.powi(8);
    let mut k = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf((8 * kk) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (ki, c) in k.iter_mut().zip(coeffs) {
            *ki = *ki * qpower + c;
        }
    }
    let divisors = [z, 6.0 * zfour, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (ki, dv) in k.iter_mut().zip(divisors) {
        *ki = *ki * q * sqrt2pi / dv;
    }
    let q = (-pi2 / 2.0 / zsquared).exp();
    let sqrt3z = 3.0f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for kk in (1..=maxk).rev() {
        let ksq = (kk * kk) as f64;
        let qp = q.powf(ksq);
        let kspi = PI * kk as f64;
        k2extra += ksq * qp;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksq * qp;
    }
    k[2] += k2extra * (pi2 * sqrt2pi / (-36.0 * zthree));
    k[3] += k3extra * (pi2 * sqrt2pi / (216.0 * zsix));
    for (i, ki) in k.iter_mut().enumerate() {
        *ki /= nf.powf(i as f64 / 2.0);
    }
    k.iter().sum()
}

/// The one-sided Smirnov survival function Pr(D_n^+ >= x), `scipy.special.smirnov(n, x)`
/// (xsf `cephes::smirnov`): the Birnbaum–Tingey sum, whose terms are all positive in the
/// regions scipy's `kstwo` calls it, evaluated term by term in logs (xsf uses double-double
/// arithmetic; plain f64 logs keep ~1e-12 relative accuracy for n up to 10^5).
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    if n == 0 || x.is_nan() || !(0.0..=1.0).contains(&x) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let nx = nf * x;
    let nxfl = nx.floor();
    let alpha = nx - nxfl;
    // x <= 1/n: closed form.
    if nxfl == 0.0 || (nxfl == 1.0 && alpha == 0.0) {
        let cdf = x * (1.0 + x).powf(nf - 1.0);
        return clip01(1.0 - cdf);
    }
    // cephes MINLOG = log(2^-1022): the sf underflows.
    const MINLOG: f64 = -7.083_964_185_322_641e2;
    if -2.0 * nf * x * x < MINLOG {
        return 0.0;
    }
    if nxfl >= nf - 1.0 {
        return clip01((1.0 - x).powf(nf));
    }
    if n > 1_000_000 {
        let logp = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        return clip01(if logp < -std::f64::consts::LN_2 {
            logp.exp()
        } else {
            1.0 + libm::expm1(logp)
        });
    }
    // sf = x * sum_{v: 1-x-v/n > 0} C(n,v) (x+v/n)^(v-1) (1-x-v/n)^(n-v)
    let ln_x = x.ln();
    let ln_gamma_n1 = libm::lgamma(nf + 1.0);
    let mut sum = 0.0;
    for v in 0..n {
        let vf = v as f64;
        let lower = (nf - vf) / nf - x;
        if lower <= 0.0 {
            break;
        }
        let ln_c = ln_gamma_n1 - libm::lgamma(vf + 1.0) - libm::lgamma(nf - vf + 1.0);
        let upper = vf / nf + x;
        let ln_term = ln_x + ln_c + (vf - 1.0) * upper.ln() + (nf - vf) * lower.ln();
        sum += ln_term.exp();
    }
    clip01(sum)
}

/// The chi-square survival function `scipy.stats.chi2.sf(x, df)` (cephes `chdtrc`), i.e.
/// the regularized upper incomplete gamma function Q(df/2, x/2).
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if x.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    gamma_q(df / 2.0, x / 2.0)
}

/// Regularized upper incomplete gamma Q(a, x) (cephes `igamc`): the power series of P for
/// x < a + 1, else the Legendre continued fraction (modified Lentz), both to f64 precision.
fn gamma_q(a: f64, x: f64) -> f64 {
    const EPS: f64 = f64::EPSILON;
    const TINY: f64 = 1e-300;
    // x^a e^-x / Gamma(a), in logs so it underflows gracefully.
    let ln_prefactor = a * x.ln() - x - libm::lgamma(a);
    if x < a + 1.0 {
        let mut ap = a;
        let mut del = 1.0 / a;
        let mut sum = del;
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * EPS {
                break;
            }
        }
        return clip01(1.0 - sum * ln_prefactor.exp());
    }
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..10_000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    clip01(ln_prefactor.exp() * h)
}

/// Pearson's chi-square test p-value, `scipy.stats.chisquare(f_obs, f_exp)[1]`, with
/// `k − 1` degrees of freedom. An expected count of 0 against an observed count above 0
/// makes the statistic infinite and the p-value 0, as in scipy.
pub fn chisquare_pvalue(observed: &[f64], expected: &[f64]) -> f64 {
    let k = observed.len().min(expected.len());
    if k < 2 {
        return f64::NAN;
    }
    let stat: f64 = observed
        .iter()
        .zip(expected)
        .map(|(&o, &e)| {
            let diff = o - e;
            if e == 0.0 {
                if diff == 0.0 { f64::NAN } else { f64::INFINITY }
            } else {
                diff * diff / e
            }
        })
        .sum();
    chi2_sf(stat, (k - 1) as f64)
}

/// The standard normal CDF, `scipy.special.ndtr` (= `scipy.stats.norm.cdf`), computed the way
/// cephes does (erf near 0, erfc in the tails) so that `1 − Φ(z)` rounds as it does in scipy.
pub fn normal_cdf(a: f64) -> f64 {
    let x = a * FRAC_1_SQRT_2;
    let z = x.abs();
    if z < 1.0 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        let y = 0.5 * libm::erfc(z);
        if x > 0.0 { 1.0 - y } else { y }
    }
}

/// Evidently's two-proportion Z-test p-value (`z_stattest.py`,
/// `proportions_diff_z_stat_ind` + `proportions_diff_z_test(alternative='two-sided')`):
/// `p1`, `p2` are the shares of "not the first category" among `n1` reference and `n2`
/// current values; the p-value is `2·(1 − Φ(|z|))`, evaluated in that order like Evidently.
pub fn proportions_z_test_pvalue(p1: f64, n1: f64, p2: f64, n2: f64) -> f64 {
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    2.0 * (1.0 - normal_cdf(z.abs()))
}

/// The first Wasserstein distance between two empirical distributions given as **sorted**
/// samples with equal weights, `scipy.stats.wasserstein_distance(u, v)`
/// (`_cdf_distance(1, ...)`: the integral of |U − V| over the merged support).
pub fn wasserstein_distance(u_sorted: &[f64], v_sorted: &[f64]) -> f64 {
    let (nu, nv) = (u_sorted.len(), v_sorted.len());
    if nu == 0 || nv == 0 {
        return f64::NAN;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut total = 0.0;
    // `prev` is the last merged value; between it and the next one both CDFs are flat.
    let mut prev: Option<f64> = None;
    while i < nu || j < nv {
        let x = match (u_sorted.get(i), v_sorted.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        if let Some(p) = prev {
            let ucdf = i as f64 / nu as f64;
            let vcdf = j as f64 / nv as f64;
            total += (ucdf - vcdf).abs() * (x - p);
        }
        while i < nu && u_sorted[i] <= x {
            i += 1;
        }
        while j < nv && v_sorted[j] <= x {
            j += 1;
        }
        prev = Some(x);
    }
    total
}

/// The Jensen–Shannon **distance** (natural log), `scipy.spatial.distance.jensenshannon(p, q)`:
/// both vectors normalised to sum 1, then `sqrt((KL(p‖m) + KL(q‖m)) / 2)` with m = (p+q)/2
/// and `rel_entr`'s conventions (0·log 0 = 0). Empty bins are not filled, as in Evidently.
pub fn jensenshannon_distance(p: &[f64], q: &[f64]) -> f64 {
    let sp: f64 = p.iter().sum();
    let sq: f64 = q.iter().sum();
    let (mut left, mut right) = (0.0, 0.0);
    for (&pi, &qi) in p.iter().zip(q) {
        let (pi, qi) = (pi / sp, qi / sq);
        let m = (pi + qi) / 2.0;
        left += rel_entr(pi, m);
        right += rel_entr(qi, m);
    }
    ((left + right) / 2.0).sqrt()
}

/// `scipy.special.rel_entr(x, y)`.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Evidently's `feel_zeroes` (`stattests/utils.py`, `get_binned_data`): every 0 share becomes
/// `min_nonzero / 10^6` when the smallest non-zero share is <= 1e-4, else `1e-4`. Nothing is
/// renormalised. A vector without a non-zero share is left as is.
pub fn fill_zeroes(shares: &mut [f64]) {
    let min_nonzero = shares
        .iter()
        .copied()
        .filter(|&s| s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min_nonzero.is_finite() {
        return;
    }
    let fill = if min_nonzero <= 0.0001 {
        min_nonzero / 1e6
    } else {
        0.0001
    };
    for s in shares.iter_mut().filter(|s| **s == 0.0) {
        *s = fill;
    }
}

/// The population stability index `Σ (r − c)·ln(r/c)` of Evidently's `psi.py`, on shares
/// already passed through [`fill_zeroes`].
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| (r - c) * (r / c).ln())
        .sum()
}

/// The bin edges of `np.histogram_bin_edges(data, bins='sturges')` for data of `n` values
/// spanning `[min, max]`, with numpy's exact arithmetic: width `ptp / (log2(n) + 1)`
/// (at least 1 for integer data), `ceil(ptp / width)` equal bins by `np.linspace`, and a
/// range widened by ±0.5 when `min == max`.
pub fn sturges_bin_edges(min: f64, max: f64, n: u64, integer: bool) -> Vec<f64> {
    let ptp = max - min;
    let (first, last) = if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    };
    let n_bins = if n == 0 {
        1
    } else {
        let mut width = ptp / ((n as f64).log2() + 1.0);
        if width != 0.0 {
            if integer && width < 1.0 {
                width = 1.0;
            }
            ((last - first) / width).ceil() as usize
        } else {
            1
        }
    }
    .max(1);
    linspace(first, last, n_bins + 1)
}

/// `np.linspace(start, stop, num, endpoint=True)`: `i·step + start`, last value exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = num.saturating_sub(1);
    let delta = stop - start;
    let mut out: Vec<f64> = Vec::with_capacity(num);
    if div == 0 {
        out.extend((0..num).map(|i| i as f64 * delta + start));
        return out;
    }
    let step = delta / div as f64;
    if step == 0.0 {
        out.extend((0..num).map(|i| i as f64 / div as f64 * delta + start));
    } else {
        out.extend((0..num).map(|i| i as f64 * step + start));
    }
    if let Some(last) = out.last_mut() {
        *last = stop;
    }
    out
}

/// `np.histogram(sorted_data, edges)[0]`: counts in half-open bins `[e_i, e_{i+1})`, the last
/// bin closed, values outside the edges not counted (numpy's searchsorted path).
pub fn histogram_sorted(sorted: &[f64], edges: &[f64]) -> Vec<u64> {
    if edges.len() < 2 {
        return Vec::new();
    }
    let below = |e: f64| sorted.partition_point(|&v| v < e) as u64;
    let at_most = |e: f64| sorted.partition_point(|&v| v <= e) as u64;
    let last = edges.len() - 1;
    let cum: Vec<u64> = edges
        .iter()
        .enumerate()
        .map(|(i, &e)| if i == last { at_most(e) } else { below(e) })
        .collect();
    cum.windows(2).map(|w| w[1].saturating_sub(w[0])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, rel: f64) -> bool {
        if expected == 0.0 {
            return actual.abs() <= rel;
        }
        ((actual - expected) / expected).abs() <= rel
    }

    #[track_caller]
    fn assert_close(actual: f64, expected: f64, rel: f64) {
        assert!(
            close(actual, expected, rel),
            "got {actual:e}, scipy says {expected:e} (relative error {:e})",
            ((actual - expected) / expected).abs()
        );
    }

    // Data both scipy and these tests build bit for bit (integer arithmetic, one division).
    fn a_data(n: usize) -> Vec<f64> {
        (0..n).map(|i| ((i * 7919) % 1000) as f64 / 1000.0).collect()
    }
    fn b_data(n: usize, shift: f64) -> Vec<f64> {
        (0..n)
            .map(|j| ((j * 104729) % 997) as f64 / 997.0 + shift)
            .collect()
    }
    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn ks_2samp_matches_scipy_on_exact_and_asymptotic_regimes() {
        // python3 -c 'from scipy import stats; r = stats.ks_2samp(a_data(n1), b_data(n2, s)); print(r.statistic, r.pvalue)'
        // with a_data/b_data as above (scipy 1.17.1); max(n1, n2) > 10000 takes kstwo.sf.
        let cases = [
            (50, 60, 0.1, 0.14333333333333334, 0.5785467572337198),
            (200, 200, 0.05, 0.065, 0.7933622419382523),
            (500, 2500, 0.03, 0.0348, 0.6851244247761339),
            (1000, 7000, 0.0, 0.0012857142857142856, 1.0),
            (300, 12000, 0.02, 0.027499999999999997, 0.9753204836326526),
            (100, 20000, 0.1, 0.12685000000000002, 0.07321405253595287),
            (120, 15000, 0.05, 0.07133333333333325, 0.5557393996386696),
        ];
        for (n1, n2, shift, d_scipy, p_scipy) in cases {
            let d = ks_statistic(&sorted(a_data(n1)), &sorted(b_data(n2, shift)));
            assert_close(d, d_scipy, 1e-12);
            assert_close(ks_2samp_pvalue(d, n1 as u64, n2 as u64), p_scipy, 1e-9);
        }
    }

    #[test]
    fn exact_two_sample_distribution_matches_scipy() {
        // python3 -c 'from scipy.stats._stats_py import _attempt_exact_2kssamp as f; import math;
        //   print(f(n1, n2, math.gcd(n1, n2), d, "two-sided")[2])'
        let cases = [
            (10, 10, 0.3, 0.7869297884777761),
            (100, 100, 0.15, 0.21117008625127576),
            (1000, 1000, 0.05, 0.16411447756429137),
            (37, 53, 0.25, 0.10663263344761942),
            (500, 2500, 0.07, 0.03261991132892241),
            (999, 10000, 0.02, 0.8526112228335632),
            (7, 3, 0.9, 0.01666666666666667),
        ];
        for (n1, n2, d, p_scipy) in cases {
            assert_close(ks_2samp_pvalue(d, n1, n2), p_scipy, 1e-10);
        }
        // scipy's exact sum comes out at 1.0000000000000013 here, which it rejects and
        // replaces by kstwo.sf(0.001, 500) = 1.0; so must we.
        assert_eq!(ks_2samp_pvalue(0.001, 1000, 1000), 1.0);
    }

    #[test]
    fn kstwo_sf_matches_scipy_in_every_region() {
        // python3 -c 'from scipy import stats; print(stats.kstwo.sf(d, n))'
        let cases = [
            (0.004, 130, 1.0),                  // n·d <= 0.5
            (0.03, 100, 0.9999692479033473),    // Durbin matrix
            (0.05, 100, 0.9532159710635725),    // Durbin matrix
            (0.1, 100, 0.2526927570063874),     // Pomeranz
            (0.3, 100, 1.7719869892662917e-08), // 2·Smirnov, n <= 140
            (0.6, 100, 5.912822156396238e-35),  // d >= 0.5
            (0.0012, 1000, 1.0),                // Ruben–Gambino lower end
            (0.01, 1000, 0.9999496745370611),   // Durbin matrix, n > 140
            (0.03, 1000, 0.3226902143914636),   // Pelz–Good
            (0.05, 1000, 0.013012074781090332), // 2·Smirnov, n > 140
            (0.08, 1000, 5.154189384789824e-06),
            (0.2, 1000, 1.5528629204250538e-35),
            (0.001, 400, 1.0),
            (0.02, 400, 0.9962957072474701),
            (0.07, 400, 0.037791217735146154),
            (0.995, 400, 0.0), // Ruben–Gambino upper end
            (0.0015, 500, 1.0),
            (0.5, 20, 3.787595240539032e-05),
            (0.2, 20, 0.352720173623415),
            (0.12, 20, 0.9031355120796009),
            (0.0125, 8000, 0.16271699068633005),
            (0.02, 120000, 3.975015720073373e-42),
        ];
        for (d, n, p_scipy) in cases {
            let p = kstwo_sf(d, n);
            assert!(
                close(p, p_scipy, 1e-9),
                "kstwo.sf({d}, {n}) = {p:e}, scipy says {p_scipy:e}"
            );
        }
    }

    #[test]
    fn smirnov_matches_scipy_special() {
        // python3 -c 'from scipy import special; print(special.smirnov(n, x))'
        let cases = [
            (5, 0.3, 0.34282),
            (100, 0.1, 0.1265906584562817),
            (1000, 0.05, 0.006506037390545166),
            (50, 0.7, 2.202725527835528e-25),
            (20000, 0.01, 0.01819312895757209),
        ];
        for (n, x, p_scipy) in cases {
            assert_close(smirnov_sf(n, x), p_scipy, 1e-10);
        }
    }

    #[test]
    fn chi2_sf_matches_scipy() {
        // python3 -c 'from scipy import stats; print(stats.chi2.sf(x, df))'
        let cases = [
            (0.5, 1.0, 0.47950012218695337),
            (3.0, 2.0, 0.22313016014842982),
            (10.0, 3.0, 0.01856613546304325),
            (25.0, 4.0, 5.0309817823062075e-05),
            (100.0, 9.0, 1.5735176303753876e-17),
            (1.0, 20.0, 0.999999999829033),
            (30.0, 20.0, 0.06985366069940986),
            (400.0, 5.0, 2.9666446590828377e-84),
            (0.01, 3.0, 0.9997348349413444),
            (7.5, 7.0, 0.37873690604821353),
        ];
        for (x, df, p_scipy) in cases {
            assert_close(chi2_sf(x, df), p_scipy, 1e-12);
        }
    }

    #[test]
    fn chisquare_matches_scipy_and_a_new_category_gives_zero() {
        // python3 -c 'from scipy import stats; print(stats.chisquare([10,20,30,40], [12,18,35,35])[1])'
        assert_close(
            chisquare_pvalue(&[10.0, 20.0, 30.0, 40.0], &[12.0, 18.0, 35.0, 35.0]),
            0.5757077363743452,
            1e-12,
        );
        // python3 -c 'from scipy import stats; print(stats.chisquare([105,98,97], [100.,100.,100.])[1])'
        assert_close(
            chisquare_pvalue(&[105.0, 98.0, 97.0], &[100.0, 100.0, 100.0]),
            0.8269591339433623,
            1e-12,
        );
        // A category only in the current data: expected 0, statistic inf, p = 0 (scipy too).
        assert_eq!(chisquare_pvalue(&[5.0, 5.0, 1.0], &[5.5, 5.5, 0.0]), 0.0);
    }

    #[test]
    fn normal_cdf_matches_scipy_ndtr() {
        // python3 -c 'from scipy import special; print(special.ndtr(z))'
        let cases = [
            (-3.0, 0.0013498980316300933),
            (-1.2, 0.11506967022170822),
            (-0.5, 0.3085375387259869),
            (0.0, 0.5),
            (0.3, 0.6179114221889526),
            (0.9, 0.8159398746532405),
            (1.7, 0.955434537241457),
            (4.0, 0.9999683287581669),
            (8.5, 1.0),
        ];
        for (z, p_scipy) in cases {
            assert_close(normal_cdf(z), p_scipy, 1e-14);
        }
        // Evidently's 2·(1 − Φ(|z|)) is 0 once Φ rounds to 1, not a tiny tail value.
        assert_eq!(proportions_z_test_pvalue(0.0, 1000.0, 1.0, 1000.0), 0.0);
    }

    #[test]
    fn wasserstein_matches_scipy() {
        // python3 -c 'from scipy import stats; print(stats.wasserstein_distance(a_data(300), b_data(450, 0.2)))'
        let w = wasserstein_distance(&sorted(a_data(300)), &sorted(b_data(450, 0.2)));
        assert_close(w, 0.19166761395297005, 1e-12);
        // python3 -c 'from scipy import stats; print(stats.wasserstein_distance([0,1,1,3], [0.5,1,2]))'
        assert_close(
            wasserstein_distance(&[0.0, 1.0, 1.0, 3.0], &[0.5, 1.0, 2.0]),
            0.5,
            1e-15,
        );
    }

    #[test]
    fn jensenshannon_matches_scipy_without_filling_zeroes() {
        // python3 -c 'from scipy.spatial import distance; print(distance.jensenshannon([.1,.2,.7,0], [.3,.3,.2,.2]))'
        assert_close(
            jensenshannon_distance(&[0.1, 0.2, 0.7, 0.0], &[0.3, 0.3, 0.2, 0.2]),
            0.4172043208164616,
            1e-14,
        );
        assert_eq!(jensenshannon_distance(&[0.5, 0.5], &[0.5, 0.5]), 0.0);
    }

    #[test]
    fn psi_fills_zeroes_like_evidently() {
        // Evidently: zeros -> 1e-4 when the smallest share > 1e-4, else min/1e6; then
        // python3 -c 'import numpy as np; r=np.array([.5,.5,1e-4]); c=np.array([.25,.25,.5]); print(np.sum((r-c)*np.log(r/c)))'
        let mut r = vec![0.5, 0.5, 0.0];
        let mut c = vec![0.25, 0.25, 0.5];
        fill_zeroes(&mut r);
        fill_zeroes(&mut c);
        assert_eq!(r, vec![0.5, 0.5, 1e-4]);
        assert_close(psi(&r, &c), 4.60431846666895, 1e-12);
        let mut tiny = vec![0.99995, 0.00005, 0.0];
        fill_zeroes(&mut tiny);
        assert_eq!(tiny[2], 0.00005 / 1e6);
    }

    #[test]
    fn sturges_edges_and_histogram_match_numpy() {
        // python3 -c 'import numpy as np; d=np.concatenate([a_data(3000), b_data(1000, .3)]);
        //   e=np.histogram_bin_edges(d, bins="sturges"); print(len(e)-1, e[:3], e[-2], np.histogram(d, e)[0])'
        let mut data = a_data(3000);
        data.extend(b_data(1000, 0.3));
        let data = sorted(data);
        let edges = sturges_bin_edges(data[0], data[data.len() - 1], data.len() as u64, false);
        assert_eq!(edges.len(), 14);
        assert_eq!(&edges[..3], &[0.0, 0.09992284545945528, 0.19984569091891055]);
        assert_eq!(edges[12], 1.1990741455134633);
        assert_eq!(edges[13], 1.2989969909729187);
        assert_eq!(
            histogram_sorted(&data, &edges),
            vec![300, 300, 300, 403, 400, 399, 400, 399, 400, 400, 99, 100, 100]
        );
        // Values on an edge go right, the maximum into the closed last bin.
        let steps: Vec<f64> = sorted([0.0, 1.0, 2.0, 2.5].repeat(1024));
        let edges = sturges_bin_edges(0.0, 2.5, 4096, false);
        assert_eq!(edges.len(), 14);
        assert_eq!(
            histogram_sorted(&steps, &edges),
            vec![1024, 0, 0, 0, 0, 1024, 0, 0, 0, 0, 1024, 0, 1024]
        );
        // A constant column: one bin widened by ±0.5.
        assert_eq!(sturges_bin_edges(3.0, 3.0, 10, false), vec![2.5, 3.5]);
        // Integer data (width >= 1): 40 ints in 0..=26 -> 7 bins.
        let int_edges = sturges_bin_edges(0.0, 26.0, 40, true);
        assert_eq!(
            int_edges,
            vec![
                0.0,
                3.7142857142857144,
                7.428571428571429,
                11.142857142857142,
                14.857142857142858,
                18.571428571428573,
                22.285714285714285,
                26.0
            ]
        );
        // python3 -c 'import numpy as np; print(np.histogram_bin_edges(np.arange(4096) % 6, bins="sturges"))'
        // 5/13 < 1, so numpy widens integer bins to 1: five bins, not thirteen.
        assert_eq!(
            sturges_bin_edges(0.0, 5.0, 4096, true),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        assert_eq!(sturges_bin_edges(0.0, 5.0, 4096, false).len(), 14);
    }
}
