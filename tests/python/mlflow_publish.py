"""Publishes ONNX models to an MLflow tracking server the way a training job would, for
Kiln's MLflow source tests. Uses only the mlflow client library.

    mlflow_publish.py URI publish --model NAME --onnx FILE [--doc-string S] [--param K=V]...
                                  [--metric K=V]... [--description D] [--alias A]
                                  [--stage S] [--external-data]
                                  [--dataset CSV [--dataset-context C] [--dataset-artifact]]
    mlflow_publish.py URI set-alias --model NAME --alias A --version N
    mlflow_publish.py URI publish-without-onnx --model NAME [--alias A]

Each command prints one JSON object: {"model", "version", "run_id"}.
"""

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402


def key_values(pairs, convert):
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"expected KEY=VALUE, got {pair!r}")
        out[key] = convert(value)
    return out


def publish(client, args):
    import onnx

    model = onnx.load(args.onnx)
    if args.doc_string is not None:
        # Different bytes (and digest) for the same predictions: a retrained model stand-in.
        model.doc_string = args.doc_string
    mlflow.set_experiment("kiln-mlflow-source")
    with mlflow.start_run() as run:
        mlflow.log_params(key_values(args.param, str))
        mlflow.log_metrics(key_values(args.metric, float))
        if args.dataset:
            # The training data, logged the way MLflow's docs show: a dataset input whose
            # source is the file, and (with --dataset-artifact) the file itself.
            import pandas as pd

            frame = pd.read_parquet(args.dataset) if args.dataset.endswith(".parquet") else pd.read_csv(args.dataset)
            dataset = mlflow.data.from_pandas(frame, source=args.dataset, name=os.path.basename(args.dataset))
            mlflow.log_input(dataset, context=args.dataset_context)
            if args.dataset_artifact:
                mlflow.log_artifact(args.dataset, artifact_path="data")
        info = mlflow.onnx.log_model(
            model,
            name="model",
            registered_model_name=args.model,
            save_as_external_data=args.external_data,
        )
    version = str(info.registered_model_version)
    if args.description:
        client.update_model_version(args.model, version, description=args.description)
    if args.alias:
        client.set_registered_model_alias(args.model, args.alias, version)
    if args.stage:
        # Deprecated since MLflow 2.9 (a FutureWarning) but still served by 3.17.
        client.transition_model_version_stage(args.model, version, args.stage, archive_existing_versions=True)
    return version, run.info.run_id


def publish_without_onnx(client, args):
    """A version whose source directory holds no .onnx (e.g. a pickled model)."""
    mlflow.set_experiment("kiln-mlflow-source")
    with mlflow.start_run() as run:
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "model.pkl"), "wb") as f:
                f.write(b"not an onnx model")
            mlflow.log_artifacts(tmp, artifact_path="pickled")
    if not client.search_registered_models(filter_string=f"name = '{args.model}'"):
        client.create_registered_model(args.model)
    mv = client.create_model_version(
        args.model, f"runs:/{run.info.run_id}/pickled", run_id=run.info.run_id, description="pickled, no onnx"
    )
    if args.alias:
        client.set_registered_model_alias(args.model, args.alias, mv.version)
    return str(mv.version), run.info.run_id


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tracking_uri")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish")
    p.add_argument("--model", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--doc-string")
    p.add_argument("--param", action="append", default=[])
    p.add_argument("--metric", action="append", default=[])
    p.add_argument("--description", default="")
    p.add_argument("--alias")
    p.add_argument("--stage")
    p.add_argument("--external-data", action="store_true", help="mlflow.onnx.log_model's default")
    p.add_argument("--dataset", help="a CSV of model inputs logged as the run's dataset")
    p.add_argument("--dataset-context", default="training")
    p.add_argument("--dataset-artifact", action="store_true", help="also log the file as a run artifact")
    s = sub.add_parser("set-alias")
    s.add_argument("--model", required=True)
    s.add_argument("--alias", required=True)
    s.add_argument("--version", required=True)
    n = sub.add_parser("publish-without-onnx")
    n.add_argument("--model", required=True)
    n.add_argument("--alias")
    args = parser.parse_args()

    mlflow.set_tracking_uri(args.tracking_uri)
    client = MlflowClient()
    if args.command == "publish":
        version, run_id = publish(client, args)
    elif args.command == "set-alias":
        client.set_registered_model_alias(args.model, args.alias, args.version)
        version, run_id = args.version, client.get_model_version(args.model, args.version).run_id
    else:
        version, run_id = publish_without_onnx(client, args)
    print(json.dumps({"model": args.model, "version": int(version), "run_id": run_id}))


if __name__ == "__main__":
    main()
