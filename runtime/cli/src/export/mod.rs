//! `kiln export`: an edge's desired state written from the registry (`kiln-fleet`'s edge
//! table): a Spin app, or the Cloudflare Worker's bundles and variables.

pub mod cloudflare;
pub mod spin;
