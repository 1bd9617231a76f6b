//! The payload `kiln compile` hands the guest at pre-initialization time (on stdin): a
//! small JSON config followed by the ONNX bytes.

use crate::error::EngineError;
use crate::model::LoadOptions;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"KILNMDL1";

/// What the guest needs besides the ONNX bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BundleConfig {
    pub options: LoadOptions,
}

/// Config plus model bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub config: BundleConfig,
    pub onnx: Vec<u8>,
}

impl Bundle {
    /// Serialises as `KILNMDL1`, u32 LE config length, config JSON, ONNX bytes.
    pub fn encode(&self) -> Vec<u8> {
        let config = serde_json::to_vec(&self.config).unwrap_or_default();
        let mut out = Vec::with_capacity(12 + config.len() + self.onnx.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(config.len() as u32).to_le_bytes());
        out.extend_from_slice(&config);
        out.extend_from_slice(&self.onnx);
        out
    }

    /// Parses what [`Bundle::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Bundle, EngineError> {
        let bad = |why: &str| EngineError::InvalidInput(format!("not a Kiln model bundle: {why}"));
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("missing KILNMDL1 header"));
        }
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let end = 12usize
            .checked_add(len)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| bad("truncated config"))?;
        let config: BundleConfig =
            serde_json::from_slice(&bytes[12..end]).map_err(|e| bad(&format!("config: {e}")))?;
        Ok(Bundle {
            config,
            onnx: bytes[end..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_round_trips_and_rejects_garbage() {
        let b = Bundle {
            config: BundleConfig {
                options: LoadOptions {
                    name: "m".into(),
                    ..Default::default()
                },
            },
            onnx: vec![1, 2, 3],
        };
        assert_eq!(Bundle::decode(&b.encode()).unwrap(), b);
        assert!(Bundle::decode(b"nope").is_err());
        let mut truncated = b.encode();
        truncated.truncate(14);
        assert!(Bundle::decode(&truncated).is_err());
    }
}
