//! The registry as a service: every operation of `kiln models`, `kiln audit`,
//! `kiln rollout`, `kiln sync` (but `run`) and `kiln tokens` behind one trait
//! ([`RegistryApi`]), with the role check of each in one place ([`Authorized`]), served over
//! HTTP/JSON with bearer tokens ([`RegistryServer`], `/openapi.json`) and called over HTTP
//! by [`RemoteRegistry`].

pub mod api;
mod authorized;
mod client;
mod file_body;
pub mod openapi;
mod server;

pub use api::API_PREFIX;
pub use api::{ApiError, ApiResult, RegistryApi};
pub use authorized::Authorized;
pub use client::RemoteRegistry;
pub use server::{DEFAULT_MAX_UPLOAD, RegisterBody, RegistryServer, authenticate, bearer, error_response};
