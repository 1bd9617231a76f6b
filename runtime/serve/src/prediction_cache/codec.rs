//! The binary format of a cached value (a model's output tensors):
//!
//! ```text
//! magic   "KLNP"                      4 bytes
//! version 1                           1 byte
//! count   u32                         number of tensors
//! per tensor:
//!   name  u32 length + UTF-8 bytes
//!   type  u8  index in ElementType::ALL (WIT order)
//!   rank  u32, then rank × u64 dims
//!   data  u64 length + bytes          length = element count × element size
//! ```
//!
//! All integers little-endian. Decoding checks every length against what is left and
//! against the shape, and rejects trailing bytes, so a corrupt or foreign value (another
//! application's key, an older format) is an error, never a panic or a wrong answer.

use kiln_types::{ElementType, Tensor};

const MAGIC: &[u8; 4] = b"KLNP";
const VERSION: u8 = 1;
/// No model returns more outputs than this; a larger count is a corrupt value.
const MAX_TENSORS: u32 = 4096;
/// Likewise for ranks.
const MAX_RANK: u32 = 64;

/// Why a cached value could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a Kiln cached prediction (bad magic)")]
    Magic,
    #[error("cached prediction format version {0} is not supported")]
    Version(u8),
    #[error("cached prediction is truncated")]
    Truncated,
    #[error("cached prediction is malformed: {0}")]
    Malformed(&'static str),
}

/// Bytes [`encode`] produces for `outputs`, without encoding them.
pub fn encoded_len(outputs: &[Tensor]) -> usize {
    MAGIC.len()
        + 1
        + 4
        + outputs
            .iter()
            .map(|t| 4 + t.name.len() + 1 + 4 + 8 * t.shape.len() + 8 + t.data.len())
            .sum::<usize>()
}

/// Encodes `outputs`.
pub fn encode(outputs: &[Tensor]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(outputs));
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(outputs.len() as u32).to_le_bytes());
    for t in outputs {
        out.extend_from_slice(&(t.name.len() as u32).to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out.push(type_code(t.element_type));
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in &t.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&t.data);
    }
    out
}

/// Decodes a value written by [`encode`], validating it.
pub fn decode(bytes: &[u8]) -> Result<Vec<Tensor>, DecodeError> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len()).map_err(|_| DecodeError::Magic)? != MAGIC {
        return Err(DecodeError::Magic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let count = r.u32()?;
    if count > MAX_TENSORS {
        return Err(DecodeError::Malformed("too many tensors"));
    }
    let mut outputs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name_len = r.u32()? as usize;
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| DecodeError::Malformed("tensor name is not UTF-8"))?
            .to_string();
        let element_type = *ElementType::ALL
            .get(usize::from(r.u8()?))
            .ok_or(DecodeError::Malformed("unknown element type"))?;
        let rank = r.u32()?;
        if rank > MAX_RANK {
            return Err(DecodeError::Malformed("rank too large"));
        }
        let shape = (0..rank).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        let data_len = usize::try_from(r.u64()?).map_err(|_| DecodeError::Truncated)?;
        let expected = Tensor::element_count(&shape)
            .ok()
            .and_then(|n| n.checked_mul(element_type.size()))
            .ok_or(DecodeError::Malformed("shape too large"))?;
        if data_len != expected {
            return Err(DecodeError::Malformed("data length does not match shape"));
        }
        let data = r.take(data_len)?.to_vec();
        outputs.push(Tensor {
            name,
            element_type,
            shape,
            data,
        });
    }
    if !r.0.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    Ok(outputs)
}

fn type_code(t: ElementType) -> u8 {
    // ALL has 12 entries and lists every variant, so the position fits and always exists.
    ElementType::ALL.iter().position(|&x| x == t).unwrap_or(0) as u8
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> Vec<Tensor> {
        vec![
            Tensor {
                name: "label".into(),
                element_type: ElementType::I64,
                shape: vec![2],
                data: [1i64, 0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
            Tensor {
                name: "probabilities".into(),
                element_type: ElementType::F32,
                shape: vec![2, 2],
                data: [0.1f32, 0.9, 0.8, 0.2]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            },
            Tensor {
                name: String::new(),
                element_type: ElementType::Bool,
                shape: vec![],
                data: vec![1],
            },
        ]
    }

    #[test]
    fn round_trip_preserves_every_tensor() {
        let bytes = encode(&outputs());
        assert_eq!(bytes.len(), encoded_len(&outputs()));
        assert_eq!(decode(&bytes).unwrap(), outputs());
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn every_element_type_round_trips() {
        for ty in ElementType::ALL {
            let t = Tensor {
                name: "t".into(),
                element_type: ty,
                shape: vec![3],
                data: vec![1; 3 * ty.size()],
            };
            assert_eq!(decode(&encode(std::slice::from_ref(&t))).unwrap(), vec![t]);
        }
    }

    #[test]
    fn foreign_and_corrupt_values_are_rejected() {
        assert_eq!(decode(b""), Err(DecodeError::Magic));
        assert_eq!(decode(b"garbage"), Err(DecodeError::Magic));
        let good = encode(&outputs());

        let mut version = good.clone();
        version[4] = 9;
        assert_eq!(decode(&version), Err(DecodeError::Version(9)));

        // Every truncation is an error, never a panic.
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "prefix of {n} bytes accepted");
        }

        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(DecodeError::Malformed(_))));

        // First tensor: count at 5..9, name length at 9..13, name "label" 13..18, type at 18.
        let mut bad_type = good.clone();
        bad_type[18] = 200;
        assert!(matches!(decode(&bad_type), Err(DecodeError::Malformed(_))));

        // Shape dim 2 at 23..31: claim 3 elements while the data holds 2.
        let mut bad_shape = good.clone();
        bad_shape[23] = 3;
        assert!(matches!(decode(&bad_shape), Err(DecodeError::Malformed(_))));

        let mut huge_count = good.clone();
        huge_count[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge_count).is_err());

        let mut bad_utf8 = good;
        bad_utf8[13] = 0xff;
        assert!(matches!(decode(&bad_utf8), Err(DecodeError::Malformed(_))));
    }
}
