//! The one rustls crypto provider Kiln uses: `ring` (aws-lc-rs would need cmake and a C
//! build). rustls 0.23.48 deprecates ring's provider because it has no post-quantum key
//! exchange (X25519MLKEM768 needs aws-lc-rs); classical X25519/P-256 is the trade-off taken
//! here, in this one place.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

#[allow(deprecated)]
fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The `ring` crypto provider, shared.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(ring())).clone()
}

/// Makes `ring` the process-wide default provider, for libraries that build their own
/// rustls configurations (redis). Kiln's own configurations name the provider, so this is
/// only a safety net against rustls' "no process-level CryptoProvider" panic; calling it
/// again (or after another default was installed) does nothing.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Loses only a race with another installer, which is just as good.
        let _ = ring().install_default();
    }
}
