//! The fuzz targets on stable: every parser of untrusted input (seed and OIP bodies
//! through `kiln_api::begin`, routing tables, `kiln.toml`, ONNX external data, the
//! component's bundle section) keeps its promises on the committed fuzz corpus and on a
//! few seconds of proptest inputs (corpus inputs with bytes changed, inserted, cut, and
//! random bytes). The checks are the fuzz targets' own (`fuzz/src/lib.rs`, compiled here
//! as a module so stable builds never link libFuzzer); `cargo +nightly fuzz run <target>`
//! runs them for as long as you like.

#[path = "../../../fuzz/src/lib.rs"]
mod checks;

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A target's check: panics when the parser breaks a promise; says whether it accepted
/// the input.
type Check = fn(&[u8]) -> bool;
/// A target's committed inputs.
type Corpus = Vec<Vec<u8>>;

/// The targets, with their checks.
const TARGETS: [(&str, Check); 6] = [
    ("seed", checks::seed),
    ("oip", checks::oip),
    ("routing_table", checks::routing_table),
    ("kiln_toml", checks::kiln_toml),
    ("onnx_external", checks::onnx_external),
    ("wasm_section", checks::wasm_section),
];

fn corpus_dir(target: &str) -> PathBuf {
    kiln_tests::root().join("fuzz").join("corpus").join(target)
}

/// The committed corpus of a target, read once.
fn corpus(target: &str) -> &'static [Vec<u8>] {
    static CORPORA: OnceLock<BTreeMap<&'static str, Corpus>> = OnceLock::new();
    let all = CORPORA.get_or_init(|| {
        TARGETS
            .iter()
            .map(|(name, _)| {
                let dir = corpus_dir(name);
                let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                    .map(|entry| entry.expect("a corpus entry").path())
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                let inputs = files
                    .iter()
                    .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())))
                    .collect();
                (*name, inputs)
            })
            .collect()
    });
    all.get(target).map(Vec::as_slice).unwrap_or_default()
}

#[test]
fn the_api_targets_serve_the_real_infos_of_their_example_models() {
    for (example, info) in checks::model_infos() {
        let model = kiln_engine::Model::load(&kiln_tests::onnx(example), &Default::default())
            .unwrap_or_else(|e| panic!("loading {example}: {e}"));
        let real = model.info();
        assert_eq!(info.inputs, real.inputs, "{example}'s inputs");
        assert_eq!(info.outputs, real.outputs, "{example}'s outputs");
        assert_eq!(info.labels, real.labels, "{example}'s labels");
    }
}

#[test]
fn every_committed_corpus_input_passes_its_target_check_and_each_corpus_is_accepted_and_refused() {
    for (target, f) in TARGETS {
        let inputs = corpus(target);
        let accepted = inputs.iter().filter(|input| f(input)).count();
        // Both paths, so the proptest mutations start from inputs that reach past the parser.
        assert!(
            accepted > 0 && accepted < inputs.len(),
            "fuzz/corpus/{target}: {accepted} of {} inputs accepted",
            inputs.len()
        );
    }
}

/// A corpus input of `target` with a few bytes changed, inserted or cut, or random bytes.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6);
    let from_corpus = (
        any::<prop::sample::Index>(),
        edits,
        any::<Option<prop::sample::Index>>(),
    )
        .prop_map(move |(pick, edits, cut)| {
            let inputs = corpus(target);
            let mut bytes = if inputs.is_empty() {
                Vec::new()
            } else {
                inputs[pick.index(inputs.len())].clone()
            };
            for (at, byte, kind) in edits {
                let len = bytes.len();
                match kind {
                    0 if len > 0 => bytes[at.index(len)] = byte,
                    1 => bytes.insert(at.index(len + 1), byte),
                    _ if len > 0 => {
                        bytes.remove(at.index(len));
                    }
                    _ => {}
                }
            }
            if let Some(cut) = cut {
                let len = bytes.len();
                bytes.truncate(cut.index(len + 1));
            }
            bytes
        });
    prop_oneof![4 => from_corpus, 1 => prop::collection::vec(any::<u8>(), 0..256)]
}

proptest! {
    // 4000 inputs per target: about a second each in a debug build; the nightly fuzzers run for minutes.
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn seed_requests_with_mutated_bodies_get_an_answer_or_a_4xx(input in mutated("seed")) {
        checks::seed(&input);
    }

    #[test]
    fn oip_json_and_binary_requests_with_mutated_bodies_get_an_answer_or_a_4xx(input in mutated("oip")) {
        checks::oip(&input);
    }

    #[test]
    fn mutated_routing_tables_are_refused_with_a_message_or_route(input in mutated("routing_table")) {
        checks::routing_table(&input);
    }

    #[test]
    fn mutated_kiln_toml_files_are_refused_with_a_message_or_parse(input in mutated("kiln_toml")) {
        checks::kiln_toml(&input);
    }

    #[test]
    fn mutated_onnx_models_fold_their_external_data_or_fail_with_a_message(input in mutated("onnx_external")) {
        checks::onnx_external(&input);
    }

    #[test]
    fn mutated_components_yield_their_bundle_section_or_an_error(input in mutated("wasm_section")) {
        checks::wasm_section(&input);
    }
}
