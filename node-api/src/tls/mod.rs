//! TLS for every Kiln server and client (cargo feature `tls`, off by default so the wasm32
//! edges that share this crate never link rustls): rustls with the `ring` provider.
//!
//! - Servers: [`ServerTls::from_pem_files`] (certificate chain, key, and an optional CA
//!   whose client certificates are required: mutual TLS), then [`serve`] an axum router on
//!   plain HTTP or HTTPS with one call, within the connection limits of [`ServeLimits`];
//!   [`request_timeout`] bounds a router's requests, [`receive`] streams a large upload to
//!   a writer without holding it.
//! - Clients: [`ClientTls`] trusts the system's root certificates plus an optional CA file
//!   and may present a client certificate; it configures `ureq` agents
//!   ([`ClientTls::agent_config`]), raw rustls ([`ClientTls::rustls_config`]) and Redis
//!   ([`ClientTls::roots_pem`]).
//! - [`describe_ureq_error`] turns a failed handshake into a sentence that says what to do
//!   (`--ca-file`, `--client-cert`), instead of rustls' enum names.

mod client;
mod errors;
mod limits;
mod listener;
mod pem;
mod provider;
mod server;
mod upload;

pub use client::ClientTls;
pub use errors::{describe_error, describe_ureq_error};
pub use limits::{OpenConnections, ServeLimits, json_error, overloaded, request_timeout};
pub use listener::serve;
pub use provider::{crypto_provider, install_default_provider};
pub use server::ServerTls;
pub use upload::{UploadError, declared_too_large, receive};

#[cfg(test)]
mod tests;
