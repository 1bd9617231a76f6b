//! The seed API, `POST /v1/models/{name}/predict`: features in, prediction and
//! confidence out, for models with one `[N, F]` input.
//!
//! One row: `{"features": [...], "model_version"?: "latest"|"3"|"Production"|"champion",
//! "request_id"?: "..."}` → `{"prediction", "confidence", "model_version", "request_id",
//! "timestamp", "processing_time"}`. Rows: `{"instances": [[...], ...]}` →
//! `{"predictions", "confidences", ...}`. Without `model_version` (or the forced-version
//! header) the model's weighted routing picks the version.

use crate::error::{ApiError, Protocol};
use crate::oip::RequestInput;
use kiln_types::{ElementType, ModelInfo, Tensor};
use serde_json::{Map, Value, json};

const INVALID: Protocol = Protocol::Seed;

/// The request, read leniently so each mistake gets its own message.
pub struct SeedRequest {
    pub rows: Vec<Vec<Value>>,
    pub batch: bool,
    /// `None`: the weighted routing chooses.
    pub version: Option<String>,
    pub request_id: Option<String>,
}

/// Reads a seed request body.
pub fn parse(body: &[u8]) -> Result<SeedRequest, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::invalid(INVALID, "the body must be a JSON object"));
    };
    let version = match obj.remove("model_version") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(ApiError::invalid(
                INVALID,
                format!("model_version must be a string or number, got {other}"),
            ));
        }
    };
    let request_id = match obj.remove("request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(ApiError::invalid(
                INVALID,
                format!("request_id must be a string, got {other}"),
            ));
        }
    };
    let features = obj.remove("features");
    let instances = obj.remove("instances");
    let (rows, batch) = match (features, instances) {
        (Some(Value::Array(row)), None) => (vec![row], false),
        (None, Some(Value::Array(rows))) => {
            if rows.is_empty() {
                return Err(ApiError::invalid(INVALID, "instances is empty"));
            }
            let rows = rows
                .into_iter()
                .enumerate()
                .map(|(i, r)| match r {
                    Value::Array(row) => Ok(row),
                    other => Err(ApiError::invalid(
                        INVALID,
                        format!("instance {i} must be an array of features, got {other}"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (rows, true)
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                INVALID,
                "give either `features` (one row) or `instances` (rows), not both",
            ));
        }
        (Some(other), None) => {
            return Err(ApiError::invalid(
                INVALID,
                format!("features must be an array of numbers, got {other}"),
            ));
        }
        (None, Some(other)) => {
            return Err(ApiError::invalid(
                INVALID,
                format!("instances must be an array of rows, got {other}"),
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                INVALID,
                "the body needs `features` (one row) or `instances` (rows)",
            ));
        }
    };
    Ok(SeedRequest {
        rows,
        batch,
        version,
        request_id,
    })
}

/// The input's name, element type and feature count, if the model fits the seed API.
pub fn feature_input(name: &str, info: &ModelInfo) -> Result<(String, ElementType, usize, bool), ApiError> {
    let use_oip = |why: String| {
        ApiError::invalid(
            INVALID,
            format!("{why}; use the Open Inference Protocol endpoint POST /v2/models/{name}/infer"),
        )
    };
    let [input] = info.inputs.as_slice() else {
        let names: Vec<&str> = info.inputs.iter().map(|s| s.name.as_str()).collect();
        return Err(use_oip(format!(
            "model `{name}` has {} inputs ({}), the predict endpoint takes models with one",
            names.len(),
            names.join(", ")
        )));
    };
    match input.shape.as_slice() {
        [rows, features] if *features >= 0 => Ok((
            input.name.clone(),
            input.element_type,
            *features as usize,
            *rows == 1,
        )),
        _ => Err(use_oip(format!(
            "model `{name}` takes input shape {}, the predict endpoint takes [N, features]",
            kiln_types::format_shape(&input.shape)
        ))),
    }
}

/// The model's input tensor for a parsed request, after checking it fits the model.
pub fn input_tensor(name: &str, info: &ModelInfo, request: SeedRequest) -> Result<(Tensor, usize), ApiError> {
    let (input_name, element_type, width, one_row) = feature_input(name, info)?;
    if one_row && request.rows.len() > 1 {
        return Err(ApiError::invalid(
            INVALID,
            format!(
                "model `{name}` takes one row at a time, got {} instances; send them one by one",
                request.rows.len()
            ),
        ));
    }
    for (i, row) in request.rows.iter().enumerate() {
        if row.len() != width {
            let message = format!("expected {width} features, got {}", row.len());
            return Err(ApiError::invalid(
                INVALID,
                if request.batch {
                    format!("instance {i}: {message}")
                } else {
                    message
                },
            ));
        }
    }
    let rows = request.rows.len();
    let input = RequestInput {
        name: input_name,
        shape: vec![rows as i64, width as i64],
        datatype: element_type.oip_name().to_string(),
        data: Value::Array(request.rows.into_iter().flatten().collect()),
        parameters: None,
    }
    .to_tensor()
    .map_err(|e| ApiError::invalid(INVALID, e.0))?;
    Ok((input, rows))
}

/// What a seed answer says besides the model's outputs.
pub struct Answer<'a> {
    /// `{"instances": ...}` (plural fields) rather than `{"features": ...}`.
    pub batch: bool,
    /// The version that answered.
    pub version_label: &'a str,
    pub request_id: String,
    /// RFC 3339.
    pub timestamp: String,
    /// Seconds.
    pub processing_time: f64,
}

/// The response body for a model's outputs on `rows` rows.
pub fn response_body(
    info: &ModelInfo,
    outputs: &[Tensor],
    rows: usize,
    answer: Answer<'_>,
) -> Result<Value, ApiError> {
    let (predictions, confidences) = interpret(info, outputs, rows)
        .map_err(|m| ApiError::internal(format!("reading the model's outputs: {m}")))?;
    let mut body = Map::new();
    if answer.batch {
        body.insert("predictions".into(), Value::Array(predictions));
        body.insert("confidences".into(), Value::Array(confidences));
    } else {
        body.insert(
            "prediction".into(),
            predictions.into_iter().next().unwrap_or(Value::Null),
        );
        body.insert(
            "confidence".into(),
            confidences.into_iter().next().unwrap_or(Value::Null),
        );
    }
    body.insert("model_version".into(), json!(answer.version_label));
    body.insert("request_id".into(), json!(answer.request_id));
    body.insert("timestamp".into(), json!(answer.timestamp));
    body.insert("processing_time".into(), json!(answer.processing_time));
    Ok(Value::Object(body))
}

/// A number as JSON (NaN and infinities, which JSON lacks, as null).
fn number(v: f64, integer: bool) -> Value {
    if integer && v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

fn is_integer(t: ElementType) -> bool {
    !matches!(t, ElementType::F16 | ElementType::F32 | ElementType::F64)
}

/// The values of an output split into `rows` rows.
fn rows_of(t: &Tensor, rows: usize) -> Result<Vec<Vec<f64>>, String> {
    let values = t.to_f64_vec().map_err(|e| e.to_string())?;
    if rows == 0 || values.len() % rows != 0 {
        return Err(format!(
            "output `{}` has {} values, not a multiple of {rows} rows",
            t.name,
            values.len()
        ));
    }
    let width = values.len() / rows;
    Ok(values.chunks(width.max(1)).map(<[f64]>::to_vec).collect())
}

/// A class label as JSON: the label output holds the class itself when it is one of the
/// model's labels (sklearn's `classlabels_int64s`), else an index into string labels.
fn label_value(v: f64, integer: bool, labels: &[String]) -> Value {
    if labels.is_empty() || !integer {
        return number(v, integer);
    }
    let as_text = (v as i64).to_string();
    if labels.contains(&as_text) {
        return number(v, true);
    }
    let numeric = labels.iter().all(|l| l.parse::<i64>().is_ok());
    match usize::try_from(v as i64).ok().and_then(|i| labels.get(i)) {
        Some(label) if !numeric => Value::String(label.clone()),
        _ => number(v, true),
    }
}

/// Predictions and confidences per row.
///
/// A classifier (class labels in its info, or a label output next to a probabilities
/// output) predicts its label, with the top class probability as confidence. A
/// regressor predicts its output value (an array when it has several per row); its
/// confidence is null: a regressor has no calibrated confidence, and Kiln returns null
/// rather than invent one.
pub fn interpret(
    info: &ModelInfo,
    outputs: &[Tensor],
    rows: usize,
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let named = |part: &str| {
        outputs
            .iter()
            .position(|t| t.name.to_ascii_lowercase().contains(part))
    };
    let label_ix = named("label");
    let prob_ix = named("prob").or_else(|| {
        (!info.labels.is_empty())
            .then(|| {
                (0..outputs.len()).find(|i| Some(*i) != label_ix && !is_integer(outputs[*i].element_type))
            })
            .flatten()
    });
    let classifier = !info.labels.is_empty() || (label_ix.is_some() && prob_ix.is_some());
    if !classifier {
        let out = outputs.first().ok_or("the model returned no outputs")?;
        let integer = is_integer(out.element_type);
        let predictions = rows_of(out, rows)?
            .into_iter()
            .map(|row| match row.as_slice() {
                [single] => number(*single, integer),
                many => Value::Array(many.iter().map(|v| number(*v, integer)).collect()),
            })
            .collect();
        return Ok((predictions, vec![Value::Null; rows]));
    }
    let probabilities = match prob_ix.and_then(|i| outputs.get(i)) {
        Some(t) => Some(rows_of(t, rows)?),
        None => None,
    };
    let top = |row: &[f64]| {
        row.iter()
            .copied()
            .enumerate()
            .fold(None, |best: Option<(usize, f64)>, (i, p)| match best {
                Some((_, b)) if b >= p || p.is_nan() => best,
                _ => Some((i, p)),
            })
    };
    let confidences = match &probabilities {
        Some(p) => p
            .iter()
            .map(|row| top(row).map_or(Value::Null, |(_, p)| number(p, false)))
            .collect(),
        None => vec![Value::Null; rows],
    };
    let predictions = match label_ix.and_then(|i| outputs.get(i)) {
        Some(t) => {
            let integer = is_integer(t.element_type);
            rows_of(t, rows)?
                .into_iter()
                .map(|row| match row.as_slice() {
                    [v] => label_value(*v, integer, &info.labels),
                    other => Value::Array(other.iter().map(|v| number(*v, integer)).collect()),
                })
                .collect()
        }
        // No label output: the most probable class.
        None => probabilities
            .iter()
            .flatten()
            .map(|row| match top(row) {
                Some((i, _)) => match info.labels.get(i) {
                    Some(l) => l
                        .parse::<i64>()
                        .map_or_else(|_| Value::String(l.clone()), |n| json!(n)),
                    None => json!(i),
                },
                None => Value::Null,
            })
            .collect(),
    };
    Ok((predictions, confidences))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_types::TensorSpec;
    use serde_json::json;

    fn info(labels: &[&str], outputs: &[(&str, ElementType)]) -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            version: String::new(),
            source_digest: String::new(),
            inputs: vec![TensorSpec {
                name: "X".into(),
                element_type: ElementType::F32,
                shape: vec![-1, 2],
            }],
            outputs: outputs
                .iter()
                .map(|(n, t)| TensorSpec {
                    name: n.to_string(),
                    element_type: *t,
                    shape: vec![-1],
                })
                .collect(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            metadata: vec![],
        }
    }

    #[test]
    fn string_labels_are_looked_up_and_integer_labels_kept() {
        let probs = Tensor::from_f32("probabilities", &[2, 2], &[0.25, 0.75, 0.9, 0.1]);
        let i = info(
            &["cat", "dog"],
            &[("label", ElementType::I64), ("probabilities", ElementType::F32)],
        );
        let (p, c) = interpret(&i, &[Tensor::from_i64("label", &[1, 0]), probs.clone()], 2).unwrap();
        assert_eq!(p, vec![json!("dog"), json!("cat")]);
        assert_eq!(c, vec![json!(0.75), json!(0.8999999761581421)]);

        let i = info(
            &["3", "7"],
            &[("label", ElementType::I64), ("probabilities", ElementType::F32)],
        );
        let (p, _) = interpret(&i, &[Tensor::from_i64("label", &[7, 3]), probs.clone()], 2).unwrap();
        assert_eq!(p, vec![json!(7), json!(3)]);

        // Probabilities only: the most probable class.
        let i = info(&["3", "7"], &[("scores", ElementType::F32)]);
        let (p, _) = interpret(&i, &[probs], 2).unwrap();
        assert_eq!(p, vec![json!(7), json!(3)]);
    }

    #[test]
    fn regressors_have_null_confidence() {
        let i = info(&[], &[("variable", ElementType::F32)]);
        let out = Tensor::from_f32("variable", &[2, 1], &[1.5, f32::NAN]);
        let (p, c) = interpret(&i, &[out], 2).unwrap();
        assert_eq!(p, vec![json!(1.5), Value::Null]);
        assert_eq!(c, vec![Value::Null, Value::Null]);
    }
}
