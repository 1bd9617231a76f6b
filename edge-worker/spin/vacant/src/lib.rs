//! An empty `kiln:model` component. Spin instantiates an app only when every import of
//! every component is satisfied, so the router's unused model slots are bound to this:
//! its `info()` has an empty name (the router skips it) and `predict` always fails.

wit_bindgen::generate!({
    path: "wit",
    world: "vacant",
});

use exports::kiln::model::inference::Guest as Inference;
use exports::kiln::model::types as wit;

struct Vacant;

impl Inference for Vacant {
    fn info() -> wit::ModelInfo {
        wit::ModelInfo {
            name: String::new(),
            version: String::new(),
            source_digest: String::new(),
            inputs: vec![],
            outputs: vec![],
            labels: vec![],
            metadata: vec![("kiln.slot".into(), "vacant".into())],
        }
    }

    fn predict(_inputs: Vec<wit::Tensor>) -> Result<Vec<wit::Tensor>, wit::Error> {
        Err(wit::Error::Unsupported("this model slot is vacant".into()))
    }
}

impl Guest for Vacant {
    fn wizer_initialize() {}
}

export!(Vacant);
