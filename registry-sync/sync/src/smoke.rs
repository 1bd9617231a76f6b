//! Smoke tests: a version's golden request/response pairs, replayed on a node before the
//! version gets any traffic there.

use serde_json::Value;

/// Relative tolerance of a float output against its golden value.
const TOLERANCE: f64 = 1e-4;

/// Compares an OIP infer answer with the golden one: every golden output is present with
/// the same shape and datatype and values within tolerance. Returns what differs.
pub fn compare(golden: &Value, actual: &Value) -> Result<(), String> {
    let outputs = |v: &Value| -> Vec<Value> {
        v.get("outputs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let actual_outputs = outputs(actual);
    for expected in outputs(golden) {
        let name = expected.get("name").and_then(Value::as_str).unwrap_or("");
        let Some(got) = actual_outputs
            .iter()
            .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
        else {
            return Err(format!("output `{name}` is missing"));
        };
        if expected.get("shape") != got.get("shape") {
            return Err(format!(
                "output `{name}` has shape {}, golden {}",
                got.get("shape").unwrap_or(&Value::Null),
                expected.get("shape").unwrap_or(&Value::Null)
            ));
        }
        let flat = |v: &Value| -> Vec<Value> {
            let mut out = Vec::new();
            let mut stack = vec![v.get("data").cloned().unwrap_or(Value::Null)];
            while let Some(x) = stack.pop() {
                match x {
                    Value::Array(items) => stack.extend(items.into_iter().rev()),
                    other => out.push(other),
                }
            }
            out
        };
        let (e, g) = (flat(&expected), flat(got));
        if e.len() != g.len() {
            return Err(format!(
                "output `{name}` has {} values, golden {}",
                g.len(),
                e.len()
            ));
        }
        for (i, (a, b)) in e.iter().zip(&g).enumerate() {
            let same = match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= TOLERANCE * x.abs().max(1.0),
                _ => a == b,
            };
            if !same {
                return Err(format!("output `{name}` value {i} is {b}, golden {a}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn within_tolerance_passes_and_differences_are_named() {
        let golden =
            json!({"outputs": [{"name": "y", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]});
        assert!(
            compare(
                &golden,
                &json!({"outputs": [{"name": "y", "shape": [2], "data": [1.00001, 2.0]}]})
            )
            .is_ok()
        );
        let e = compare(
            &golden,
            &json!({"outputs": [{"name": "y", "shape": [2], "data": [1.5, 2.0]}]}),
        )
        .unwrap_err();
        assert!(e.contains("value 0"), "{e}");
        let e = compare(&golden, &json!({"outputs": []})).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
