//! Folds ONNX external data back into the model file.
//!
//! `mlflow.onnx.log_model` saves with `save_as_external_data=True` by default, and the
//! `onnx` package then moves every tensor over 1 KiB into a side file, leaving `model.onnx`
//! with references only. Kiln compiles a single self-contained `.onnx`, so the importer
//! copies each referenced byte range into the tensor's `raw_data`. This works on the
//! protobuf wire format directly (no ONNX schema dependency in the registry crate) and
//! copies every field it does not rewrite byte for byte.

use std::collections::HashMap;

use anyhow::{Context, bail, ensure};

/// The ONNX messages that can contain tensors, and where.
#[derive(Clone, Copy, Debug)]
enum Message {
    Model,
    Graph,
    Node,
    Attribute,
    Function,
    SparseTensor,
    Tensor,
}

impl Message {
    /// The message type of a length-delimited field worth descending into.
    fn child(self, field: u32) -> Option<Message> {
        use Message::*;
        match (self, field) {
            (Model, 7) => Some(Graph),
            (Model, 25) => Some(Function),
            (Graph, 1) => Some(Node),
            (Graph, 5) => Some(Tensor),
            (Graph, 15) => Some(SparseTensor),
            (Node, 5) => Some(Attribute),
            (Function, 7) => Some(Node),
            (Function, 11) => Some(Attribute),
            (Attribute, 5 | 10) => Some(Tensor),
            (Attribute, 6 | 11) => Some(Graph),
            (Attribute, 22 | 23) => Some(SparseTensor),
            (SparseTensor, 1 | 2) => Some(Tensor),
            _ => None,
        }
    }
}

// TensorProto fields.
const RAW_DATA: u32 = 9;
const EXTERNAL_DATA: u32 = 13;
const DATA_LOCATION: u32 = 14;
const LOCATION_EXTERNAL: u64 = 1;
/// Deeper nesting than this is not a real model (If/Loop bodies nest a few levels).
const MAX_DEPTH: usize = 64;

/// Returns `onnx` with every external tensor's bytes inlined, or `None` when it has none.
/// `load` reads a side file by its `location` (relative to the model, already checked
/// to stay inside the model's directory); each file is read once.
pub fn inline_external_data(
    onnx: &[u8],
    load: &mut dyn FnMut(&str) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut files = Files {
        load,
        cache: HashMap::new(),
    };
    rewrite(Message::Model, onnx, &mut files, 0).context("inlining the model's external tensor data")
}

struct Files<'a> {
    load: &'a mut dyn FnMut(&str) -> anyhow::Result<Vec<u8>>,
    cache: HashMap<String, Vec<u8>>,
}

impl Files<'_> {
    fn get(&mut self, location: &str) -> anyhow::Result<&[u8]> {
        check_location(location)?;
        if !self.cache.contains_key(location) {
            let bytes =
                (self.load)(location).with_context(|| format!("reading external data file '{location}'"))?;
            self.cache.insert(location.to_string(), bytes);
        }
        Ok(self.cache.get(location).map(Vec::as_slice).unwrap_or_default())
    }
}

/// A location must name a file beside or below the model: no absolute paths, no `..`.
fn check_location(location: &str) -> anyhow::Result<()> {
    let bad = location.is_empty()
        || location.starts_with('/')
        || location.contains('\\')
        || location.contains(':')
        || location
            .split('/')
            .any(|part| part == ".." || part == "." || part.is_empty());
    ensure!(
        !bad,
        "external data location '{}' does not name a file inside the model directory",
        location.escape_debug()
    );
    Ok(())
}

fn rewrite(
    message: Message,
    buf: &[u8],
    files: &mut Files<'_>,
    depth: usize,
) -> anyhow::Result<Option<Vec<u8>>> {
    ensure!(
        depth < MAX_DEPTH,
        "the model nests messages more than {MAX_DEPTH} deep"
    );
    let fields = parse(buf)?;
    if let Message::Tensor = message {
        return inline_tensor(buf, &fields, files);
    }
    let mut out: Option<Vec<u8>> = None;
    for (i, field) in fields.iter().enumerate() {
        let replaced = match (&field.value, message.child(field.number)) {
            (Value::Bytes(range), Some(child)) => rewrite(child, &buf[range.clone()], files, depth + 1)?,
            _ => None,
        };
        match replaced {
            Some(bytes) => {
                let out = out.get_or_insert_with(|| copy_fields(buf, &fields[..i]));
                put_key(out, field.number, 2);
                put_varint(out, bytes.len() as u64);
                out.extend_from_slice(&bytes);
            }
            None => {
                if let Some(out) = out.as_mut() {
                    out.extend_from_slice(&buf[field.whole.clone()]);
                }
            }
        }
    }
    Ok(out)
}

fn inline_tensor(buf: &[u8], fields: &[Field], files: &mut Files<'_>) -> anyhow::Result<Option<Vec<u8>>> {
    let external = fields
        .iter()
        .any(|f| f.number == DATA_LOCATION && matches!(f.value, Value::Varint(LOCATION_EXTERNAL)));
    if !external {
        return Ok(None);
    }
    let (mut location, mut offset, mut length) = (None::<String>, 0u64, None::<u64>);
    for field in fields.iter().filter(|f| f.number == EXTERNAL_DATA) {
        let Value::Bytes(range) = &field.value else {
            bail!("a tensor's external_data entry is not a message");
        };
        let entry = &buf[range.clone()];
        let (mut key, mut value) = ("", "");
        for kv in parse(entry)? {
            if let Value::Bytes(r) = kv.value {
                let text = std::str::from_utf8(&entry[r]).context("an external_data entry is not UTF-8")?;
                match kv.number {
                    1 => key = text,
                    2 => value = text,
                    _ => {}
                }
            }
        }
        match key {
            "location" => location = Some(value.to_string()),
            "offset" => {
                offset = value
                    .parse()
                    .with_context(|| format!("external data offset '{value}'"))?
            }
            "length" => {
                length = Some(
                    value
                        .parse()
                        .with_context(|| format!("external data length '{value}'"))?,
                )
            }
            _ => {}
        }
    }
    let location = location.context("a tensor stored as external data names no location")?;
    let data = files.get(&location)?;
    let start = usize::try_from(offset).ok().filter(|s| *s <= data.len());
    let start = start.with_context(|| {
        format!(
            "offset {offset} is past the end of '{location}' ({} bytes)",
            data.len()
        )
    })?;
    let end = match length {
        Some(length) => usize::try_from(length)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|e| *e <= data.len())
            .with_context(|| {
                format!(
                    "{length} bytes at offset {offset} run past the end of '{location}' ({} bytes)",
                    data.len()
                )
            })?,
        None => data.len(),
    };
    let mut out = Vec::with_capacity(buf.len() + end - start + 8);
    for field in fields {
        if !matches!(field.number, EXTERNAL_DATA | DATA_LOCATION | RAW_DATA) {
            out.extend_from_slice(&buf[field.whole.clone()]);
        }
    }
    put_key(&mut out, RAW_DATA, 2);
    put_varint(&mut out, (end - start) as u64);
    out.extend_from_slice(&data[start..end]);
    Ok(Some(out))
}

enum Value {
    Varint(u64),
    Bytes(std::ops::Range<usize>),
    Fixed,
}

struct Field {
    number: u32,
    /// The whole field, key included, for verbatim copies.
    whole: std::ops::Range<usize>,
    value: Value,
}

fn parse(buf: &[u8]) -> anyhow::Result<Vec<Field>> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos)?;
        let number = u32::try_from(key >> 3).context("field number out of range")?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(buf, &mut pos)?),
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                ensure!(pos + width <= buf.len(), "truncated fixed-width field {number}");
                pos += width;
                Value::Fixed
            }
            2 => {
                let len =
                    usize::try_from(read_varint(buf, &mut pos)?).context("field length out of range")?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len());
                let end = end.with_context(|| format!("field {number} runs past the end of its message"))?;
                let range = pos..end;
                pos = end;
                Value::Bytes(range)
            }
            wire => bail!("not an ONNX model: unsupported protobuf wire type {wire} in field {number}"),
        };
        fields.push(Field {
            number,
            whole: start..pos,
            value,
        });
    }
    Ok(fields)
}

fn read_varint(buf: &[u8], pos: &mut usize) -> anyhow::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).context("not an ONNX model: truncated varint")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("not an ONNX model: varint longer than 10 bytes")
}

fn copy_fields(buf: &[u8], fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    for field in fields {
        out.extend_from_slice(&buf[field.whole.clone()]);
    }
    out
}

fn put_key(out: &mut Vec<u8>, number: u32, wire: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(number: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_key(&mut out, number, 2);
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(body);
        out
    }

    fn varint_field(number: u32, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_key(&mut out, number, 0);
        put_varint(&mut out, value);
        out
    }

    fn entry(key: &str, value: &str) -> Vec<u8> {
        message(
            EXTERNAL_DATA,
            &[message(1, key.as_bytes()), message(2, value.as_bytes())].concat(),
        )
    }

    /// A model with one external initializer `w` (bytes 4..12 of `w.bin`) and one inline
    /// tensor inside a Constant node's attribute.
    fn model_with_external_weight() -> Vec<u8> {
        let external = [
            varint_field(1, 2), // dims
            varint_field(2, 1), // data_type FLOAT
            message(8, b"w"),   // name
            entry("location", "w.bin"),
            entry("offset", "4"),
            entry("length", "8"),
            varint_field(DATA_LOCATION, LOCATION_EXTERNAL),
        ]
        .concat();
        let inline = [message(8, b"c"), message(RAW_DATA, &[1, 2, 3, 4])].concat();
        let node = message(
            1,
            &message(5, &[message(1, b"value"), message(5, &inline)].concat()),
        );
        let graph = [node, message(2, b"g"), message(5, &external)].concat();
        [varint_field(1, 9), message(2, b"producer"), message(7, &graph)].concat()
    }

    fn field(buf: &[u8], number: u32) -> Vec<&[u8]> {
        parse(buf)
            .unwrap()
            .into_iter()
            .filter(|f| f.number == number)
            .filter_map(|f| match f.value {
                Value::Bytes(r) => Some(&buf[r]),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn external_tensors_get_their_bytes_inline_and_lose_the_reference() {
        let model = model_with_external_weight();
        let mut reads = Vec::new();
        let out = inline_external_data(&model, &mut |location| {
            reads.push(location.to_string());
            Ok((0u8..16).collect())
        })
        .unwrap()
        .expect("rewritten");
        assert_eq!(reads, ["w.bin"]);
        assert_eq!(field(&out, 2), [b"producer".as_slice()]);
        let graph = field(&out, 7)[0];
        assert_eq!(field(graph, 2), [b"g".as_slice()]);
        let tensor = field(graph, 5)[0];
        assert_eq!(field(tensor, 8), [b"w".as_slice()]);
        assert_eq!(field(tensor, RAW_DATA), [[4u8, 5, 6, 7, 8, 9, 10, 11].as_slice()]);
        let numbers: Vec<u32> = parse(tensor).unwrap().iter().map(|f| f.number).collect();
        assert_eq!(
            numbers,
            [1, 2, 8, RAW_DATA],
            "external_data and data_location are gone"
        );
        // The node with its inline tensor is copied unchanged.
        assert_eq!(field(graph, 1), field(field(&model, 7)[0], 1));
    }

    #[test]
    fn a_model_without_external_data_is_left_alone() {
        let inline = [message(8, b"w"), message(RAW_DATA, &[0; 8])].concat();
        let model = message(7, &message(5, &inline));
        let out = inline_external_data(&model, &mut |_| bail!("no file should be read")).unwrap();
        assert!(out.is_none());
    }

    #[test]
    fn locations_outside_the_model_directory_and_short_files_are_refused() {
        for location in ["../secret", "/etc/passwd", "a/../../b", "C:\\x"] {
            let tensor = [entry("location", location), varint_field(DATA_LOCATION, 1)].concat();
            let model = message(7, &message(5, &tensor));
            let err = inline_external_data(&model, &mut |_| Ok(vec![0; 64])).unwrap_err();
            assert!(
                format!("{err:#}").contains("inside the model directory"),
                "{location}: {err:#}"
            );
        }
        let model = model_with_external_weight();
        let err = inline_external_data(&model, &mut |_| Ok(vec![0; 10])).unwrap_err();
        assert!(
            format!("{err:#}").contains("run past the end of 'w.bin'"),
            "{err:#}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(inline_external_data(&[0x0a, 0xff], &mut |_| Ok(Vec::new())).is_err());
        assert!(inline_external_data(&[0x0b], &mut |_| Ok(Vec::new())).is_err());
    }
}
