//! Kiln's Cloudflare Worker. The Worker serves what `kiln serve` serves (through
//! `kiln-api`), for the model bundles deployed with it as data modules. Each bundle is
//! named in the `KILN_MODELS` variable with its SHA-256 and checked against it before it is
//! loaded, once per isolate.

pub mod manifest;

#[cfg(target_arch = "wasm32")]
mod glue;
