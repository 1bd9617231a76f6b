//! A misbehaving `kiln:model` component for host tests. What it does depends on the name
//! of the first input: `spin` loops forever, `hog` allocates without bound, `trap` panics,
//! `chatty` writes 40 KiB to stderr, anything else is echoed back. Through a server, whose
//! requests must use the declared input `x`, the first value chooses instead: -1 spins,
//! -2 hogs, -3 traps. Hosts must contain all of it.

wit_bindgen::generate!({
    path: "../wit",
    world: "model",
});

use exports::kiln::model::inference::Guest as Inference;
use kiln::model::types as wit;

struct Component;

impl Inference for Component {
    fn info() -> wit::ModelInfo {
        let spec = |name: &str| wit::TensorSpec {
            name: name.to_string(),
            element_type: wit::ElementType::Fp32,
            shape: vec![-1, 4],
        };
        wit::ModelInfo {
            name: "misbehaving".into(),
            version: "test".into(),
            source_digest: String::new(),
            inputs: vec![spec("x")],
            outputs: vec![spec("y")],
            labels: vec![],
            metadata: vec![],
        }
    }

    fn predict(inputs: Vec<wit::Tensor>) -> Result<Vec<wit::Tensor>, wit::Error> {
        let first = inputs.first().map(|t| t.name.as_str()).unwrap_or("");
        let value = inputs
            .first()
            .filter(|t| t.name == "x" && t.data.len() >= 4)
            .map(|t| f32::from_le_bytes([t.data[0], t.data[1], t.data[2], t.data[3]]));
        let first = match value {
            Some(-1.0) => "spin",
            Some(-2.0) => "hog",
            Some(-3.0) => "trap",
            _ => first,
        };
        match first {
            "spin" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "hog" => {
                let mut keep: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 16 << 20];
                    chunk[0] = keep.len() as u8;
                    keep.push(std::hint::black_box(chunk));
                }
            }
            "trap" => panic!("the model panicked on purpose"),
            "chatty" => {
                eprintln!("{}", "chatter ".repeat(5 << 10));
                Ok(inputs)
            }
            "" if inputs.is_empty() => Err(wit::Error::InvalidInput("no inputs".into())),
            _ => Ok(inputs),
        }
    }
}

impl Guest for Component {
    fn wizer_initialize() {}
}

export!(Component);
