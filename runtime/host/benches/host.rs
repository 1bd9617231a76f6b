//! Host benchmarks (issue "Model components", targets in docs/benchmarks.md):
//! - `first_prediction`: fresh instance → first prediction done, pre-initialized
//!   component vs the same model in the plain guest that loads at first call;
//! - `steady_predict`: one prediction on a warm instance vs native tract;
//! - `component_load`: AOT-cached load vs Cranelift compile.
//!
//! Components are compiled once into `target/kiln-test-cache` (shared with the tests).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kiln_api::oip::InferRequest;
use kiln_engine::{Bundle, BundleConfig, LoadOptions, Model, Tensor};
use kiln_host::{Host, HostConfig, Isolation, LoadedModel};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const MODELS: [&str; 3] = ["mlp", "house_price_forest", "cnn"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cache() -> PathBuf {
    root().join("target/kiln-test-cache")
}

fn host(isolation: Isolation) -> Arc<Host> {
    Arc::new(
        Host::new(HostConfig {
            isolation,
            pool_size: 1,
            deadline: Duration::from_secs(10),
            cache_dir: Some(cache().join("aot")),
            ..HostConfig::default()
        })
        .expect("host"),
    )
}

fn onnx(name: &str) -> Vec<u8> {
    std::fs::read(root().join(format!("examples/models/{name}.onnx"))).expect("example model")
}

/// One row of the example request (batch size 1), the typical online request.
fn one_row(name: &str) -> Vec<Tensor> {
    let body = std::fs::read(root().join(format!("examples/models/{name}.request.json"))).expect("request");
    let tensors = InferRequest::from_json(&body)
        .and_then(|r| r.tensors())
        .expect("tensors");
    tensors
        .into_iter()
        .map(|mut t| {
            let row = t.data.len() / t.shape[0] as usize;
            t.data.truncate(row);
            t.shape[0] = 1;
            t
        })
        .collect()
}

fn component(host: &Arc<Host>, name: &str) -> Vec<u8> {
    let dir = cache().join("components");
    kiln_host::compile::compile_cached(host, &onnx(name), &LoadOptions::default(), &dir).expect("compile")
}

fn lazy(host: &Arc<Host>, name: &str) -> LoadedModel {
    let bundle = Bundle {
        config: BundleConfig {
            options: LoadOptions::default(),
        },
        onnx: onnx(name),
    };
    host.load_lazy(bundle.encode()).expect("lazy guest")
}

fn first_prediction(c: &mut Criterion) {
    let h = host(Isolation::PerRequest);
    let mut g = c.benchmark_group("first_prediction");
    for name in ["mlp", "house_price_forest"] {
        let input = one_row(name);
        let pre = h.load(&component(&h, name)).expect("load");
        g.bench_with_input(BenchmarkId::new("pre_initialized", name), &input, |b, input| {
            b.iter(|| pre.predict(input.clone()).expect("predict"))
        });
        let plain = lazy(&h, name);
        g.bench_with_input(
            BenchmarkId::new("plain_load_at_first_call", name),
            &input,
            |b, input| b.iter(|| plain.predict(input.clone()).expect("predict")),
        );
    }
    g.finish();
}

fn steady_predict(c: &mut Criterion) {
    let h = host(Isolation::Pooled);
    let mut g = c.benchmark_group("steady_predict");
    for name in MODELS {
        let input = one_row(name);
        let pooled = h.load(&component(&h, name)).expect("load");
        pooled.predict(input.clone()).expect("warm");
        g.bench_with_input(BenchmarkId::new("component_pooled", name), &input, |b, input| {
            b.iter(|| pooled.predict(input.clone()).expect("predict"))
        });
        let native = Model::load(&onnx(name), &LoadOptions::default()).expect("native");
        let mut state = native.new_state().expect("state");
        g.bench_with_input(BenchmarkId::new("native_tract", name), &input, |b, input| {
            b.iter(|| native.predict_with(&mut state, input).expect("predict"))
        });
    }
    g.finish();

    let h = host(Isolation::PerRequest);
    let mut g = c.benchmark_group("per_request_predict");
    for name in MODELS {
        let input = one_row(name);
        let m = h.load(&component(&h, name)).expect("load");
        g.bench_with_input(
            BenchmarkId::new("component_per_request", name),
            &input,
            |b, input| b.iter(|| m.predict(input.clone()).expect("predict")),
        );
    }
    g.finish();
}

fn component_load(c: &mut Criterion) {
    let h = host(Isolation::PerRequest);
    let wasm = component(&h, "house_price_forest");
    h.compile_component(&wasm).expect("fill the cache");
    let mut g = c.benchmark_group("component_load");
    let digest = kiln_types::digest(&wasm);
    g.bench_function(
        BenchmarkId::new("aot_cache_hit_by_digest", format!("{}MB", wasm.len() >> 20)),
        |b| b.iter(|| h.component_for_digest(&digest, &wasm).expect("load")),
    );
    g.bench_function(
        BenchmarkId::new(
            "aot_cache_hit_hashing_the_bytes",
            format!("{}MB", wasm.len() >> 20),
        ),
        |b| b.iter(|| h.compile_component(&wasm).expect("load")),
    );
    g.sample_size(10).measurement_time(Duration::from_secs(60));
    let uncached = Host::new(HostConfig {
        cache_dir: None,
        ..HostConfig::default()
    })
    .expect("host");
    g.bench_function(
        BenchmarkId::new("cranelift_compile", format!("{}MB", wasm.len() >> 20)),
        |b| b.iter(|| uncached.compile_component(&wasm).expect("compile")),
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = first_prediction, steady_predict, component_load
}
criterion_main!(benches);
