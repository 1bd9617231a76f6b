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

#[cfg(test)]
mod tests {
    #[test]
    fn digest_is_lowercase_sha256_hex() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            super::digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
