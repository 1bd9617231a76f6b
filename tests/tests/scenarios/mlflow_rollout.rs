//! MLflow drives the fleet: `kiln sync run --mlflow` watches a real `mlflow server`; a
//! training job's model with the `champion` alias is imported (downloaded, compiled,
//! registered with its run's lineage), promoted and deployed to the joined nodes, and
//! moving the alias in MLflow to a retrained version starts a canary that runs to 100 %.

use kiln_tests::fleet::{Fleet, Load, echo_body};
use kiln_tests::mlflow_server::MlflowServer;
use serde_json::Value;
use std::time::Duration;

#[test]
fn moving_the_champion_alias_in_mlflow_rolls_the_new_version_out_to_the_fleet() {
    let mlflow = MlflowServer::start();
    let onnx = kiln_tests::root().join("examples/models/echo4.onnx");
    let onnx = onnx.to_str().unwrap_or_default();
    mlflow.publish(&[
        "publish", "--model", "echo", "--onnx", onnx, "--param", "epochs=3", "--metric", "loss=0.5",
        "--alias", "champion",
    ]);
    let fleet = Fleet::start(2, &["--mlflow", &mlflow.uri, "--mlflow-poll", "500ms"]);
    // Imported, promoted, and (a first deployment) served everywhere.
    fleet.wait_all_serving("echo", &echo_body(1.0), 1, Duration::from_secs(120));
    let v1: Value =
        serde_json::from_str(&fleet.kiln(&["models", "show", "echo@champion", "--json"])).unwrap();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["stage"], "Production");
    assert_eq!(v1["tags"]["mlflow.version"], "1");
    assert_eq!(v1["lineage"]["params"]["epochs"], "3");

    fleet.kiln(&[
        "rollout",
        "policy",
        "echo",
        "--steps",
        "50,100",
        "--interval",
        "1s",
        "--min-requests",
        "5",
    ]);
    let load = Load::start(
        fleet.addrs(),
        "/v2/models/echo/infer".into(),
        vec![echo_body(1.0)],
        3,
    );
    let retrained = mlflow.publish(&[
        "publish",
        "--model",
        "echo",
        "--onnx",
        onnx,
        "--doc-string",
        "retrained",
        "--param",
        "epochs=10",
        "--metric",
        "loss=0.2",
    ]);
    assert_eq!(retrained["version"], 2);
    mlflow.publish(&[
        "set-alias",
        "--model",
        "echo",
        "--alias",
        "champion",
        "--version",
        "2",
    ]);
    let done = fleet.wait_rollout("echo", "succeeded", Duration::from_secs(120));
    let report = load.stop();
    assert_eq!(done["to_version"], 2);
    assert_eq!(done["trigger"], "registry");
    assert_eq!(report.failed(), 0, "{report:?}");
    fleet.wait_all_serving("echo", &echo_body(1.0), 2, Duration::from_secs(20));
    let v2: Value = serde_json::from_str(&fleet.kiln(&["models", "show", "echo/2", "--json"])).unwrap();
    assert_eq!(v2["lineage"]["run_id"], retrained["run_id"]);
    assert_eq!(v2["lineage"]["metrics"]["loss"], 0.2);
    let audit = fleet.kiln(&["audit", "log", "--model", "echo"]);
    assert!(
        audit.contains("mlflow-sync"),
        "imports are audited under the sync's actor: {audit}"
    );
}
