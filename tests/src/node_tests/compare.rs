//! Comparing outputs with the references, with numpy's tolerances.

use super::*;

/// Float tolerances, compared as numpy's `assert_allclose` does:
/// `|got - expected| <= atol + rtol * |expected|`, NaN equal to NaN.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Default for Tolerance {
    /// `rtol=1e-3, atol=1e-5`. The onnx backend runner uses `atol=1e-7`, tighter than
    /// float32 rounding of outputs near zero: the DFT cases then pass or fail on 2e-6 of
    /// noise depending on the SIMD kernels (native AVX vs wasm simd128).
    fn default() -> Self {
        Tolerance {
            rtol: 1e-3,
            atol: 1e-5,
        }
    }
}

/// Compares outputs with the references by position: count, element type, shape, then
/// values (floats within `tol`, everything else exactly).
pub fn compare(got: &[Tensor], expected: &[Tensor], tol: Tolerance) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!("{} output(s), expected {}", got.len(), expected.len()));
    }
    for (ix, (g, e)) in got.iter().zip(expected).enumerate() {
        let what = format!("output #{ix} `{}`", e.name);
        if g.element_type != e.element_type {
            return Err(format!(
                "{what} is {}, expected {}",
                g.element_type, e.element_type
            ));
        }
        if g.shape != e.shape {
            return Err(format!("{what} has shape {:?}, expected {:?}", g.shape, e.shape));
        }
        let float = matches!(
            e.element_type,
            ElementType::F16 | ElementType::F32 | ElementType::F64
        );
        if !float {
            if g.data != e.data {
                let n = e.element_type.size();
                let at = g
                    .data
                    .chunks(n)
                    .zip(e.data.chunks(n))
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Err(format!("{what} differs at element {at}"));
            }
            continue;
        }
        let (a, b) = match (g.to_f64_vec(), e.to_f64_vec()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(err), _) | (_, Err(err)) => return Err(format!("{what}: {err}")),
        };
        let bad = a
            .iter()
            .zip(&b)
            .enumerate()
            .filter(|(_, (x, y))| !close(**x, **y, tol));
        let (count, first) = bad.fold((0usize, None), |(n, first), item| (n + 1, first.or(Some(item))));
        if let Some((at, (x, y))) = first {
            return Err(format!(
                "{what}: {count} of {} values differ beyond rtol {} / atol {}; first at {at}: {x} vs {y}",
                b.len(),
                tol.rtol,
                tol.atol
            ));
        }
    }
    Ok(())
}

/// numpy's `isclose` with `equal_nan`: infinities must match exactly.
pub(super) fn close(got: f64, expected: f64, tol: Tolerance) -> bool {
    if got.is_nan() || expected.is_nan() {
        return got.is_nan() && expected.is_nan();
    }
    if got.is_infinite() || expected.is_infinite() {
        return got == expected;
    }
    (got - expected).abs() <= tol.atol + tol.rtol * expected.abs()
}
