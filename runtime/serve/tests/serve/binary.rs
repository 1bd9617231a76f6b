//! The binary tensor extension: raw little-endian inputs after the JSON header, binary
//! outputs on request, and refusals of bad framing.

use crate::oip_api::assert_outputs_match;
use crate::seed_api::standard;
use crate::*;
use serde_json::json;

/// The iris request with its input as binary: (body, header length).
fn binary_iris(parameters: Value, outputs: Option<Value>) -> (Vec<u8>, usize) {
    let rows = request_rows("iris_logreg");
    let raw: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    let mut header = json!({
        "id": "bin-1",
        "inputs": [{
            "name": "X", "shape": [rows.len(), 4], "datatype": "FP32",
            "parameters": { "binary_data_size": raw.len() },
        }],
        "parameters": parameters,
    });
    if let Some(outputs) = outputs {
        header["outputs"] = outputs;
    }
    let mut body = header.to_string().into_bytes();
    let length = body.len();
    body.extend_from_slice(&raw);
    (body, length)
}

fn infer_url(server: &TestServer) -> String {
    server.url("/v2/models/iris/infer")
}

#[test]
fn binary_input_and_binary_output_round_trip() {
    let server = standard();
    let (body, length) = binary_iris(json!({ "binary_data_output": true }), None);
    let r = post(
        &infer_url(&server),
        &body,
        &[("Inference-Header-Content-Length", length.to_string())],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.content_type, "application/octet-stream");
    let json_len = r.header_length.expect("Inference-Header-Content-Length");
    let header: Value = serde_json::from_slice(&r.body[..json_len]).unwrap();
    assert_eq!(header["id"], "bin-1");
    let mut rest = &r.body[json_len..];
    let mut decoded = Vec::new();
    for out in header["outputs"].as_array().unwrap() {
        assert!(out.get("data").is_none(), "binary outputs carry no data: {out}");
        let size = out["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
        let (bytes, tail) = rest.split_at(size);
        rest = tail;
        let values: Vec<f64> = match out["datatype"].as_str().unwrap() {
            "INT64" => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            "FP32" => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("unexpected datatype {other}"),
        };
        let mut out = out.clone();
        out["data"] = json!(values);
        decoded.push(out);
    }
    assert!(rest.is_empty(), "{} bytes left after the outputs", rest.len());
    assert_outputs_match("iris_logreg", &Value::Array(decoded), None);
}

#[test]
fn binary_input_with_json_outputs_and_a_per_output_binary_flag() {
    let server = standard();
    // No binary_data_output anywhere: a plain JSON response.
    let (body, length) = binary_iris(json!({}), None);
    let r = post(
        &infer_url(&server),
        &body,
        &[("Inference-Header-Content-Length", length.to_string())],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.content_type.starts_with("application/json"));
    assert!(r.header_length.is_none());
    assert_outputs_match("iris_logreg", &r.json()["outputs"], None);

    // Only `label` as binary; `probabilities` stays JSON.
    let (body, length) = binary_iris(
        json!({}),
        Some(json!([
            { "name": "label", "parameters": { "binary_data_output": true } },
            { "name": "probabilities" },
        ])),
    );
    let r = post(
        &infer_url(&server),
        &body,
        &[("Inference-Header-Content-Length", length.to_string())],
    );
    assert_eq!(r.status, 200);
    let json_len = r.header_length.unwrap();
    let header: Value = serde_json::from_slice(&r.body[..json_len]).unwrap();
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 6 * 8);
    let labels: Vec<f64> = r.body[json_len..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    assert_eq!(labels, reference("iris_logreg", "label").1);
    assert_outputs_match(
        "iris_logreg",
        &json!([header["outputs"][1]]),
        Some(&["probabilities"]),
    );
}

#[test]
fn binary_framing_mistakes_are_400_with_json_errors() {
    let server = standard();
    let (body, length) = binary_iris(json!({}), None);
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("header past the end", body.clone(), (body.len() + 1).to_string()),
        ("header not a number", body.clone(), "many".into()),
        (
            "binary data cut short",
            body[..body.len() - 4].to_vec(),
            length.to_string(),
        ),
        (
            "extra bytes",
            [body.as_slice(), &[0u8; 4]].concat(),
            length.to_string(),
        ),
        ("JSON cut in the middle", body.clone(), (length - 5).to_string()),
    ];
    for (what, body, header) in cases {
        let r = post(
            &infer_url(&server),
            &body,
            &[("Inference-Header-Content-Length", header)],
        );
        assert_eq!(r.status, 400, "{what}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["error"].is_string(), "{what}");
    }

    // A size that does not fit the shape, and BYTES.
    for (datatype, size) in [("FP32", 90), ("BYTES", 96)] {
        let header = json!({ "inputs": [{
            "name": "X", "shape": [6, 4], "datatype": datatype,
            "parameters": { "binary_data_size": size },
        }]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend(vec![0u8; size]);
        let r = post(
            &infer_url(&server),
            &body,
            &[("Inference-Header-Content-Length", header.len().to_string())],
        );
        assert_eq!(r.status, 400, "{datatype}");
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains("`X`"), "{error}");
    }
}
