//! `kiln export`: an edge's desired state written from the registry.

pub mod cloudflare;
