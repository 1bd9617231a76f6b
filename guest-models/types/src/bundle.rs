//! The payload `kiln compile` hands the guest at pre-initialization time (on stdin): a
//! small JSON config followed by the ONNX bytes.
//!
//! `kiln compile` also appends the bundle to the component as a custom section named
//! [`SECTION`], so engines that run outside a component (the Cloudflare Worker, the
//! browser package) load exactly the model a registry version holds, covered by the
//! component's digest.

use crate::error::EngineError;
use crate::info::LoadOptions;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"KILNMDL1";

/// Name of the component custom section that carries the bundle.
pub const SECTION: &str = "kiln-bundle";

fn leb128(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb128(bytes: &[u8], pos: &mut usize) -> Option<usize> {
    let mut v = 0usize;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Appends `bundle` to a component (or module) binary as the [`SECTION`] custom section.
pub fn append_to_component(component: &mut Vec<u8>, bundle: &Bundle) {
    let payload = bundle.encode();
    let mut body = Vec::with_capacity(payload.len() + 16);
    leb128(SECTION.len(), &mut body);
    body.extend_from_slice(SECTION.as_bytes());
    body.extend_from_slice(&payload);
    component.push(0); // custom section id
    leb128(body.len(), component);
    component.extend_from_slice(&body);
}

/// The encoded bundle a component carries, as stored (so its digest can be checked).
/// Walks only the top-level sections, so it is cheap even for large components.
pub fn encoded_from_component(component: &[u8]) -> Result<&[u8], EngineError> {
    let bad = |why: &str| EngineError::InvalidInput(format!("reading the component's bundle: {why}"));
    if component.len() < 8 || &component[..4] != b"\0asm" {
        return Err(bad("not a WebAssembly binary"));
    }
    let mut pos = 8;
    while pos < component.len() {
        let id = component[pos];
        pos += 1;
        let size = read_leb128(component, &mut pos).ok_or_else(|| bad("malformed section size"))?;
        let end = pos
            .checked_add(size)
            .filter(|e| *e <= component.len())
            .ok_or_else(|| bad("truncated section"))?;
        if id == 0 {
            let mut p = pos;
            let name_len = read_leb128(component, &mut p).ok_or_else(|| bad("malformed section name"))?;
            let name_end = p.checked_add(name_len).filter(|e| *e <= end);
            if let Some(name_end) = name_end
                && &component[p..name_end] == SECTION.as_bytes()
            {
                return Ok(&component[name_end..end]);
            }
        }
        pos = end;
    }
    Err(EngineError::InvalidInput(format!(
        "the component has no `{SECTION}` section; recompile it with this version of `kiln compile`"
    )))
}

/// The bundle a component carries (see [`append_to_component`]).
pub fn from_component(component: &[u8]) -> Result<Bundle, EngineError> {
    Bundle::decode(encoded_from_component(component)?)
}

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

    #[test]
    fn bundle_section_round_trips_through_a_component_binary() {
        let b = Bundle {
            config: BundleConfig::default(),
            onnx: vec![7; 300],
        };
        // An empty component: magic, version 0x0d, layer 1, then an unrelated custom section.
        let mut component = b"\0asm\x0d\x00\x01\x00".to_vec();
        component.extend_from_slice(&[0, 4, 3, b'f', b'o', b'o']);
        assert!(from_component(&component).is_err(), "no section yet");
        append_to_component(&mut component, &b);
        assert_eq!(from_component(&component).unwrap(), b);
        assert_eq!(encoded_from_component(&component).unwrap(), b.encode().as_slice());
        assert!(from_component(b"not wasm").is_err());
        component.truncate(component.len() - 10);
        assert!(from_component(&component).is_err(), "truncated");
    }
}
