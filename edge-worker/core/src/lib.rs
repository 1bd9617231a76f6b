//! Kiln's HTTP API without a server: the seed predict API and the Open Inference Protocol
//! v2 (dispatch, bodies, errors, the binary tensor extension) and the weighted, sticky
//! choice of a version. `kiln serve` answers through [`api::begin`] and
//! [`api::Call::finish`] around its sandboxed run, and the edges (Spin, Cloudflare Workers,
//! the browser package) through [`EdgeApp`], so every host gives the same answers and the
//! same errors for the same request.

pub mod access;
pub mod api;
pub mod binary;
pub mod edge;
pub mod error;
pub mod infer;
pub mod oip;
pub mod routes;
pub mod routing;
pub mod seed;
pub mod tensor_json;

pub use access::{Caller, Naming, Reader};
pub use api::{Call, Endpoint, Env, Inference, Models, Request, Response, Step, Version, begin};
pub use edge::{Backend, EdgeApp, EdgeModel, EdgeVersion};
pub use error::{ApiError, Failure, FailureKind, Protocol};
pub use kiln_node_api::{ModelRouting, RoutingTable, VersionRoute};
pub use kiln_types::{ElementType, EngineError, ModelInfo, Tensor, TensorSpec};
pub use routes::Routes;
