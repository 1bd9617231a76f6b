//! The Open Inference Protocol v2 (KServe / Triton) JSON bodies and their conversion to
//! and from tensors. Shared by `kiln predict`, `kiln serve` and the edge workers.

use crate::tensor_json::{self, Values};
use kiln_types::{ElementType, Tensor};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// An OIP v2 inference request body, its inputs' data already read into tensor bytes
/// ([`InferRequest::from_json`]).
#[derive(Debug, Clone, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
    #[serde(default, deserialize_with = "parameters")]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// One input tensor of a request. Its `data` (flat or nested row-major) is read straight
/// into the element type's bytes as the body is parsed, never into a `Value` tree; when
/// `data` comes before `datatype` in the object, its text is kept (borrowed from the
/// body) and read once the datatype is known.
#[derive(Debug, Clone)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    data: Values,
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// A requested output.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "parameters"
    )]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

/// An OIP v2 inference response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor of a response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseOutput {
    pub name: String,
    pub shape: Vec<u64>,
    pub datatype: String,
    pub data: Data,
}

/// Output values, typed so floats print in their shortest exact form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Data {
    Bool(Vec<bool>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Why a request body could not become tensors (always the client's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

impl RequestInput {
    /// Converts to a tensor, checking datatype, shape, element count and ranges.
    /// `null` stands for NaN in float inputs (JSON has no NaN).
    pub fn to_tensor(&self) -> Result<Tensor, RequestError> {
        self.clone().into_tensor()
    }

    /// [`RequestInput::to_tensor`] without copying the data.
    pub fn into_tensor(self) -> Result<Tensor, RequestError> {
        let err = |m: String| RequestError(format!("input `{}`: {m}", self.name));
        let element_type = ElementType::from_oip_name(&self.datatype).ok_or_else(|| {
            err(format!(
                "unknown datatype `{}` (use one of {})",
                self.datatype,
                ElementType::ALL
                    .iter()
                    .map(|t| t.oip_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if self.shape.iter().any(|d| *d < 0) {
            return Err(err(format!("shape {:?} has a negative dimension", self.shape)));
        }
        let shape: Vec<u64> = self.shape.iter().map(|d| *d as u64).collect();
        let count = Tensor::element_count(&shape).map_err(|e| err(e.message().to_string()))?;
        if self.data.count() != count {
            return Err(err(format!(
                "shape {:?} needs {count} values, got {}",
                self.shape,
                self.data.count()
            )));
        }
        if let Some(why) = self.data.error() {
            return Err(err(why));
        }
        Ok(Tensor {
            name: self.name,
            element_type,
            shape,
            data: self.data.into_bytes(),
        })
    }
}

/// Longest `parameters` object read, in bytes of JSON: parameters are flags and sizes
/// (`binary_data_size`, `binary_data_output`), and they are read into a `Value` tree, which
/// costs many times its text.
pub const PARAMETERS_MAX: usize = 64 * 1024;

/// Reads a `parameters` object, refusing one longer than [`PARAMETERS_MAX`] before it
/// becomes a tree.
fn parameters<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Map<String, Value>>, D::Error> {
    let Some(raw) = Option::<&'de RawValue>::deserialize(d)? else {
        return Ok(None);
    };
    let text = raw.get();
    if text.len() > PARAMETERS_MAX {
        return Err(de::Error::custom(format_args!(
            "`parameters` is {} bytes of JSON, more than the {PARAMETERS_MAX} Kiln reads; \
             send tensor data in `data`, or as binary with the binary tensor extension",
            text.len()
        )));
    }
    serde_json::from_str(text).map(Some).map_err(de::Error::custom)
}

const INPUT_FIELDS: &[&str] = &["name", "shape", "datatype", "data", "parameters"];

impl<'de> Deserialize<'de> for RequestInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("RequestInput", INPUT_FIELDS, InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = RequestInput;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("struct RequestInput")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestInput, A::Error> {
        let mut name: Option<String> = None;
        let mut shape: Option<Vec<i64>> = None;
        let mut datatype: Option<String> = None;
        let mut data: Option<Values> = None;
        // `data` seen before `datatype`: its text, read once the type is known.
        let mut pending: Option<&'de RawValue> = None;
        let mut params: Option<Option<serde_json::Map<String, Value>>> = None;
        let values = |datatype: &str, shape: &Option<Vec<i64>>| {
            Values::new(
                ElementType::from_oip_name(datatype),
                shape.as_deref().and_then(tensor_json::declared_count),
            )
        };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "name" if name.is_some() => return Err(de::Error::duplicate_field("name")),
                "name" => name = Some(map.next_value()?),
                "shape" if shape.is_some() => return Err(de::Error::duplicate_field("shape")),
                "shape" => shape = Some(map.next_value()?),
                "datatype" if datatype.is_some() => return Err(de::Error::duplicate_field("datatype")),
                "datatype" => datatype = Some(map.next_value()?),
                "data" if data.is_some() || pending.is_some() => {
                    return Err(de::Error::duplicate_field("data"));
                }
                "data" => match &datatype {
                    Some(t) => {
                        let mut v = values(t, &shape);
                        map.next_value_seed(ReadValues(&mut v))?;
                        data = Some(v);
                    }
                    None => pending = Some(map.next_value()?),
                },
                "parameters" if params.is_some() => return Err(de::Error::duplicate_field("parameters")),
                "parameters" => params = Some(map.next_value_seed(Parameters)?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let shape = shape.ok_or_else(|| de::Error::missing_field("shape"))?;
        let datatype = datatype.ok_or_else(|| de::Error::missing_field("datatype"))?;
        let data = match (data, pending) {
            (Some(data), _) => data,
            (None, Some(raw)) => {
                let mut v = values(&datatype, &Some(shape.clone()));
                v.read_str(raw.get()).map_err(de::Error::custom)?;
                v
            }
            // No `data` reads as `null`, as the `Value` default did: one value. Inputs
            // sent as binary have none, and their `data` is not used.
            (None, None) => {
                let mut v = values(&datatype, &Some(shape.clone()));
                v.read_str("null").map_err(de::Error::custom)?;
                v
            }
        };
        Ok(RequestInput {
            name,
            shape,
            datatype,
            data,
            parameters: params.flatten(),
        })
    }
}

/// Reads a value into [`Values`] as a map's value.
struct ReadValues<'v>(&'v mut Values);

impl<'de> DeserializeSeed<'de> for ReadValues<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.read(d)
    }
}

/// [`parameters`] as a map's value.
struct Parameters;

impl<'de> DeserializeSeed<'de> for Parameters {
    type Value = Option<serde_json::Map<String, Value>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        parameters(d)
    }
}

impl InferRequest {
    /// Parses a JSON body, reading each input's `data` into its tensor's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<InferRequest, RequestError> {
        serde_json::from_slice(bytes).map_err(|e| RequestError(format!("malformed inference request: {e}")))
    }

    /// All inputs as tensors (copies of their data; see [`InferRequest::take_tensors`]).
    pub fn tensors(&self) -> Result<Vec<Tensor>, RequestError> {
        if self.inputs.is_empty() {
            return Err(RequestError("the request has no inputs".into()));
        }
        self.inputs.iter().map(RequestInput::to_tensor).collect()
    }

    /// All inputs as tensors, moved out of the request (which keeps no inputs).
    pub fn take_tensors(&mut self) -> Result<Vec<Tensor>, RequestError> {
        if self.inputs.is_empty() {
            return Err(RequestError("the request has no inputs".into()));
        }
        std::mem::take(&mut self.inputs)
            .into_iter()
            .map(RequestInput::into_tensor)
            .collect()
    }
}

impl ResponseOutput {
    /// Converts a tensor to its JSON form.
    pub fn from_tensor(t: &Tensor) -> Result<ResponseOutput, RequestError> {
        let values = t.to_f64_vec().map_err(|e| RequestError(e.to_string()))?;
        let data = match t.element_type {
            ElementType::Bool => Data::Bool(t.data.iter().map(|b| *b != 0).collect()),
            ElementType::F16 | ElementType::F32 => Data::F32(values.iter().map(|v| *v as f32).collect()),
            ElementType::F64 => Data::F64(values),
            ElementType::U64 => Data::U64(
                t.data
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            ElementType::I64 => Data::I64(
                t.data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            _ => Data::I64(values.iter().map(|v| *v as i64).collect()),
        };
        Ok(ResponseOutput {
            name: t.name.clone(),
            shape: t.shape.clone(),
            datatype: t.element_type.oip_name().to_string(),
            data,
        })
    }
}

impl InferResponse {
    /// A response for outputs of a model, keeping only `requested` outputs when given.
    pub fn new(
        model_name: &str,
        model_version: &str,
        id: Option<String>,
        outputs: &[Tensor],
        requested: Option<&[RequestOutput]>,
    ) -> Result<InferResponse, RequestError> {
        if let Some(req) = requested
            && let Some(unknown) = req.iter().find(|r| !outputs.iter().any(|o| o.name == r.name))
        {
            return Err(RequestError(format!(
                "unknown output `{}`; the model's outputs are: {}",
                unknown.name,
                outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let outputs = outputs
            .iter()
            .filter(|o| requested.is_none_or(|r| r.is_empty() || r.iter().any(|r| r.name == o.name)))
            .map(ResponseOutput::from_tensor)
            .collect::<Result<_, _>>()?;
        Ok(InferResponse {
            model_name: model_name.to_string(),
            model_version: model_version.to_string(),
            id,
            outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input parsed from JSON; `json!` sorts keys, so `data` comes before `datatype`.
    fn input(datatype: &str, shape: Vec<i64>, data: Value) -> RequestInput {
        let body = serde_json::json!({
            "inputs": [{ "name": "x", "shape": shape, "datatype": datatype, "data": data }]
        });
        parse(&body.to_string()).unwrap().inputs.remove(0)
    }

    fn parse(body: &str) -> Result<InferRequest, RequestError> {
        InferRequest::from_json(body.as_bytes())
    }

    fn tensor(body: &str) -> Result<Tensor, RequestError> {
        parse(body)?.take_tensors().map(|mut t| t.remove(0))
    }

    #[test]
    fn data_before_or_after_datatype_and_shape_gives_the_same_tensor() {
        let orders = [
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT16","data":[[1,-2],[3,4]]}]}"#,
            r#"{"inputs":[{"data":[[1,-2],[3,4]],"name":"x","shape":[2,2],"datatype":"INT16"}]}"#,
            r#"{"inputs":[{"name":"x","datatype":"INT16","data":[[1,-2],[3,4]],"shape":[2,2]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[2,2],"data":[1,-2,3,4],"datatype":"INT16"}]}"#,
        ];
        for body in orders {
            let t = tensor(body).unwrap();
            assert_eq!(t.shape, [2, 2], "{body}");
            assert_eq!(t.to_f64_vec().unwrap(), [1.0, -2.0, 3.0, 4.0], "{body}");
        }
    }

    #[test]
    fn null_is_nan_for_floats_and_an_error_for_integers_and_booleans() {
        for datatype in ["FP16", "FP32", "FP64"] {
            let t = input(datatype, vec![3], serde_json::json!([null, 1.5, [null]]))
                .into_tensor()
                .unwrap();
            let v = t.to_f64_vec().unwrap();
            assert!(v[0].is_nan() && v[1] == 1.5 && v[2].is_nan(), "{datatype}: {v:?}");
        }
        let e = tensor(r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1,null]}]}"#)
            .unwrap_err();
        assert_eq!(e.0, "input `x`: value 1: null is not an integer");
        let e = input("BOOL", vec![1], serde_json::json!([null]))
            .into_tensor()
            .unwrap_err();
        assert_eq!(e.0, "input `x`: value 0: null is not a boolean");
    }

    #[test]
    fn counts_are_checked_before_values_and_out_of_range_integers_refused() {
        // A count mismatch is reported even when a value is also wrong, as before.
        let e =
            tensor(r#"{"inputs":[{"name":"x","shape":[3],"datatype":"UINT8","data":[1,300]}]}"#).unwrap_err();
        assert_eq!(e.0, "input `x`: shape [3] needs 3 values, got 2");
        let e = tensor(r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT8","data":[[127],[-129]]}]}"#)
            .unwrap_err();
        assert_eq!(e.0, "input `x`: value 1: -129 is out of range for INT8");
        let e = tensor(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT32","data":[4294967296]}]}"#)
            .unwrap_err();
        assert!(e.0.ends_with("4294967296 is out of range for UINT32"), "{e}");
        let e = tensor(r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#).unwrap_err();
        assert!(e.0.contains("negative dimension"), "{e}");
    }

    #[test]
    fn a_huge_declared_shape_with_little_data_is_a_count_error_without_a_huge_allocation() {
        // 2^60 f64 values would be 8 EiB: reserving by the shape would abort the process.
        for body in [
            r#"{"inputs":[{"name":"x","shape":[1073741824,1073741824],"datatype":"FP64","data":[1,2]}]}"#,
            r#"{"inputs":[{"name":"x","data":[1,2],"shape":[1073741824,1073741824],"datatype":"FP64"}]}"#,
        ] {
            let e = tensor(body).unwrap_err();
            assert!(e.0.contains("needs 1152921504606846976 values, got 2"), "{e}");
        }
        let e = tensor(
            r#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,16],"datatype":"FP32","data":[1]}]}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("too large"), "{e}");
    }

    #[test]
    fn ten_thousand_levels_of_nesting_are_malformed_not_a_stack_overflow() {
        let deep = format!("{}1.0{}", "[".repeat(10_000), "]".repeat(10_000));
        for body in [
            format!(r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":{deep}}}]}}"#),
            format!(r#"{{"inputs":[{{"name":"x","data":{deep},"shape":[1],"datatype":"FP32"}}]}}"#),
            format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{{"a":{deep}}}}}]}}"#
            ),
        ] {
            let e = parse(&body).unwrap_err();
            assert!(
                e.0.starts_with("malformed inference request") && e.0.contains("recursion limit"),
                "{e}"
            );
        }
    }

    #[test]
    fn missing_data_is_one_null_and_unknown_fields_are_ignored() {
        let t = tensor(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","extra":[[1]]}],"more":{}}"#)
            .unwrap();
        assert!(t.to_f64_vec().unwrap()[0].is_nan());
        let e = tensor(r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32"}]}"#).unwrap_err();
        assert!(e.0.contains("needs 2 values, got 1"), "{e}");
    }

    #[test]
    fn structural_mistakes_are_malformed_requests() {
        for (body, want) in [
            (r#"{"inputs": 3}"#, "invalid type: integer `3`"),
            (
                r#"{"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]}"#,
                "missing field `name`",
            ),
            (
                r#"{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}"#,
                "missing field `shape`",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"data":[1]}]}"#,
                "missing field `datatype`",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"data":[2]}]}"#,
                "duplicate field `data`",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e999]}]}"#,
                "out of range",
            ),
            (
                r#"{"inputs":[{"name":"x","data":[1e999],"shape":[1],"datatype":"FP32"}]}"#,
                "out of range",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1,]}]}"#,
                "trailing comma",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert!(
                e.0.starts_with("malformed inference request: ") && e.0.contains(want),
                "{body}: {e}"
            );
        }
    }

    #[test]
    fn parameters_longer_than_the_limit_are_refused_before_becoming_a_tree() {
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(PARAMETERS_MAX));
        let bodies = [
            format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{big}}}]}}"#
            ),
            format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1]}}],"parameters":{big}}}"#
            ),
            format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1]}}],"outputs":[{{"name":"y","parameters":{big}}}]}}"#
            ),
        ];
        for body in bodies {
            let e = parse(&body).unwrap_err();
            assert!(e.0.contains("binary tensor extension"), "{e}");
        }
        let r = parse(
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":null}}],
                "parameters":{"binary_data_output":true},"outputs":[{"name":"y","parameters":null}]}"#,
        )
        .unwrap();
        assert!(r.inputs[0].parameters.is_some() && r.parameters.is_some());
        assert!(r.outputs.unwrap()[0].parameters.is_none());
    }

    #[test]
    fn nested_and_flat_data_give_the_same_tensor() {
        let flat = input("FP32", vec![2, 2], serde_json::json!([1.0, 2.0, 3.5, -4.0]))
            .to_tensor()
            .unwrap();
        let nested = input("FP32", vec![2, 2], serde_json::json!([[1.0, 2.0], [3.5, -4.0]]))
            .to_tensor()
            .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.to_f64_vec().unwrap(), vec![1.0, 2.0, 3.5, -4.0]);
    }

    #[test]
    fn wrong_count_bad_type_and_out_of_range_are_refused_with_reasons() {
        let e = input("FP32", vec![2, 3], serde_json::json!([1, 2]))
            .to_tensor()
            .unwrap_err();
        assert!(e.0.contains("needs 6 values, got 2"), "{e}");
        let e = input("FLOAT", vec![1], serde_json::json!([1]))
            .to_tensor()
            .unwrap_err();
        assert!(e.0.contains("unknown datatype `FLOAT`"), "{e}");
        let e = input("UINT8", vec![1], serde_json::json!([300]))
            .to_tensor()
            .unwrap_err();
        assert!(e.0.contains("out of range"), "{e}");
        let e = input("INT64", vec![1], serde_json::json!(["a"]))
            .to_tensor()
            .unwrap_err();
        assert!(e.0.contains("not an integer"), "{e}");
    }

    #[test]
    fn null_is_nan_for_floats_and_output_round_trips() {
        let t = input("FP64", vec![2], serde_json::json!([null, 2.5]))
            .to_tensor()
            .unwrap();
        let v = t.to_f64_vec().unwrap();
        assert!(v[0].is_nan() && v[1] == 2.5);
        let out = ResponseOutput::from_tensor(&Tensor::from_f32("y", &[2], &[0.1, 2.0])).unwrap();
        assert_eq!(serde_json::to_string(&out.data).unwrap(), "[0.1,2.0]");
    }

    #[test]
    fn every_datatype_gives_the_tensor_or_the_error_the_value_tree_gave() {
        let datas = [
            "[1, 2]",
            "[[1, 2], [3]]",
            "[[], [1, 2]]",
            "[null, 1.5]",
            "[true, false]",
            "[0, 1]",
            "[300, -1]",
            r#"["a", 1]"#,
            "[1e20, 2]",
            "[-129, 127]",
            "[18446744073709551615, 1]",
            "[-9223372036854775808, 1]",
            "[1.0, 2.5]",
            "[0.1, 65504.0]",
            "3",
            "null",
            "[[[]]]",
        ];
        let mut datatypes: Vec<&str> = ElementType::ALL.iter().map(|t| t.oip_name()).collect();
        datatypes.push("FLOAT");
        for data in datas {
            for datatype in &datatypes {
                for shape in ["[2]", "[1,2]", "[3]", "[-1]", "[1]"] {
                    let bodies = [
                        format!(
                            r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"{datatype}","data":{data}}}]}}"#
                        ),
                        format!(
                            r#"{{"inputs":[{{"data":{data},"name":"x","shape":{shape},"datatype":"{datatype}"}}]}}"#
                        ),
                    ];
                    for body in bodies {
                        let old =
                            crate::tensor_json::legacy::oip_tensors(body.as_bytes()).map(|mut t| t.remove(0));
                        let new = tensor(&body).map_err(|e| e.0);
                        assert_eq!(new, old, "{body}");
                    }
                }
            }
        }
    }
}
