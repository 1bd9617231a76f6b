//! The seed API, `POST /v1/models/{name}/predict`: features in, prediction and
//! confidence out, for models with one `[N, F]` input.
//!
//! One row: `{"features": [...], "model_version"?: "latest"|"3"|"Production"|"champion",
//! "request_id"?: "..."}` → `{"prediction", "confidence", "model_version", "request_id",
//! "timestamp", "processing_time"}`. Rows: `{"instances": [[...], ...]}` →
//! `{"predictions", "confidences", ...}`. Without `model_version` (or the forced-version
//! header) the model's weighted routing picks the version.

use crate::error::{ApiError, Protocol};
use crate::tensor_json::{Rows, shown};
use kiln_types::{ElementType, ModelInfo, Tensor};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

const INVALID: Protocol = Protocol::Seed;

/// The request, read leniently so each mistake gets its own message. The features stay
/// JSON text borrowed from the body until the version, and so the model's element type,
/// is known; then they are read straight into the input tensor ([`input_tensor`]).
pub struct SeedRequest<'a> {
    /// `features` (one row) or `instances` (rows), as sent; checked to be an array (of
    /// arrays, for `instances`).
    features: &'a RawValue,
    /// How many rows `features` holds.
    rows: usize,
    pub batch: bool,
    /// `None`: the weighted routing chooses.
    pub version: Option<String>,
    pub request_id: Option<String>,
}

/// The fields of a seed body as JSON text: later duplicates win, as in a `Value` map.
#[derive(Default)]
struct Fields<'a> {
    model_version: Option<&'a RawValue>,
    request_id: Option<&'a RawValue>,
    features: Option<&'a RawValue>,
    instances: Option<&'a RawValue>,
}

/// A body that is not a JSON object (read to the end, so malformed JSON is still told).
struct NotAnObject;

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Result<Fields<'de>, NotAnObject>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "model_version" => &mut fields.model_version,
                "request_id" => &mut fields.request_id,
                "features" => &mut fields.features,
                "instances" => &mut fields.instances,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(Ok(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(NotAnObject))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }
}

/// The first character of a raw JSON value, which says its kind.
fn kind(raw: &RawValue) -> u8 {
    raw.get().bytes().next().unwrap_or(b' ')
}

/// A scalar field (`model_version`, `request_id`): `None` for null, the text of a
/// string, and of a number when `numbers` allows one.
fn scalar(raw: Option<&RawValue>, numbers: bool) -> Result<Option<String>, ()> {
    let Some(raw) = raw else { return Ok(None) };
    match kind(raw) {
        b'n' => Ok(None),
        b'"' => serde_json::from_str(raw.get()).map(Some).map_err(|_| ()),
        b'-' | b'0'..=b'9' if numbers => serde_json::from_str::<serde_json::Number>(raw.get())
            .map(|n| Some(n.to_string()))
            .map_err(|_| ()),
        _ => Err(()),
    }
}

/// How many rows `instances` has, and the first that is not an array (index and text).
type Instances<'a> = (usize, Option<(usize, &'a RawValue)>);

/// How many elements a JSON array has, and the first that is not itself an array.
fn rows_of_instances(raw: &RawValue) -> Result<Instances<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let found = (&mut de).deserialize_seq(InstancesVisitor)?;
    de.end()?;
    Ok(found)
}

/// Counts the instances and finds the first that is not an array, reading each as
/// borrowed text (nothing is allocated per row).
struct InstancesVisitor;

impl<'de> Visitor<'de> for InstancesVisitor {
    type Value = Instances<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut rows, mut misfit) = (0, None);
        while let Some(row) = seq.next_element::<&'de RawValue>()? {
            if misfit.is_none() && kind(row) != b'[' {
                misfit = Some((rows, row));
            }
            rows += 1;
        }
        Ok((rows, misfit))
    }
}

/// Reads a seed request body.
pub fn parse(body: &[u8]) -> Result<SeedRequest<'_>, ApiError> {
    let malformed = |e: serde_json::Error| ApiError::bad_request(format!("malformed JSON: {e}"));
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = (&mut de).deserialize_any(BodyVisitor).map_err(malformed)?;
    de.end().map_err(malformed)?;
    let Ok(fields) = fields else {
        return Err(ApiError::invalid(INVALID, "the body must be a JSON object"));
    };
    let version = scalar(fields.model_version, true).map_err(|()| {
        ApiError::invalid(
            INVALID,
            format!(
                "model_version must be a string or number, got {}",
                fields.model_version.map(shown).unwrap_or_default()
            ),
        )
    })?;
    let request_id = scalar(fields.request_id, false).map_err(|()| {
        ApiError::invalid(
            INVALID,
            format!(
                "request_id must be a string, got {}",
                fields.request_id.map(shown).unwrap_or_default()
            ),
        )
    })?;
    let (features, rows, batch) = match (fields.features, fields.instances) {
        (Some(row), None) if kind(row) == b'[' => (row, 1, false),
        (None, Some(rows)) if kind(rows) == b'[' => {
            let (count, misfit) = rows_of_instances(rows).map_err(malformed)?;
            if count == 0 {
                return Err(ApiError::invalid(INVALID, "instances is empty"));
            }
            if let Some((i, other)) = misfit {
                return Err(ApiError::invalid(
                    INVALID,
                    format!("instance {i} must be an array of features, got {}", shown(other)),
                ));
            }
            (rows, count, true)
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
                format!("features must be an array of numbers, got {}", shown(other)),
            ));
        }
        (None, Some(other)) => {
            return Err(ApiError::invalid(
                INVALID,
                format!("instances must be an array of rows, got {}", shown(other)),
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
        features,
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

/// The model's input tensor for a parsed request, after checking it fits the model: the
/// features are read straight into the tensor's bytes.
pub fn input_tensor(
    name: &str,
    info: &ModelInfo,
    request: SeedRequest<'_>,
) -> Result<(Tensor, usize), ApiError> {
    let (input_name, element_type, width, one_row) = feature_input(name, info)?;
    if one_row && request.rows > 1 {
        return Err(ApiError::invalid(
            INVALID,
            format!(
                "model `{name}` takes one row at a time, got {} instances; send them one by one",
                request.rows
            ),
        ));
    }
    let mut read = Rows::new(element_type, width, request.rows);
    read.read_str(request.features.get(), request.batch)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    if let Some((i, len)) = read.first_misfit {
        let message = format!("expected {width} features, got {len}");
        return Err(ApiError::invalid(
            INVALID,
            if request.batch {
                format!("instance {i}: {message}")
            } else {
                message
            },
        ));
    }
    let rows = read.rows;
    let shape = vec![rows as u64, width as u64];
    let invalid = |m: String| ApiError::invalid(INVALID, format!("input `{input_name}`: {m}"));
    // Every row has `width` values, so only values nested inside a row can make the count
    // differ (`flatten` counted them too).
    let count = rows * width;
    if read.values.count() != count {
        return Err(invalid(format!(
            "shape {shape:?} needs {count} values, got {}",
            read.values.count()
        )));
    }
    if let Some(why) = read.values.error() {
        return Err(invalid(why));
    }
    let input = Tensor {
        name: input_name,
        element_type,
        shape,
        data: read.values.into_bytes(),
    };
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

    fn one_input(element_type: ElementType, shape: Vec<i64>) -> ModelInfo {
        ModelInfo {
            inputs: vec![TensorSpec {
                name: "X".into(),
                element_type,
                shape,
            }],
            ..info(&[], &[])
        }
    }

    fn tensor(body: &str, info: &ModelInfo) -> Result<(Tensor, usize), (u16, String)> {
        parse(body.as_bytes())
            .and_then(|r| input_tensor("m", info, r))
            .map_err(|e| (e.status, e.message))
    }

    #[test]
    fn every_body_gives_the_tensor_or_the_error_the_value_tree_gave() {
        let bodies = [
            r#"{"features": [1, 2]}"#,
            r#"{"features": [1, null]}"#,
            r#"{"features": [1, "x"]}"#,
            r#"{"features": [[1, 2], [3, 4]]}"#,
            r#"{"features": [[1], 2]}"#,
            r#"{"features": [1, 2], "features": [3]}"#,
            r#"{"instances": [[1, 2], [3, 4]]}"#,
            r#"{"instances": [[1, 2], [3]]}"#,
            r#"{"instances": [[1, 2], [3, [4]]]}"#,
            r#"{"instances": []}"#,
            r#"{"instances": [[1, 2], 3]}"#,
            r#"{"instances": [[1, 2], {"a": [1, 2]}]}"#,
            r#"{"instances": 3}"#,
            r#"{"features": 3}"#,
            r#"{"features": {"a": 1}}"#,
            r#"{"features": [1, 2], "instances": [[1, 2]]}"#,
            r#"{"rows": [1, 2]}"#,
            r#"{}"#,
            r#"[1, 2]"#,
            r#"3"#,
            r#""features""#,
            r#"{"model_version": true, "features": [1, 2]}"#,
            r#"{"model_version": [1], "features": [1, 2]}"#,
            r#"{"model_version": 3, "request_id": null, "features": [1, 2]}"#,
            r#"{"model_version": "Production", "features": [1, 2]}"#,
            r#"{"request_id": 5, "features": [1, 2]}"#,
            r#"{"request_id": "r", "features": [true, false], "other": [[[]]]}"#,
            r#"{"features": [300, -1]}"#,
            r#"{"features": [1.5, 0]}"#,
        ];
        for element_type in [
            ElementType::F32,
            ElementType::I64,
            ElementType::U8,
            ElementType::Bool,
        ] {
            for one_row in [false, true] {
                let rows = if one_row { 1 } else { -1 };
                let info = one_input(element_type, vec![rows, 2]);
                for body in bodies {
                    let old =
                        crate::tensor_json::legacy::seed_tensor(body.as_bytes(), element_type, 2, one_row);
                    assert_eq!(
                        tensor(body, &info),
                        old,
                        "{element_type} one_row={one_row}: {body}"
                    );
                }
            }
        }
    }

    #[test]
    fn seed_fields_and_malformed_bodies_are_read_as_before() {
        let r = parse(br#"{"model_version": 3, "request_id": "abc", "features": [1, 2]}"#).unwrap();
        assert_eq!(
            (r.version.as_deref(), r.request_id.as_deref()),
            (Some("3"), Some("abc"))
        );
        assert!(!r.batch);
        let r = parse(br#"{"model_version": "champion", "instances": [[1, 2]]}"#).unwrap();
        assert_eq!(
            (r.version.as_deref(), r.batch, r.rows),
            (Some("champion"), true, 1)
        );
        let e = parse(b"{\"features\": [1, 2").err().unwrap();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("malformed JSON: "), "{}", e.message);
        // A long wrong value is quoted cut short, never parsed into a tree.
        let long = format!(r#"{{"features": {{"a": "{}"}}}}"#, "x".repeat(10_000));
        let e = parse(long.as_bytes()).err().unwrap();
        assert!(e.message.len() < 200 && e.message.ends_with('…'), "{}", e.message);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let info = one_input(ElementType::F32, vec![-1, 2]);
        let (status, message) = tensor(&format!(r#"{{"features": {deep}}}"#), &info).unwrap_err();
        assert_eq!(status, 400);
        assert!(message.contains("recursion limit"), "{message}");
        let (status, message) = tensor(&format!(r#"{{"instances": [{deep}]}}"#), &info).unwrap_err();
        assert_eq!(status, 400);
        assert!(message.contains("recursion limit"), "{message}");
        let (status, _) = tensor(&deep, &info).unwrap_err();
        assert_eq!(status, 422);
    }
}
