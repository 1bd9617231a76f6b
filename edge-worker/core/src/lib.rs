//! Kiln's HTTP protocol without a server: the seed predict API and the Open Inference
//! Protocol v2 (bodies, errors, the binary tensor extension) and the weighted, sticky
//! choice of a version. `kiln serve` answers with this code, and so do the edge workers
//! (Spin, Cloudflare Workers, the browser package) through [`EdgeApp`], so every host
//! gives the same answers and the same errors for the same request.

pub mod app;
pub mod binary;
pub mod error;
pub mod infer;
pub mod oip;
pub mod routes;
pub mod routing;
pub mod seed;

pub use app::{Backend, EdgeApp, EdgeEnv, EdgeModel, EdgeRequest, EdgeResponse, EdgeVersion};
pub use error::{ApiError, Protocol};
pub use kiln_engine::{ElementType, EngineError, ModelInfo, Tensor, TensorSpec};
pub use kiln_node_api::{ModelRouting, RoutingTable, VersionRoute};
pub use routes::Routes;
