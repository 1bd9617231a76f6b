//! The OIP binary tensor data extension lives in `kiln_edge::binary`, shared with the edge
//! workers.

pub use kiln_edge::binary::*;
