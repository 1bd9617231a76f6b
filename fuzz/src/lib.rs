//! The checks behind Kiln's fuzz targets, one function per target. Each feeds the
//! fuzzer's bytes to a parser of untrusted input through its public API and panics when
//! the parser breaks its promise: a panic of its own, an answer in the 5xx range for a
//! client's mistake, an error body that is not `{"error": "..."}`, an accepted input
//! that does not match the model.
//!
//! cargo-fuzz runs them under libFuzzer (`fuzz_targets/`, nightly); the stable suite
//! `tests/tests/scenarios/fuzz_parsers.rs` compiles this same file and runs it on the committed
//! corpus and on proptest inputs, so CI checks the same promises without libFuzzer.

use kiln_api::routing::{ModelRoutes, Served};
use kiln_api::{
    ElementType, Env, ModelInfo, ModelRouting, Models, Request, Response, Routes, RoutingTable, Step, Tensor,
    TensorSpec, Version, VersionRoute,
};
use kiln_node_api::{FORCE_VERSION_HEADER, ROUTING_KEY_HEADER, choose_weighted, routing_point};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// The example models whose real infos the API targets serve (file stem under
/// `examples/models/`, info). `tests/tests/scenarios/fuzz_parsers.rs` checks them against the
/// engine's own reading of each `.onnx`.
pub fn model_infos() -> Vec<(&'static str, ModelInfo)> {
    let spec = |name: &str, element_type, shape: &[i64]| TensorSpec {
        name: name.into(),
        element_type,
        shape: shape.to_vec(),
    };
    let info = |name: &str, inputs, outputs, labels: &[&str]| ModelInfo {
        name: name.into(),
        version: "1".into(),
        source_digest: "0".repeat(64),
        inputs,
        outputs,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        metadata: Vec::new(),
    };
    let classifier = || {
        vec![
            spec("label", ElementType::I64, &[-1]),
            spec("probabilities", ElementType::F32, &[-1, 3]),
        ]
    };
    vec![
        (
            "iris_logreg",
            info(
                "iris_logreg",
                vec![spec("X", ElementType::F32, &[-1, 4])],
                classifier(),
                &["0", "1", "2"],
            ),
        ),
        (
            "ops_onehot",
            info(
                "ops_onehot",
                vec![spec("X", ElementType::I64, &[-1, 3])],
                classifier(),
                &["0", "1", "2"],
            ),
        ),
        (
            "cnn",
            info(
                "cnn",
                vec![spec("image", ElementType::F32, &[-1, 1, 28, 28])],
                vec![spec("logits", ElementType::F32, &[-1, 10])],
                &[],
            ),
        ),
    ]
}

/// A served version as the API targets hold it: a real model's info, no engine.
struct Held {
    number: u64,
    label: String,
    info: ModelInfo,
    route: VersionRoute,
}

impl Served for Held {
    fn version(&self) -> u64 {
        self.number
    }
    fn stage(&self) -> &str {
        &self.route.stage
    }
    fn aliases(&self) -> &[String] {
        &self.route.aliases
    }
    fn weight(&self) -> u32 {
        self.route.weight
    }
    fn open(&self) -> bool {
        self.route.open
    }
}

impl Version for Held {
    fn label(&self) -> &str {
        &self.label
    }
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn digest(&self) -> &str {
        &self.route.digest
    }
}

/// Model names the API targets ask for: three served, one not.
const MODELS: [&str; 4] = ["iris", "onehot", "cnn", "nosuch"];
/// Version selectors (path segment or forced-version header).
const SELECTORS: [&str; 8] = ["1", "2", "3", "Production", "champion", "latest", "9", "%ff"];

/// `iris`: 1 (Production, 90), 2 (`champion`, 10), 3 (Staging, restricted, another
/// model's info); `onehot` and `cnn`: one version each.
fn models() -> &'static Models<Held> {
    static MODELS_HELD: OnceLock<Models<Held>> = OnceLock::new();
    MODELS_HELD.get_or_init(|| {
        let infos: BTreeMap<&str, ModelInfo> = model_infos().into_iter().collect();
        let route = |version: u64, weight: u32, stage: &str, aliases: &[&str], open: bool| VersionRoute {
            version,
            digest: format!("{version:064x}"),
            weight,
            stage: stage.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            open,
        };
        let table: [(&str, Vec<(VersionRoute, &str)>); 3] = [
            (
                "iris",
                vec![
                    (route(1, 90, "Production", &[], true), "iris_logreg"),
                    (route(2, 10, "None", &["champion"], true), "iris_logreg"),
                    (route(3, 0, "Staging", &[], false), "ops_onehot"),
                ],
            ),
            (
                "onehot",
                vec![(route(1, 100, "Production", &[], true), "ops_onehot")],
            ),
            ("cnn", vec![(route(1, 100, "Production", &[], true), "cnn")]),
        ];
        table
            .into_iter()
            .map(|(name, versions)| {
                let routing = ModelRouting {
                    versions: versions.iter().map(|(r, _)| r.clone()).collect(),
                    shadow: None,
                    serving: None,
                };
                let held = versions
                    .into_iter()
                    .map(|(route, example)| {
                        let held = Held {
                            number: route.version,
                            label: route.version.to_string(),
                            info: infos[example].clone(),
                            route,
                        };
                        (held.number, Arc::new(held))
                    })
                    .collect();
                (name.to_string(), ModelRoutes::new(held, None, routing))
            })
            .collect()
    })
}

/// A host with a fixed clock and fixed randomness, so every run is reproducible.
struct FixedEnv;

impl Env for FixedEnv {
    fn now_unix_seconds(&self) -> f64 {
        1_765_000_000.0
    }
    fn random_u128(&self) -> u128 {
        0x0123_4567_89ab_cdef_0123_4567_89ab_cdef
    }
}

/// `POST /v1/models/{name}/predict`. Byte 0 picks the model (bits 0-1) and, in bits
/// 2-5, a forced-version header (0-7: none) and a routing key (bit 5); the rest is the body.
pub fn seed(data: &[u8]) -> bool {
    let Some((&mode, body)) = data.split_first() else {
        return false;
    };
    let model = MODELS[usize::from(mode & 3)];
    let headers = headers(mode >> 2);
    let path = format!("/v1/models/{model}/predict");
    answer(&path, &headers, body)
}

/// `POST /v2/models/{name}[/versions/{v}]/infer`, JSON or the binary extension. Byte 0
/// picks the model (bits 0-1), a version in the path (bits 2-4, 0: none), the binary
/// extension (bit 5: bytes 1-2 are the JSON header's length, little-endian; 0xffff sends
/// a length that is not a number), a forced-version header (bit 6) and a routing key
/// (bit 7); the rest is the body.
pub fn oip(data: &[u8]) -> bool {
    let Some((&mode, mut body)) = data.split_first() else {
        return false;
    };
    let model = MODELS[usize::from(mode & 3)];
    let path = match (mode >> 2) & 7 {
        0 => format!("/v2/models/{model}/infer"),
        v => format!("/v2/models/{model}/versions/{}/infer", SELECTORS[usize::from(v)]),
    };
    let mut headers = headers(((mode >> 6) & 1) | ((mode >> 7) << 3));
    if mode & 0x20 != 0 {
        let Some((length, rest)) = body.split_first_chunk::<2>() else {
            return false;
        };
        let length = u16::from_le_bytes(*length);
        let value = if length == u16::MAX {
            "forty".to_string()
        } else {
            length.to_string()
        };
        headers.push(("Inference-Header-Content-Length".into(), value));
        body = rest;
    }
    answer(&path, &headers, body)
}

/// Request headers from 4 bits: bits 0-2 a forced version (0: none), bit 3 a routing key.
fn headers(bits: u8) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    match bits & 7 {
        0 => {}
        v => headers.push((
            FORCE_VERSION_HEADER.to_string(),
            SELECTORS[usize::from(v)].to_string(),
        )),
    }
    if bits & 8 != 0 {
        headers.push((ROUTING_KEY_HEADER.to_string(), "user-42".to_string()));
    }
    headers
}

/// Sends one POST through `kiln_api::begin` and checks what comes back: a refusal is a
/// 4xx with a JSON error; an accepted request carries inputs that fit the chosen version,
/// and outputs of the model's shape make a 200. Returns whether the request ran.
fn answer(path: &str, headers: &[(String, String)], body: &[u8]) -> bool {
    let request = Request {
        method: "POST",
        path,
        headers,
        body,
        reader: None,
    };
    match kiln_api::begin(models(), &request, &FixedEnv) {
        Step::Done(response) => {
            check_refusal(&response);
            false
        }
        Step::Run(mut call) => {
            let info = call.route.served.info().clone();
            let batch = check_inputs(&info, &call.inputs);
            let outputs = info
                .outputs
                .iter()
                .map(|spec| zeros(spec, batch))
                .collect::<Vec<_>>();
            call.inputs.clear();
            let response = call.finish(Ok(outputs), &FixedEnv);
            assert_eq!(
                response.status,
                200,
                "an accepted request with the model's outputs was answered {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
            true
        }
    }
}

/// A refusal: 4xx, `content-type: application/json`, `{"error": "<non-empty text>"}`.
pub fn check_refusal(response: &Response) {
    let text = String::from_utf8_lossy(&response.body);
    assert!(
        (400..500).contains(&response.status),
        "input alone was answered {}: {text}",
        response.status
    );
    assert!(
        response
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v == "application/json"),
        "a {} without a JSON content type: {:?}",
        response.status,
        response.headers
    );
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("a {} whose body is not JSON ({e}): {text}", response.status));
    let error = body.get("error").and_then(Value::as_str);
    assert!(
        error.is_some_and(|e| !e.is_empty()),
        "a {} without an error text: {text}",
        response.status
    );
}

/// The inputs `begin` accepted fit the version's info: names in order, element types,
/// ranks, fixed dimensions, one batch size, and byte lengths. Returns the batch size.
fn check_inputs(info: &ModelInfo, inputs: &[Tensor]) -> u64 {
    assert_eq!(
        inputs.len(),
        info.inputs.len(),
        "accepted {} inputs",
        inputs.len()
    );
    let mut batch = None;
    for (t, spec) in inputs.iter().zip(&info.inputs) {
        assert_eq!(t.name, spec.name, "accepted inputs out of order");
        assert_eq!(
            t.element_type, spec.element_type,
            "accepted `{}` with the wrong type",
            t.name
        );
        assert_eq!(
            t.shape.len(),
            spec.shape.len(),
            "accepted `{}` with shape {:?} for {:?}",
            t.name,
            t.shape,
            spec.shape
        );
        for (got, want) in t.shape.iter().zip(&spec.shape) {
            assert!(
                *want < 0 || u64::try_from(*want) == Ok(*got),
                "accepted `{}` with shape {:?} for {:?}",
                t.name,
                t.shape,
                spec.shape
            );
        }
        let count = Tensor::element_count(&t.shape).unwrap_or_else(|e| panic!("accepted `{}`: {e}", t.name));
        assert_eq!(
            Some(t.data.len()),
            count.checked_mul(t.element_type.size()),
            "accepted `{}` with {} bytes for shape {:?}",
            t.name,
            t.data.len(),
            t.shape
        );
        let rows = t.shape.first().copied().unwrap_or(1);
        assert!(
            batch.replace(rows).is_none_or(|b| b == rows),
            "accepted inputs with different batch sizes"
        );
    }
    batch.unwrap_or(1)
}

/// An output of `spec`'s shape, the batch dimension filled in, all zeros.
fn zeros(spec: &TensorSpec, batch: u64) -> Tensor {
    let shape: Vec<u64> = spec
        .shape
        .iter()
        .map(|d| u64::try_from(*d).unwrap_or(batch))
        .collect();
    let count = Tensor::element_count(&shape).unwrap_or(0);
    Tensor {
        name: spec.name.clone(),
        element_type: spec.element_type,
        shape,
        data: vec![0; count * spec.element_type.size()],
    }
}

/// A node's routing table as `PUT /admin/v1/routing` reads it (JSON, then `validate`),
/// and an edge's routes as `kiln_api::Routes::parse` reads them (the same JSON or the
/// compact `model=3:90,4:10` form). A table either is refused with a message, or
/// survives a JSON round trip and routes: every weighted choice lands on a listed
/// version, and an edge built from it answers a request for each of its models.
/// Returns whether either reader accepted it.
pub fn routing_table(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(table) = serde_json::from_slice::<RoutingTable>(data) {
        match table.validate() {
            Err(message) => assert!(!message.is_empty(), "a refusal without a message"),
            Ok(()) => {
                check_table(&table);
                accepted = true;
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        match Routes::parse(text) {
            Err(message) => assert!(!message.is_empty(), "a refusal without a message"),
            Ok(routes) => {
                check_routes(&routes);
                accepted = true;
            }
        }
    }
    accepted
}

fn check_table(table: &RoutingTable) {
    let json = serde_json::to_vec(table).expect("a parsed table serialises");
    let back: RoutingTable = serde_json::from_slice(&json).expect("a serialised table parses");
    assert_eq!(&back, table, "the table changed in a JSON round trip");
    let digests = table.digests();
    assert!(
        digests.windows(2).all(|w| w[0] < w[1]),
        "digests unsorted or repeated"
    );
    for (name, routing) in &table.models {
        for reader in &table.readers {
            let _ = reader.covers(name);
        }
        let weights: Vec<u32> = routing.versions.iter().map(|v| v.weight).collect();
        for key in ["", "user-42", name.as_str()] {
            let chosen = choose_weighted(&weights, routing_point(key));
            let i = chosen.unwrap_or_else(|| panic!("no version chosen for `{name}` from {weights:?}"));
            assert!(
                weights[i] > 0,
                "a weight-0 version chosen for `{name}` from {weights:?}"
            );
        }
    }
    check_routes(&Routes::from_table(table));
}

/// Builds an edge holding every version the routes name (iris's info) and asks each
/// model for its metadata and one seed prediction.
fn check_routes(routes: &Routes) {
    let info = model_infos().swap_remove(0).1;
    let held: Vec<kiln_api::EdgeModel> = routes
        .models
        .iter()
        .flat_map(|(name, r)| r.versions.iter().map(move |v| (name, v.version)))
        .map(|(name, version)| kiln_api::EdgeModel {
            name: name.clone(),
            version,
            digest: "0".repeat(64),
            info: info.clone(),
            backend: Box::new(Zeros),
        })
        .collect();
    let app = match kiln_api::EdgeApp::new(held, routes.clone()) {
        Ok(app) => app,
        // The same version listed twice: the edge says so.
        Err(message) => {
            assert!(!message.is_empty(), "a refusal without a message");
            return;
        }
    };
    for name in routes.models.keys() {
        let encoded = encode_segment(name);
        let metadata = app.handle(
            &Request {
                method: "GET",
                path: &format!("/v2/models/{encoded}"),
                headers: &[],
                body: b"",
                reader: None,
            },
            &FixedEnv,
        );
        assert!(metadata.status < 500, "metadata of `{name}`: {}", metadata.status);
        let predicted = app.handle(
            &Request {
                method: "POST",
                path: &format!("/v1/models/{encoded}/predict"),
                headers: &[],
                body: br#"{"features": [5.1, 3.5, 1.4, 0.2]}"#,
                reader: None,
            },
            &FixedEnv,
        );
        assert!(
            predicted.status < 500,
            "a prediction of `{name}`: {} {}",
            predicted.status,
            String::from_utf8_lossy(&predicted.body)
        );
    }
}

/// A model name as one percent-encoded path segment.
fn encode_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A backend that answers iris's outputs, all zeros.
struct Zeros;

impl kiln_api::Backend for Zeros {
    fn predict(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, kiln_api::EngineError> {
        let batch = inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(1);
        let info = model_infos().swap_remove(0).1;
        Ok(info.outputs.iter().map(|spec| zeros(spec, batch)).collect())
    }
}

/// A `kiln.toml` as `kiln sync plan` reads it: valid files parse, others give an error
/// that says what is wrong; a parse never panics. Returns whether the file parsed.
pub fn kiln_toml(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    match kiln_fleet::gitops::parse(text) {
        Ok(file) => {
            for spec in file.models.values() {
                if let Some(weights) = &spec.weights {
                    assert!(
                        weights.values().any(|w| *w > 0),
                        "accepted weights that add up to 0"
                    );
                }
            }
            true
        }
        Err(e) => {
            assert!(!format!("{e:#}").is_empty(), "an error without a message");
            false
        }
    }
}

/// ONNX external data folding, as the MLflow importer runs it. Byte 0 is the length of the
/// side file `weights.bin` (its bytes count up from 0); the rest is the model. Folding
/// either fails with a message or leaves a model with nothing external, which a second
/// pass leaves alone. Returns whether external data was folded in.
pub fn onnx_external(data: &[u8]) -> bool {
    let Some((&side, model)) = data.split_first() else {
        return false;
    };
    let side: Vec<u8> = (0..side).collect();
    let mut load = |location: &str| -> anyhow::Result<Vec<u8>> {
        match location {
            "weights.bin" | "dir/weights.bin" => Ok(side.clone()),
            other => anyhow::bail!("no file {other}"),
        }
    };
    match kiln_mlflow::inline_external_data(model, &mut load) {
        Ok(Some(folded)) => {
            let mut none = |location: &str| -> anyhow::Result<Vec<u8>> {
                panic!("the folded model still reads `{location}`")
            };
            let again = kiln_mlflow::inline_external_data(&folded, &mut none);
            assert!(
                matches!(again, Ok(None)),
                "a second pass over the folded model: {again:?}"
            );
            true
        }
        Ok(None) => false,
        Err(e) => {
            assert!(!format!("{e:#}").is_empty(), "an error without a message");
            false
        }
    }
}

/// The `kiln-bundle` custom section walker (`kiln_types::bundle`), as the Worker's
/// exporter and the playground read components. A component either yields a section that
/// lies inside it, or an error; one with no such section gets a bundle appended that
/// reads back unchanged. Returns whether the section held a bundle.
pub fn wasm_section(data: &[u8]) -> bool {
    use kiln_types::bundle::{self, Bundle, BundleConfig};
    match bundle::encoded_from_component(data) {
        Ok(section) => {
            let inside = data.as_ptr_range();
            assert!(
                inside.start <= section.as_ptr() && section.as_ptr_range().end <= inside.end,
                "the section lies outside the component"
            );
            let decoded = Bundle::decode(section);
            if let Ok(decoded) = &decoded {
                let again = Bundle::decode(&decoded.encode()).expect("an encoded bundle decodes");
                assert_eq!(&again, decoded, "a bundle changed in a round trip");
            }
            assert_eq!(
                bundle::from_component(data).ok(),
                decoded.as_ref().ok().cloned(),
                "from_component disagrees with the section"
            );
            decoded.is_ok()
        }
        Err(e) => {
            let message = e.to_string();
            if message.contains("has no `") {
                let mut component = data.to_vec();
                let appended = Bundle {
                    config: BundleConfig::default(),
                    onnx: data.iter().rev().take(64).copied().collect(),
                };
                bundle::append_to_component(&mut component, &appended);
                let back = bundle::from_component(&component).expect("an appended bundle reads back");
                assert_eq!(back, appended, "the appended bundle changed");
            }
            false
        }
    }
}
