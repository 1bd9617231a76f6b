//! A model's fallback: what answers when its version fails (trap, timeout, memory cap,
//! model or host error; never bad input or overload). Off by default. `previous` asks
//! another version this node serves (the newest one older than the failing version,
//! as a rollout's stable version or the previous Production version kept warm is);
//! `fixed` answers a configured row of outputs for every row of the request. Either
//! way the response says so in `x-kiln-fallback`, and the failure still counts against
//! the failing version (`kiln_fallback_total`, and the rollout analysis' error count).

use kiln_types::{ElementType, ModelInfo, Tensor};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The response header that marks an answer given by a fallback.
pub const FALLBACK_HEADER: &str = "x-kiln-fallback";

/// A model's fallback.
#[derive(Clone, Debug, PartialEq)]
pub enum Fallback {
    /// Another served version of the model.
    Previous,
    /// Fixed outputs: one row per output, repeated for every row of the request.
    Fixed(BTreeMap<String, Vec<f64>>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedFile {
    outputs: BTreeMap<String, Vec<f64>>,
}

impl Fallback {
    /// `previous`, or a fixed response read from JSON `{"outputs": {"NAME": [row values]}}`.
    pub fn fixed_from_json(json: &[u8]) -> Result<Fallback, String> {
        let file: FixedFile = serde_json::from_slice(json).map_err(|e| {
            format!("a fixed fallback is {{\"outputs\": {{\"NAME\": [values of one row]}}}}: {e}")
        })?;
        if file.outputs.is_empty() {
            return Err("a fixed fallback needs at least one output".into());
        }
        Ok(Fallback::Fixed(file.outputs))
    }

    /// The fallback a routing table's serving policy names (`None` for a name other than
    /// `previous`, which kiln.toml's check refuses before it gets here).
    pub fn from_policy(policy: &kiln_node_api::FallbackPolicy) -> Option<Fallback> {
        match policy {
            kiln_node_api::FallbackPolicy::Named(n) if n == "previous" => Some(Fallback::Previous),
            kiln_node_api::FallbackPolicy::Named(_) => None,
            kiln_node_api::FallbackPolicy::Fixed { outputs } => Some(Fallback::Fixed(
                outputs
                    .iter()
                    .map(|(name, row)| (name.clone(), row.iter().filter_map(|v| v.as_f64()).collect()))
                    .collect(),
            )),
        }
    }

    /// The label of metrics and of the response header.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fallback::Previous => "previous",
            Fallback::Fixed(_) => "fixed",
        }
    }
}

/// The fixed outputs for a request of `rows` rows, typed and shaped as the model
/// declares them (`[rows, ...]`, the other dimensions from the model, else the row's
/// length).
pub fn fixed_outputs(
    info: &ModelInfo,
    outputs: &BTreeMap<String, Vec<f64>>,
    rows: u64,
) -> Result<Vec<Tensor>, String> {
    let mut tensors = Vec::new();
    for (name, row) in outputs {
        let spec = info
            .outputs
            .iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| format!("the model has no output `{name}`"))?;
        let rest: Vec<u64> = match spec.shape.get(1..) {
            Some(dims) if !dims.is_empty() && dims.iter().all(|d| *d > 0) => {
                dims.iter().map(|d| *d as u64).collect()
            }
            Some(dims) if dims.is_empty() && row.len() == 1 => Vec::new(),
            _ => vec![row.len() as u64],
        };
        let per_row = rest.iter().product::<u64>() as usize;
        if per_row != row.len() {
            return Err(format!(
                "output `{name}` has {per_row} values per row, the fixed fallback gives {}",
                row.len()
            ));
        }
        let mut one = Vec::with_capacity(row.len() * spec.element_type.size());
        for v in row {
            encode(spec.element_type, *v, &mut one).map_err(|e| format!("output `{name}`: {e}"))?;
        }
        let mut shape = vec![rows];
        shape.extend(rest);
        tensors.push(Tensor {
            name: name.clone(),
            element_type: spec.element_type,
            shape,
            data: one.repeat(rows as usize),
        });
    }
    Ok(tensors)
}

fn encode(t: ElementType, v: f64, out: &mut Vec<u8>) -> Result<(), String> {
    let integral = |lo: f64, hi: f64| {
        if v.fract() == 0.0 && v >= lo && v <= hi {
            Ok(v)
        } else {
            Err(format!("{v} is not a {t} value"))
        }
    };
    match t {
        ElementType::F16 => out.extend(kiln_types::tensor::f16_from_f64(v).to_le_bytes()),
        ElementType::F32 => out.extend((v as f32).to_le_bytes()),
        ElementType::F64 => out.extend(v.to_le_bytes()),
        ElementType::I8 => out.extend((integral(i8::MIN as f64, i8::MAX as f64)? as i8).to_le_bytes()),
        ElementType::I16 => out.extend((integral(i16::MIN as f64, i16::MAX as f64)? as i16).to_le_bytes()),
        ElementType::I32 => out.extend((integral(i32::MIN as f64, i32::MAX as f64)? as i32).to_le_bytes()),
        ElementType::I64 => out.extend((integral(i64::MIN as f64, i64::MAX as f64)? as i64).to_le_bytes()),
        ElementType::U8 => out.push(integral(0.0, u8::MAX as f64)? as u8),
        ElementType::U16 => out.extend((integral(0.0, u16::MAX as f64)? as u16).to_le_bytes()),
        ElementType::U32 => out.extend((integral(0.0, u32::MAX as f64)? as u32).to_le_bytes()),
        ElementType::U64 => out.extend((integral(0.0, u64::MAX as f64)? as u64).to_le_bytes()),
        ElementType::Bool => out.push(integral(0.0, 1.0)? as u8),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_types::TensorSpec;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            version: "1".into(),
            source_digest: String::new(),
            inputs: vec![],
            outputs: vec![
                TensorSpec {
                    name: "label".into(),
                    element_type: ElementType::I64,
                    shape: vec![-1],
                },
                TensorSpec {
                    name: "probabilities".into(),
                    element_type: ElementType::F32,
                    shape: vec![-1, 3],
                },
            ],
            labels: vec![],
            metadata: vec![],
        }
    }

    #[test]
    fn a_fixed_row_is_repeated_for_every_row_and_typed_as_the_model_says() {
        let Fallback::Fixed(outputs) =
            Fallback::fixed_from_json(br#"{"outputs": {"label": [0], "probabilities": [1, 0, 0]}}"#).unwrap()
        else {
            panic!("not fixed")
        };
        let t = fixed_outputs(&info(), &outputs, 2).unwrap();
        assert_eq!(t[0].name, "label");
        assert_eq!(t[0].shape, vec![2]);
        assert_eq!(t[0].to_f64_vec().unwrap(), vec![0.0, 0.0]);
        assert_eq!(t[1].shape, vec![2, 3]);
        assert_eq!(t[1].element_type, ElementType::F32);
        assert_eq!(t[1].to_f64_vec().unwrap(), vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn a_fixed_fallback_that_does_not_fit_the_model_is_refused() {
        let fixed = |j: &str| match Fallback::fixed_from_json(j.as_bytes()).unwrap() {
            Fallback::Fixed(o) => o,
            Fallback::Previous => unreachable!(),
        };
        let e = fixed_outputs(&info(), &fixed(r#"{"outputs": {"nope": [1]}}"#), 1).unwrap_err();
        assert!(e.contains("no output `nope`"), "{e}");
        let e = fixed_outputs(&info(), &fixed(r#"{"outputs": {"probabilities": [1]}}"#), 1).unwrap_err();
        assert!(e.contains("3 values per row"), "{e}");
        let e = fixed_outputs(&info(), &fixed(r#"{"outputs": {"label": [0.5]}}"#), 1).unwrap_err();
        assert!(e.contains("not a INT64") || e.contains("not a"), "{e}");
        assert!(Fallback::fixed_from_json(br#"{"outputs": {}}"#).is_err());
        assert!(Fallback::fixed_from_json(br#"{"outputz": {}}"#).is_err());
    }
}
