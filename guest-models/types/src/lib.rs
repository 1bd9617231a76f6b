//! Kiln's data model, shared by every host and by the guest: tensors and their element
//! types, what a model is ([`ModelInfo`], [`TensorSpec`]) and how to load it
//! ([`LoadOptions`]), the model bundle codec, and the one [`digest`] that names
//! components, ONNX sources and bundles everywhere. No tract here: hosts that only carry
//! tensors (the Spin router, the protocol code, the registry) build without it.
//!
//! Two small routines every Kiln crate needs live here too, so there is one of each:
//! [`format`] (sizes and timestamps for people) and [`durable`] (a file write that
//! survives a crash or a power cut whole or not at all).

pub mod bundle;
pub mod durable;
pub mod error;
pub mod format;
pub mod info;
pub mod tensor;

pub use bundle::{Bundle, BundleConfig};
pub use error::EngineError;
pub use info::{LoadOptions, ModelInfo, TensorSpec, format_shape};
pub use tensor::{ElementType, Tensor};

use sha2::{Digest, Sha256};

/// Version of Kiln, recorded in every compiled component and reported by every host.
pub const KILN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The SHA-256 of bytes as lowercase hex: the identity of a component, an ONNX source or
/// a bundle everywhere in Kiln (registry blobs, routing tables, AOT cache keys, edges).
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// [`digest`] of everything `reader` yields, read 64 KiB at a time (never held whole),
/// and how many bytes that was.
pub fn digest_reader(mut reader: impl std::io::Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut len = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok((hex::encode(hasher.finalize()), len)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn digest_reader_agrees_with_digest_past_its_buffer() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (hex, len) = super::digest_reader(&bytes[..]).unwrap();
        assert_eq!((hex, len), (super::digest(&bytes), 200_000));
    }

    #[test]
    fn digest_is_lowercase_sha256_hex() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            super::digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
