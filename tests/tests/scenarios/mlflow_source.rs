//! MLflow as a source: a real `mlflow server` (3.17), models published with the mlflow
//! client library the way a training job does, polled and imported by `MlflowSource` into
//! a real Kiln registry with components compiled by the real `prepare`.

use std::path::Path;

use kiln_mlflow::{MlflowError, MlflowSource, MlflowSourceConfig, Watch};
use kiln_registry::{Registry, Stage};
use kiln_tests::mlflow_server::MlflowServer;
use kiln_tests::*;
use serde_json::{Value, json};

const ACTOR: &str = "mlflow-sync";

fn prepare(path: &Path, name: &str, golden: &[Value]) -> anyhow::Result<kiln_registry::Prepared> {
    kiln_cli::register::prepare(&host(), path, name, golden)
}

fn source(server: &MlflowServer, model: &str, watch: Watch) -> MlflowSource {
    MlflowSource::new(MlflowSourceConfig {
        tracking_uri: server.uri.clone(),
        watch,
        models: Some(vec![model.to_string()]),
    })
    .expect("MlflowSource")
}

fn example_path(name: &str) -> String {
    models_dir().join(format!("{name}.onnx")).display().to_string()
}

#[test]
fn champion_alias_moves_in_mlflow_become_kiln_production_versions() {
    let server = MlflowServer::shared();
    let model = "house-price-mlflow";
    let onnx = example_path("house_price_forest");
    let v1 = server.publish(&[
        "publish",
        "--model",
        model,
        "--onnx",
        &onnx,
        "--param",
        "n_estimators=50",
        "--param",
        "max_depth=6",
        "--metric",
        "rmse=0.25",
        "--metric",
        "r2=0.81",
        "--description",
        "first forest",
        "--alias",
        "champion",
    ]);
    assert_eq!(v1["version"], 1);
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::open(home.path()).unwrap();
    let mut source = source(&server, model, Watch::default());

    // The search endpoint answers with aliases (MLflow 3.17), so one call covers a poll.
    let listed = source.client().search_registered_models(None).unwrap();
    let entry = listed.iter().find(|m| m.name == model).expect("model in search");
    assert_eq!(entry.alias("champion"), Some(1));

    let changes = source.poll().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let change = &changes[0];
    assert_eq!(
        (change.model.as_str(), change.version, change.previous),
        (model, 1, None)
    );
    assert!(
        change.details.source.starts_with("models:/m-"),
        "{}",
        change.details.source
    );

    let outcome = source.import(change, &registry, &prepare, ACTOR).unwrap();
    assert!(!outcome.reused && outcome.promoted, "{outcome:?}");
    let k1 = registry.get(model, outcome.kiln_version.version).unwrap();
    assert_eq!(k1, outcome.kiln_version);
    assert_eq!(k1.stage, Stage::Production);
    assert_eq!(k1.aliases, ["champion"]);
    assert_eq!(k1.description, "first forest");
    assert_eq!(k1.tags["mlflow.model"], model);
    assert_eq!(k1.tags["mlflow.version"], "1");
    assert_eq!(k1.tags["mlflow.run_id"], v1["run_id"].as_str().unwrap());
    assert_eq!(k1.tags["mlflow.source"], change.details.source);
    assert_eq!(k1.lineage["source"], "mlflow");
    assert_eq!(k1.lineage["tracking_uri"], server.uri.as_str());
    assert_eq!(k1.lineage["model"], model);
    assert_eq!(k1.lineage["version"], 1);
    assert_eq!(k1.lineage["run_id"], v1["run_id"]);
    assert_eq!(
        k1.lineage["params"],
        json!({"n_estimators": "50", "max_depth": "6"})
    );
    assert_eq!(k1.lineage["metrics"], json!({"rmse": 0.25, "r2": 0.81}));
    assert!(k1.lineage["tags"]["mlflow.user"].is_string(), "{}", k1.lineage);
    // The component is the compiled forest: it answers like onnxruntime.
    let loaded = host().load(&registry.read_blob(&k1.digest).unwrap()).unwrap();
    let got = loaded.predict(request("house_price_forest")).unwrap();
    assert_matches_reference("imported forest", &got, &expected("house_price_forest"));

    assert_eq!(source.poll().unwrap(), [], "nothing moved");

    // A new version alone is not a release; moving the alias is.
    let v2 = server.publish(&[
        "publish",
        "--model",
        model,
        "--onnx",
        &onnx,
        "--doc-string",
        "retrained on more data",
        "--param",
        "n_estimators=80",
        "--param",
        "max_depth=6",
        "--metric",
        "rmse=0.21",
        "--metric",
        "r2=0.86",
    ]);
    assert_eq!(v2["version"], 2);
    assert_eq!(
        source.poll().unwrap(),
        [],
        "v2 exists but champion still names v1"
    );
    server.publish(&[
        "set-alias",
        "--model",
        model,
        "--alias",
        "champion",
        "--version",
        "2",
    ]);
    let changes = source.poll().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!((changes[0].version, changes[0].previous), (2, Some(1)));

    let outcome = source.import(&changes[0], &registry, &prepare, ACTOR).unwrap();
    assert!(!outcome.reused && outcome.promoted, "{outcome:?}");
    let k2 = outcome.kiln_version.clone();
    assert_ne!(k2.version, k1.version);
    assert_ne!(k2.digest, k1.digest, "the re-saved ONNX is a different component");
    assert_eq!(
        (k2.stage, k2.aliases.as_slice()),
        (Stage::Production, ["champion".to_string()].as_slice())
    );
    assert_eq!(k2.tags["mlflow.version"], "2");
    assert_eq!(k2.lineage["params"]["n_estimators"], "80");
    assert_eq!(k2.lineage["metrics"]["rmse"], 0.21);
    let k1 = registry.get(model, k1.version).unwrap();
    assert_eq!((k1.stage, k1.aliases.len()), (Stage::Archived, 0));

    // Importing the same change again finds the version by its tags: no download, no write.
    let audit = registry.audit_log(None).unwrap();
    let again = source.import(&changes[0], &registry, &prepare, ACTOR).unwrap();
    assert!(again.reused && !again.promoted, "{again:?}");
    assert_eq!(again.kiln_version, registry.get(model, k2.version).unwrap());
    assert_eq!(registry.list(Some(model)).unwrap().len(), 2);
    assert_eq!(
        registry.audit_log(None).unwrap(),
        audit,
        "a repeated import writes nothing"
    );
    assert!(audit.iter().all(|e| e.actor == ACTOR), "{audit:?}");
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "register",
            "set_alias",
            "transition_stage",
            "register",
            "set_alias",
            "transition_stage"
        ]
    );
    assert!(registry.verify_audit().unwrap().ok());

    // Rolling back in MLflow (champion → v1 again) reuses Kiln's archived v1 and promotes it.
    server.publish(&[
        "set-alias",
        "--model",
        model,
        "--alias",
        "champion",
        "--version",
        "1",
    ]);
    let changes = source.poll().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!((changes[0].version, changes[0].previous), (1, Some(2)));
    let back = source.import(&changes[0], &registry, &prepare, ACTOR).unwrap();
    assert!(back.reused && back.promoted, "{back:?}");
    assert_eq!(back.kiln_version.version, k1.version);
    assert_eq!(
        (back.kiln_version.stage, back.kiln_version.aliases.len()),
        (Stage::Production, 1)
    );
    assert_eq!(registry.get(model, k2.version).unwrap().stage, Stage::Archived);
    assert_eq!(
        registry.list(Some(model)).unwrap().len(),
        2,
        "nothing new registered"
    );
}

#[test]
fn a_version_without_an_onnx_file_fails_naming_it_and_leaves_the_registry_unchanged() {
    let server = MlflowServer::shared();
    let model = "pickled-mlflow";
    server.publish(&["publish-without-onnx", "--model", model, "--alias", "champion"]);
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::open(home.path()).unwrap();
    let mut source = source(&server, model, Watch::default());
    let changes = source.poll().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0].details.source.starts_with("runs:/"),
        "{:?}",
        changes[0].details
    );

    let err = source
        .import(&changes[0], &registry, &prepare, ACTOR)
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("MLflow model 'pickled-mlflow' version 1 has no .onnx file"),
        "{text}"
    );
    assert!(text.contains("found: model.pkl"), "lists what it found: {text}");
    assert!(
        err.chain()
            .any(|e| matches!(e.downcast_ref::<MlflowError>(), Some(MlflowError::NoOnnx { .. }))),
        "{text}"
    );
    assert_eq!(registry.list(None).unwrap(), []);
    assert_eq!(registry.audit_log(None).unwrap(), []);
    // Permanent: not reported again until the alias moves.
    assert_eq!(source.poll().unwrap(), []);
}

#[test]
fn a_production_stage_logged_with_external_data_imports_and_predicts_like_onnxruntime() {
    let server = MlflowServer::shared();
    let model = "mlp-mlflow";
    let onnx = example_path("mlp");
    // mlflow.onnx.log_model's default moves every tensor over 1 KiB into a side file.
    server.publish(&[
        "publish",
        "--model",
        model,
        "--onnx",
        &onnx,
        "--param",
        "hidden=16",
        "--metric",
        "accuracy=0.97",
        "--stage",
        "Production",
        "--external-data",
    ]);
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::open(home.path()).unwrap();
    let mut source = source(&server, model, Watch::Stage("Production".into()));
    let client = source.client();
    let files = client
        .list_artifacts(&client.get_download_uri(model, 1).unwrap())
        .unwrap();
    assert!(
        files.iter().any(|f| f.path.ends_with(".data")),
        "the ONNX flavor should have written external data: {files:?}"
    );

    let changes = source.poll().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].details.current_stage, "Production");
    let outcome = source.import(&changes[0], &registry, &prepare, ACTOR).unwrap();
    assert!(!outcome.reused && outcome.promoted, "{outcome:?}");
    let version = outcome.kiln_version;
    assert_eq!(
        (version.stage, version.aliases.len()),
        (Stage::Production, 0),
        "a stage watch sets no alias"
    );
    assert_eq!(version.lineage["metrics"], json!({"accuracy": 0.97}));
    let loaded = host()
        .load(&registry.read_blob(&version.digest).unwrap())
        .unwrap();
    let got = loaded.predict(request("mlp")).unwrap();
    assert_matches_reference("imported mlp", &got, &expected("mlp"));
}

/// The reference step `kiln sync run --mlflow` uses: the component run on the file.
fn profile_reference(
    component: &[u8],
    data: &Path,
    names: Option<&str>,
) -> anyhow::Result<kiln_registry::ReferenceProfile> {
    kiln_cli::reference::build(&host(), component, data, names)
}

/// Polls `source` for its one change and imports it with the reference step, local dataset
/// files allowed inside `dataset_dirs`.
fn import_next(
    source: &mut MlflowSource,
    registry: &Registry,
    dataset_dirs: &[std::path::PathBuf],
) -> kiln_mlflow::ImportOutcome {
    let changes = source.poll().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let hook = kiln_mlflow::ReferenceHook {
        profile: &profile_reference,
        dataset_dirs,
    };
    source
        .import_with_reference(&changes[0], registry, &prepare, Some(&hook), ACTOR)
        .unwrap()
}

/// 120 iris-like rows of 4 features with a header, spread deterministically.
fn iris_csv(dir: &Path, file: &str) -> String {
    let mut text = String::from("sepal_length,sepal_width,petal_length,petal_width\n");
    for i in 0..120 {
        let t = (i * 37 % 120) as f64 / 120.0;
        text.push_str(&format!(
            "{:.3},{:.3},{:.3},{:.3}\n",
            4.5 + 3.0 * t,
            2.2 + 1.5 * (1.0 - t),
            1.0 + 5.5 * t,
            0.1 + 2.3 * t
        ));
    }
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_dataset_logged_with_the_run_becomes_the_imported_versions_reference() {
    let server = MlflowServer::shared();
    let model = "iris-with-dataset";
    let onnx = example_path("iris_logreg");
    let data = tempfile::tempdir().unwrap();
    let csv = iris_csv(data.path(), "iris_train.csv");
    // The training job logs its data as the run's input, and the file as an artifact.
    let v1 = server.publish(&[
        "publish",
        "--model",
        model,
        "--onnx",
        &onnx,
        "--alias",
        "champion",
        "--dataset",
        &csv,
        "--dataset-artifact",
    ]);
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::open(home.path()).unwrap();
    let mut source = source(&server, model, Watch::default());
    let run = source.client().get_run(v1["run_id"].as_str().unwrap()).unwrap();
    assert_eq!(run.datasets.len(), 1, "{run:?}");
    assert_eq!(
        (
            run.datasets[0].name.as_str(),
            run.datasets[0].context.as_str(),
            run.datasets[0].source_type.as_str()
        ),
        ("iris_train.csv", "training", "local")
    );
    let outcome = import_next(&mut source, &registry, &[]);
    assert!(outcome.promoted, "{outcome:?}");
    let note = outcome
        .reference
        .clone()
        .expect("a dataset was logged")
        .expect("and used");
    assert!(
        note.starts_with("120 rows × 4 features from MLflow dataset 'iris_train.csv' (training, digest ")
            && note.ends_with("run artifact iris_train.csv"),
        "{note}"
    );
    let stored = registry
        .reference(model, outcome.kiln_version.version)
        .unwrap()
        .expect("reference stored");
    assert_eq!(stored.rows, 120);
    assert_eq!(
        stored.features,
        ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    );
    assert_eq!(stored.created_by, ACTOR);
    // It holds the version's own outputs on the data (prediction drift's reference), and
    // the feature columns as the file has them.
    let profile: kiln_monitor::model::ModelProfile = serde_json::from_str(&stored.profile).unwrap();
    let inputs = profile.inputs.expect("inputs");
    let outputs = profile.outputs.expect("outputs");
    assert_eq!((inputs.rows(), outputs.rows()), (120, 120));
    let f2 = inputs.column("f2").expect("petal_length");
    assert_eq!(f2.min(), Some(1.0));
    assert!(
        f2.max().is_some_and(|m| (m - 6.454).abs() < 1e-5),
        "{:?}",
        f2.max()
    );
    let audit = registry.audit_log(Some(model)).unwrap();
    assert!(audit.iter().any(|e| e.action == "set_reference"), "{audit:?}");
}

#[test]
fn a_dataset_kiln_may_not_read_is_reported_and_a_local_one_is_read_only_inside_an_allowed_dir() {
    let server = MlflowServer::shared();
    let model = "iris-local-dataset";
    let onnx = example_path("iris_logreg");
    let data = tempfile::tempdir().unwrap();
    let csv = iris_csv(data.path(), "iris_local.csv");
    // A training run logging `file` as its dataset (a local path only: no artifact);
    // `doc` gives the model other bytes, so each publish is a new version.
    let publish = |file: &str, doc: &str| {
        server.publish(&[
            "publish",
            "--model",
            model,
            "--onnx",
            &onnx,
            "--alias",
            "champion",
            "--dataset",
            file,
            "--doc-string",
            doc,
        ]);
    };
    publish(&csv, "first");
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::open(home.path()).unwrap();
    let mut source = source(&server, model, Watch::default());
    let outcome = import_next(&mut source, &registry, &[]);
    // The import itself succeeds; the reference says why it is missing.
    assert!(outcome.promoted, "{outcome:?}");
    let why = outcome
        .reference
        .clone()
        .expect("a dataset was logged")
        .unwrap_err();
    assert!(
        why.contains("no run artifact is called iris_local.csv") && why.contains("--mlflow-dataset-dir"),
        "{why}"
    );
    assert_eq!(
        registry.reference(model, outcome.kiln_version.version).unwrap(),
        None
    );

    // Allowed: a new MLflow version (other bytes) reads the file in place.
    let retrain = |source: &mut MlflowSource, file: &str, doc: &str| {
        publish(file, doc);
        let outcome = import_next(source, &registry, &[data.path().to_path_buf()]);
        let note = outcome.reference.clone().expect("logged").expect("read in place");
        let name = Path::new(file).file_name().unwrap_or_default().to_string_lossy();
        assert!(
            note.contains("120 rows × 4 features") && note.contains(&*name),
            "{note}"
        );
        registry
            .reference(model, outcome.kiln_version.version)
            .unwrap()
            .expect("stored")
    };
    let stored = retrain(&mut source, &csv, "retrained");
    assert_eq!(stored.rows, 120);

    // The same data as Parquet (what `df.to_parquet` writes, pandas' index left out).
    let parquet = data.path().join("iris_local.parquet");
    let converted = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, pandas as pd; pd.read_csv(sys.argv[1]).to_parquet(sys.argv[2])",
            &csv,
            parquet.to_str().unwrap_or_default(),
        ])
        .output()
        .expect("running python3");
    assert!(
        converted.status.success(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    let from_parquet = retrain(
        &mut source,
        parquet.to_str().unwrap_or_default(),
        "retrained on parquet",
    );
    assert_eq!(from_parquet.features, stored.features);
    // The same rows through either file: the same profile of inputs and outputs.
    assert_eq!(from_parquet.profile, stored.profile);
}
