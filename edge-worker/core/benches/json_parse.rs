//! Peak heap and throughput of JSON request parsing (issue 13): the OIP and seed bodies
//! read straight into tensors, against the old path (a `serde_json::Value` tree,
//! flattened, then encoded; `legacy/`) in the same run.
//!
//! `cargo bench -p kiln-api --bench json_parse` prints a table. Peak heap is what the
//! parse allocates above the body (a counting global allocator), divided by the body's
//! size; the tensor it produces is part of it. `KILN_BENCH_QUICK=1` skips the 60 MiB body.

mod legacy;

use kiln_api::oip::InferRequest;
use kiln_api::seed;
use kiln_types::{ElementType, ModelInfo, TensorSpec};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every call forwards to `System` with the caller's layout; the counters only
// observe the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as allocating the new block before freeing the old one: a realloc that
        // moves needs both for a moment.
        grew(new_size);
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            LIVE.fetch_sub(new_size, Relaxed);
        } else {
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A deterministic xorshift generator, so every run parses the same bodies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A feature value: as Python's `json.dumps` writes an f32 widened to f64
    /// (`numpy.tolist()`, about 18 characters), or `short`, with one decimal (`5.1`).
    fn value(&mut self, short: bool) -> String {
        if short {
            return format!("{:.1}", (self.next() % 100) as f64 / 10.0);
        }
        let v = (self.next() % 2_000_000) as f32 / 1000.0 - 1000.0;
        serde_json::to_string(&(v as f64)).unwrap_or_default()
    }
}

/// Rows of 4 features, nested (`[[a,b,c,d],...]`), about `target` bytes in all, and
/// how many rows.
fn rows_json(target: usize, short: bool, rng: &mut Rng) -> (String, usize) {
    let mut out = String::with_capacity(target + 64);
    out.push('[');
    let mut rows = 0;
    while out.len() < target {
        if rows > 0 {
            out.push(',');
        }
        out.push('[');
        for j in 0..4 {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&rng.value(short));
        }
        out.push(']');
        rows += 1;
    }
    out.push(']');
    (out, rows)
}

fn oip_body(target: usize, data_first: bool, short: bool) -> Vec<u8> {
    let (data, rows) = rows_json(target, short, &mut Rng(0x9E37_79B9_7F4A_7C15));
    let body = if data_first {
        format!(r#"{{"inputs":[{{"name":"x","data":{data},"shape":[{rows},4],"datatype":"FP32"}}]}}"#)
    } else {
        format!(r#"{{"inputs":[{{"name":"x","shape":[{rows},4],"datatype":"FP32","data":{data}}}]}}"#)
    };
    body.into_bytes()
}

fn seed_body(target: usize) -> Vec<u8> {
    let (data, _) = rows_json(target, false, &mut Rng(0x2545_F491_4F6C_DD1D));
    format!(r#"{{"instances":{data},"request_id":"bench"}}"#).into_bytes()
}

fn model() -> ModelInfo {
    ModelInfo {
        name: "m".into(),
        version: String::new(),
        source_digest: String::new(),
        inputs: vec![TensorSpec {
            name: "X".into(),
            element_type: ElementType::F32,
            shape: vec![-1, 4],
        }],
        outputs: vec![],
        labels: vec![],
        metadata: vec![],
    }
}

/// A parser under test: a body in, the bytes of the tensors it made out.
type Parse<'a> = dyn Fn(&[u8]) -> usize + 'a;

/// Parses `body` with `parse`: (peak heap above the start, best time of `runs`).
fn measure(body: &[u8], runs: usize, parse: &Parse<'_>) -> (usize, Duration) {
    let mut peak = 0;
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let start = LIVE.load(Relaxed);
        PEAK.store(start, Relaxed);
        let t = Instant::now();
        let made = parse(body);
        let took = t.elapsed();
        assert!(made > 0, "the parse made no tensor");
        peak = peak.max(PEAK.load(Relaxed) - start);
        best = best.min(took);
    }
    (peak, best)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, quickly.
    let quick = std::env::var_os("KILN_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench");
    let mib = 1024 * 1024;
    let info = model();
    let new_oip = |body: &[u8]| -> usize {
        let mut r = InferRequest::from_json(body).expect("parses");
        r.take_tensors()
            .expect("tensors")
            .iter()
            .map(|t| t.data.len())
            .sum()
    };
    let old_oip = |body: &[u8]| -> usize {
        legacy::oip_tensors(body)
            .expect("parses")
            .iter()
            .map(|t| t.data.len())
            .sum()
    };
    let new_seed = |body: &[u8]| -> usize {
        let r = seed::parse(body).expect("parses");
        seed::input_tensor("m", &info, r).expect("tensor").0.data.len()
    };
    let old_seed = |body: &[u8]| -> usize {
        legacy::seed_tensor(body, ElementType::F32, 4, false)
            .expect("tensor")
            .0
            .data
            .len()
    };
    let sizes: &[usize] = if quick { &[mib] } else { &[8 * mib, 60 * mib] };
    let mut cases: Vec<(String, Vec<u8>, bool)> = Vec::new();
    for &size in sizes {
        cases.push((
            format!("OIP FP32 [N,4], {} MiB", size / mib),
            oip_body(size, false, false),
            true,
        ));
    }
    let last = *sizes.last().unwrap_or(&mib);
    cases.push((
        format!("OIP, data before datatype, {} MiB", last / mib),
        oip_body(last, true, false),
        true,
    ));
    cases.push((
        format!("OIP, short numbers (`5.1`), {} MiB", last / mib),
        oip_body(last, false, true),
        true,
    ));
    cases.push((
        format!("seed instances [N,4], {} MiB", sizes[0] / mib),
        seed_body(sizes[0]),
        false,
    ));
    println!(
        "| body | parser | body MiB | tensor MiB | peak heap MiB | peak ÷ body | MB/s |\n|---|---|---:|---:|---:|---:|---:|"
    );
    for (name, body, oip) in &cases {
        let runs = if quick { 1 } else { 3 };
        let tensor = if *oip { new_oip(body) } else { new_seed(body) };
        let parsers: [(&str, &Parse<'_>); 2] = if *oip {
            [("typed (new)", &new_oip), ("Value tree (old)", &old_oip)]
        } else {
            [("typed (new)", &new_seed), ("Value tree (old)", &old_seed)]
        };
        for (parser, parse) in parsers {
            let (peak, time) = measure(body, runs, parse);
            println!(
                "| {name} | {parser} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} |",
                body.len() as f64 / mib as f64,
                tensor as f64 / mib as f64,
                peak as f64 / mib as f64,
                peak as f64 / body.len() as f64,
                body.len() as f64 / 1e6 / time.as_secs_f64(),
            );
        }
    }
}
