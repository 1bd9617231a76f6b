//! Tensors between JavaScript and the engine: typed arrays in, typed arrays out.
//!
//! Inputs are either an object `{ name: TypedArray | {datatype?, shape?, data} }` or an
//! array of `{name, datatype?, shape?, data}` (the Open Inference Protocol's input shape);
//! `data` is a typed array or a plain array of numbers (BigInts allowed for 64-bit
//! integers). A missing shape is the model's, with its one dynamic dimension worked out
//! from the data length; a missing datatype is the typed array's, else the model's.

use js_sys::{Array, Object, Reflect, Uint8Array};
use kiln_engine::{ElementType, Tensor, TensorSpec};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// Converts the JS inputs of `predict` into engine tensors, checked against `specs`.
pub fn inputs_from_js(inputs: &JsValue, specs: &[TensorSpec]) -> Result<Vec<Tensor>, String> {
    if Array::is_array(inputs) {
        let array: &Array = inputs.unchecked_ref();
        return array
            .iter()
            .enumerate()
            .map(|(ix, item)| {
                let name = get(&item, "name")
                    .as_string()
                    .ok_or_else(|| format!("inputs[{ix}] has no `name`"))?;
                tensor_from_js(&name, &item, specs)
            })
            .collect();
    }
    if !inputs.is_object() {
        return Err(
            "predict takes { inputName: Float32Array, ... } or [{ name, datatype, shape, data }, ...]".into(),
        );
    }
    Object::entries(inputs.unchecked_ref())
        .iter()
        .map(|entry| {
            let entry: Array = entry.unchecked_into();
            let name = entry.get(0).as_string().unwrap_or_default();
            let value = entry.get(1);
            if is_typed_array(&value) || Array::is_array(&value) {
                tensor_from_parts(&name, &value, None, &JsValue::UNDEFINED, specs)
            } else {
                tensor_from_js(&name, &value, specs)
            }
        })
        .collect()
}

thread_local! {
    /// JS strings made once: property keys, output names, datatypes. Creating a JS string
    /// from wasm decodes UTF-8 each time, a visible share of a small model's call.
    static INTERNED: std::cell::RefCell<std::collections::HashMap<String, JsValue>> =
        Default::default();
}

/// The JS string for `s`, made on first use.
pub fn intern(s: &str) -> JsValue {
    INTERNED.with(|m| {
        if let Some(v) = m.borrow().get(s) {
            return v.clone();
        }
        let v = JsValue::from_str(s);
        m.borrow_mut().insert(s.to_string(), v.clone());
        v
    })
}

fn get(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &intern(key)).unwrap_or(JsValue::UNDEFINED)
}

#[wasm_bindgen]
extern "C" {
    /// Any typed array (`ArrayBuffer.isView` and not a `DataView`).
    type View;
    #[wasm_bindgen(method, getter)]
    fn buffer(this: &View) -> js_sys::ArrayBuffer;
    #[wasm_bindgen(method, getter, js_name = byteOffset)]
    fn byte_offset(this: &View) -> u32;
    #[wasm_bindgen(method, getter, js_name = byteLength)]
    fn byte_length(this: &View) -> u32;
}

fn is_typed_array(v: &JsValue) -> bool {
    js_sys::ArrayBuffer::is_view(v) && !v.is_instance_of::<js_sys::DataView>()
}

/// The element type a typed array holds.
fn typed_array_type(v: &JsValue) -> Option<ElementType> {
    Some(if v.is_instance_of::<js_sys::Float32Array>() {
        ElementType::F32
    } else if v.is_instance_of::<js_sys::Float64Array>() {
        ElementType::F64
    } else if v.is_instance_of::<js_sys::Int8Array>() {
        ElementType::I8
    } else if v.is_instance_of::<js_sys::Int16Array>() {
        ElementType::I16
    } else if v.is_instance_of::<js_sys::Int32Array>() {
        ElementType::I32
    } else if v.is_instance_of::<js_sys::BigInt64Array>() {
        ElementType::I64
    } else if v.is_instance_of::<js_sys::Uint8Array>() || v.is_instance_of::<js_sys::Uint8ClampedArray>() {
        ElementType::U8
    } else if v.is_instance_of::<js_sys::Uint16Array>() {
        ElementType::U16
    } else if v.is_instance_of::<js_sys::Uint32Array>() {
        ElementType::U32
    } else if v.is_instance_of::<js_sys::BigUint64Array>() {
        ElementType::U64
    } else {
        return None;
    })
}

/// The bytes a typed array views (wasm and every browser are little-endian).
fn typed_array_bytes(v: &JsValue) -> Vec<u8> {
    let view: &View = v.unchecked_ref();
    Uint8Array::new_with_byte_offset_and_length(&view.buffer(), view.byte_offset(), view.byte_length())
        .to_vec()
}

fn tensor_from_js(name: &str, item: &JsValue, specs: &[TensorSpec]) -> Result<Tensor, String> {
    let datatype = get(item, "datatype").as_string();
    tensor_from_parts(name, &get(item, "data"), datatype, &get(item, "shape"), specs)
}

fn tensor_from_parts(
    name: &str,
    data: &JsValue,
    datatype: Option<String>,
    shape_value: &JsValue,
    specs: &[TensorSpec],
) -> Result<Tensor, String> {
    let spec = specs.iter().find(|s| s.name == name);
    let declared = match datatype {
        Some(d) => Some(ElementType::from_oip_name(&d).ok_or_else(|| {
            format!("input `{name}`: unknown datatype {d:?} (FP32, FP64, INT32, INT64, UINT8, BOOL, ...)")
        })?),
        None => None,
    };
    let (element_type, bytes) = if is_typed_array(data) {
        let Some(own) = typed_array_type(data) else {
            return Err(format!("input `{name}`: unsupported typed array"));
        };
        let element_type = match declared {
            // A Uint8Array carries BOOL too.
            Some(ElementType::Bool) if own == ElementType::U8 => ElementType::Bool,
            Some(d) if d != own => {
                return Err(format!(
                    "input `{name}`: datatype {d} does not match its data, a typed array of {own}"
                ));
            }
            _ => own,
        };
        (element_type, typed_array_bytes(data))
    } else if Array::is_array(data) {
        let element_type = declared
            .or(spec.map(|s| s.element_type))
            .ok_or_else(|| format!("input `{name}`: give a datatype or a typed array"))?;
        let array: &Array = data.unchecked_ref();
        (element_type, encode(name, element_type, array)?)
    } else {
        return Err(format!(
            "input `{name}`: data must be a typed array (Float32Array...) or an array of numbers"
        ));
    };
    let count = bytes.len() / element_type.size();
    let shape = if shape_value.is_undefined() || shape_value.is_null() {
        shape_from_spec(name, spec, count)?
    } else {
        let array: &Array = shape_value
            .dyn_ref()
            .ok_or_else(|| format!("input `{name}`: shape must be an array of sizes"))?;
        array
            .iter()
            .map(|d| {
                d.as_f64()
                    .filter(|d| *d >= 0.0 && d.fract() == 0.0)
                    .map(|d| d as u64)
                    .ok_or_else(|| format!("input `{name}`: shape holds {d:?}, not a size"))
            })
            .collect::<Result<Vec<u64>, String>>()?
    };
    Ok(Tensor {
        name: name.to_string(),
        element_type,
        shape,
        data: bytes,
    })
}

/// The model's shape for an input, its one dynamic dimension (`-1`) worked out from the
/// number of elements given.
fn shape_from_spec(name: &str, spec: Option<&TensorSpec>, count: usize) -> Result<Vec<u64>, String> {
    let spec =
        spec.ok_or_else(|| format!("input `{name}` is not one of the model's inputs; give its shape"))?;
    let dynamic = spec.shape.iter().filter(|d| **d < 0).count();
    let known: u64 = spec
        .shape
        .iter()
        .filter(|d| **d >= 0)
        .map(|d| *d as u64)
        .product();
    match dynamic {
        0 => Ok(spec.shape.iter().map(|d| *d as u64).collect()),
        1 if known > 0 && (count as u64).is_multiple_of(known) => Ok(spec
            .shape
            .iter()
            .map(|d| if *d < 0 { count as u64 / known } else { *d as u64 })
            .collect()),
        1 => Err(format!(
            "input `{name}`: {count} values do not fill whole rows of shape {}",
            kiln_types::format_shape(&spec.shape)
        )),
        _ => Err(format!(
            "input `{name}` has several dynamic dimensions ({}); give its shape",
            kiln_types::format_shape(&spec.shape)
        )),
    }
}

/// Little-endian bytes of a plain JS array, as `element_type`.
fn encode(name: &str, element_type: ElementType, array: &Array) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(array.length() as usize * element_type.size());
    for (ix, v) in array.iter().enumerate() {
        let bad = || format!("input `{name}`[{ix}] is {v:?}, not a {element_type} value");
        let number = || -> Result<f64, String> {
            if let Some(n) = v.as_f64() {
                Ok(n)
            } else if v.is_bigint() {
                let text: String = js_sys::BigInt::unchecked_from_js_ref(&v)
                    .to_string(10)
                    .map(String::from)
                    .map_err(|_| bad())?;
                text.parse::<f64>().map_err(|_| bad())
            } else if let Some(b) = v.as_bool() {
                Ok(if b { 1.0 } else { 0.0 })
            } else {
                Err(bad())
            }
        };
        let integer = || -> Result<i128, String> {
            if v.is_bigint() {
                let text: String = js_sys::BigInt::unchecked_from_js_ref(&v)
                    .to_string(10)
                    .map(String::from)
                    .map_err(|_| bad())?;
                return text.parse::<i128>().map_err(|_| bad());
            }
            let n = number()?;
            if n.fract() != 0.0 || !n.is_finite() {
                return Err(bad());
            }
            Ok(n as i128)
        };
        let fits = |n: i128, lo: i128, hi: i128| if (lo..=hi).contains(&n) { Ok(n) } else { Err(bad()) };
        match element_type {
            ElementType::F16 => out.extend(half_bits(number()? as f32).to_le_bytes()),
            ElementType::F32 => out.extend((number()? as f32).to_le_bytes()),
            ElementType::F64 => out.extend(number()?.to_le_bytes()),
            ElementType::I8 => {
                out.extend((fits(integer()?, i8::MIN as i128, i8::MAX as i128)? as i8).to_le_bytes())
            }
            ElementType::I16 => {
                out.extend((fits(integer()?, i16::MIN as i128, i16::MAX as i128)? as i16).to_le_bytes())
            }
            ElementType::I32 => {
                out.extend((fits(integer()?, i32::MIN as i128, i32::MAX as i128)? as i32).to_le_bytes())
            }
            ElementType::I64 => {
                out.extend((fits(integer()?, i64::MIN as i128, i64::MAX as i128)? as i64).to_le_bytes())
            }
            ElementType::U8 => out.extend((fits(integer()?, 0, u8::MAX as i128)? as u8).to_le_bytes()),
            ElementType::U16 => out.extend((fits(integer()?, 0, u16::MAX as i128)? as u16).to_le_bytes()),
            ElementType::U32 => out.extend((fits(integer()?, 0, u32::MAX as i128)? as u32).to_le_bytes()),
            ElementType::U64 => out.extend((fits(integer()?, 0, u64::MAX as i128)? as u64).to_le_bytes()),
            ElementType::Bool => out.push(fits(integer()?, 0, 1)? as u8),
        }
    }
    Ok(out)
}

/// IEEE half bits of an f32 (round to nearest even), for FP16 inputs given as numbers.
fn half_bits(v: f32) -> u16 {
    kiln_types::tensor::f16_from_f64(v as f64).to_bits()
}

/// An engine output as `{name, datatype, shape, data}` with `data` a typed array of the
/// element type (BOOL as Uint8Array, FP16 widened to Float32Array).
pub fn output_to_js(t: &Tensor) -> Result<JsValue, String> {
    let bytes = Uint8Array::new_with_length(t.data.len() as u32);
    bytes.copy_from(&t.data);
    let buffer = bytes.buffer();
    let data: JsValue = match t.element_type {
        ElementType::F32 => js_sys::Float32Array::new(&buffer).into(),
        ElementType::F64 => js_sys::Float64Array::new(&buffer).into(),
        ElementType::I8 => js_sys::Int8Array::new(&buffer).into(),
        ElementType::I16 => js_sys::Int16Array::new(&buffer).into(),
        ElementType::I32 => js_sys::Int32Array::new(&buffer).into(),
        ElementType::I64 => js_sys::BigInt64Array::new(&buffer).into(),
        ElementType::U8 | ElementType::Bool => bytes.into(),
        ElementType::U16 => js_sys::Uint16Array::new(&buffer).into(),
        ElementType::U32 => js_sys::Uint32Array::new(&buffer).into(),
        ElementType::U64 => js_sys::BigUint64Array::new(&buffer).into(),
        ElementType::F16 => {
            let values: Vec<f32> = t
                .to_f64_vec()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|v| v as f32)
                .collect();
            js_sys::Float32Array::from(&values[..]).into()
        }
    };
    let out = Object::new();
    let shape = Array::new();
    for d in &t.shape {
        shape.push(&JsValue::from_f64(*d as f64));
    }
    let set = |k: &str, v: &JsValue| Reflect::set(&out, &intern(k), v).map(|_| ());
    set("name", &intern(&t.name))
        .and_then(|_| set("datatype", &intern(t.element_type.oip_name())))
        .and_then(|_| set("shape", &shape))
        .and_then(|_| set("data", &data))
        .map_err(|_| "building the output object".to_string())?;
    Ok(out.into())
}
