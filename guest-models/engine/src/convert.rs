//! Kiln tensors and element types to and from tract's.

use kiln_types::{ElementType, EngineError, Tensor};
use tract_onnx::prelude::{DatumType, Tensor as TractTensor, TractError};

/// Renders a tract error with its whole context chain on one line.
pub(crate) fn chain(e: &TractError) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.join(": ")
}

/// The tract datum type for an element type.
pub fn datum_type(t: ElementType) -> DatumType {
    match t {
        ElementType::F16 => DatumType::F16,
        ElementType::F32 => DatumType::F32,
        ElementType::F64 => DatumType::F64,
        ElementType::I8 => DatumType::I8,
        ElementType::I16 => DatumType::I16,
        ElementType::I32 => DatumType::I32,
        ElementType::I64 => DatumType::I64,
        ElementType::U8 => DatumType::U8,
        ElementType::U16 => DatumType::U16,
        ElementType::U32 => DatumType::U32,
        ElementType::U64 => DatumType::U64,
        ElementType::Bool => DatumType::Bool,
    }
}

/// The element type for a tract datum type, if Kiln can carry it.
pub fn element_type(dt: DatumType) -> Option<ElementType> {
    ElementType::ALL
        .into_iter()
        .find(|t| datum_type(*t) == dt.unquantized())
}

/// Converts to a tract tensor, checking the data length.
pub fn to_tract(t: &Tensor) -> Result<TractTensor, EngineError> {
    t.check_len()?;
    let shape: Vec<usize> = t.shape.iter().map(|d| *d as usize).collect();
    // SAFETY: `check_len` proved `data` holds exactly shape × size bytes of a plain
    // (non-pointer) datum type, and booleans are 0 or 1.
    unsafe { TractTensor::from_raw_dt(datum_type(t.element_type), &shape, &t.data) }
        .map_err(|e| EngineError::Internal(chain(&e)))
}

/// Converts a tract output to a Kiln tensor; types Kiln cannot carry are an error.
pub fn from_tract(name: &str, t: &TractTensor) -> Result<Tensor, EngineError> {
    let element_type = element_type(t.datum_type()).ok_or_else(|| {
        EngineError::Unsupported(format!(
            "output `{name}` has element type {:?}, which Kiln cannot return",
            t.datum_type()
        ))
    })?;
    let t = if t.datum_type() != t.datum_type().unquantized() {
        t.cast_to_dt(t.datum_type().unquantized())
            .map_err(|e| EngineError::Internal(chain(&e)))?
            .into_owned()
    } else {
        t.clone()
    };
    Ok(Tensor {
        name: name.to_string(),
        element_type,
        shape: t.shape().iter().map(|d| *d as u64).collect(),
        data: t.as_bytes().to_vec(),
    })
}
