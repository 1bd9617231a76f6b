//! Parquet reference files (feature `parquet`): what `df.to_parquet(path)` writes from a
//! table of model inputs. Every column must be a number, a boolean or missing: floats,
//! signed and unsigned integers of every width and booleans are read (integers and
//! booleans as integer columns, as their dtype says); a null is a missing value (pandas
//! writes NaN as null). Text, dates, decimals and nested columns are errors naming the
//! column. The columns pandas writes for the frame's index (named in the file's `pandas`
//! metadata, or `__index_level_0__`, …) are left out: Evidently, given the frame, never
//! sees them as features. Snappy (pandas'
//! default), gzip, zstd and LZ4 pages are read.

use crate::dataset::{Dataset, DatasetError};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

/// Reads a Parquet file's bytes into columns of numbers, named as in the file.
pub fn parse(bytes: Vec<u8>) -> Result<Dataset, DatasetError> {
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))
        .map_err(|e| DatasetError(format!("not a readable Parquet file: {e}")))?;
    let metadata = reader.metadata().file_metadata();
    let index = pandas_index(metadata.key_value_metadata());
    let schema = metadata.schema_descr_ptr();
    let root = schema.root_schema();
    // Each file column's place among the features (None: left out).
    let mut slot_of = Vec::new();
    let mut names = Vec::new();
    for field in root.get_fields() {
        let name = field.name();
        if name.starts_with("__index_level_") && name.ends_with("__") || index.iter().any(|c| c == name) {
            slot_of.push(None);
            continue;
        }
        if field.is_group() {
            return Err(DatasetError(format!(
                "column `{name}` is nested (a struct, list or map); a reference holds one number per feature"
            )));
        }
        slot_of.push(Some(names.len()));
        names.push(name.to_string());
    }
    if names.is_empty() {
        return Err(DatasetError("the Parquet file has no columns".into()));
    }
    let mut columns = vec![Vec::new(); names.len()];
    let mut integer = vec![true; names.len()];
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| DatasetError(format!("reading the Parquet rows: {e}")))?;
    for (number, row) in rows.enumerate() {
        let row = row.map_err(|e| DatasetError(format!("row {}: {e}", number + 1)))?;
        for ((_, field), slot) in row.get_column_iter().zip(&slot_of) {
            let Some(slot) = *slot else {
                continue;
            };
            let (value, whole) = number_of(field).ok_or_else(|| {
                DatasetError(format!(
                    "row {}, column `{}`: {} is not a number (model inputs are numbers; write text features as their numeric codes)",
                    number + 1,
                    names[slot],
                    describe(field)
                ))
            })?;
            if !whole {
                integer[slot] = false;
            }
            columns[slot].push(value);
        }
    }
    if columns.first().is_none_or(Vec::is_empty) {
        return Err(DatasetError("the Parquet file has no rows".into()));
    }
    Ok(Dataset {
        names,
        columns,
        integer,
    })
}

/// The columns pandas wrote for the frame's index: `index_columns` of the `pandas`
/// metadata JSON (a range index is an object there, not a column).
fn pandas_index(metadata: Option<&Vec<parquet::file::metadata::KeyValue>>) -> Vec<String> {
    let Some(pandas) = metadata
        .into_iter()
        .flatten()
        .find(|kv| kv.key == "pandas")
        .and_then(|kv| kv.value.as_deref())
    else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(pandas) else {
        return Vec::new();
    };
    json["index_columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect()
}

/// A cell's number and whether its type is an integer one (a null keeps the column's
/// type: it says nothing about it); `None` for what is not a number.
fn number_of(field: &Field) -> Option<(f64, bool)> {
    Some(match field {
        Field::Null => (f64::NAN, true),
        Field::Bool(b) => (f64::from(u8::from(*b)), true),
        Field::Byte(v) => (f64::from(*v), true),
        Field::Short(v) => (f64::from(*v), true),
        Field::Int(v) => (f64::from(*v), true),
        Field::Long(v) => (*v as f64, true),
        Field::UByte(v) => (f64::from(*v), true),
        Field::UShort(v) => (f64::from(*v), true),
        Field::UInt(v) => (f64::from(*v), true),
        Field::ULong(v) => (*v as f64, true),
        Field::Float16(v) => (f64::from(*v), false),
        Field::Float(v) => (f64::from(*v), false),
        Field::Double(v) => (*v, false),
        _ => return None,
    })
}

/// What a cell that is not a number holds, for the error.
fn describe(field: &Field) -> String {
    match field {
        Field::Str(s) => format!("the text `{}`", s.chars().take(40).collect::<String>()),
        Field::Bytes(_) => "binary data".into(),
        Field::Decimal(_) => "a decimal (cast it to float)".into(),
        Field::Date(_) | Field::TimeMillis(_) | Field::TimeMicros(_) => "a date or time".into(),
        Field::TimestampMillis(_) | Field::TimestampMicros(_) => "a timestamp".into(),
        other => format!("`{other}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    /// A file written by the parquet crate's own writer (the tests of `kiln models
    /// register` read files pandas wrote).
    fn write(
        schema: &str,
        fill: impl Fn(&mut parquet::file::writer::SerializedRowGroupWriter<'_, &mut Vec<u8>>),
    ) -> Vec<u8> {
        let schema = Arc::new(parse_message_type(schema).expect("schema"));
        let mut out = Vec::new();
        {
            let props = Arc::new(WriterProperties::builder().build());
            let mut writer = SerializedFileWriter::new(&mut out, schema, props).expect("writer");
            let mut group = writer.next_row_group().expect("row group");
            fill(&mut group);
            group.close().expect("closing the row group");
            writer.close().expect("closing the file");
        }
        out
    }

    #[test]
    fn numbers_booleans_and_nulls_become_columns_with_their_integer_flags() {
        let bytes = write(
            "message m { required double x; optional int64 n; required boolean b; optional int32 __index_level_0__; }",
            |group| {
                let mut col = group.next_column().unwrap().unwrap();
                col.typed::<DoubleType>()
                    .write_batch(&[0.5, 1.5, -2.0], None, None)
                    .unwrap();
                col.close().unwrap();
                let mut col = group.next_column().unwrap().unwrap();
                col.typed::<Int64Type>()
                    .write_batch(&[7, 9], Some(&[1, 0, 1]), None)
                    .unwrap();
                col.close().unwrap();
                let mut col = group.next_column().unwrap().unwrap();
                col.typed::<BoolType>()
                    .write_batch(&[true, false, true], None, None)
                    .unwrap();
                col.close().unwrap();
                let mut col = group.next_column().unwrap().unwrap();
                col.typed::<Int32Type>()
                    .write_batch(&[10, 11, 12], Some(&[1, 1, 1]), None)
                    .unwrap();
                col.close().unwrap();
            },
        );
        let data = parse(bytes).expect("a numeric file reads");
        assert_eq!(data.names, ["x", "n", "b"]);
        assert_eq!(data.columns[0], [0.5, 1.5, -2.0]);
        assert_eq!(data.columns[1][0], 7.0);
        assert!(data.columns[1][1].is_nan());
        assert_eq!(data.columns[1][2], 9.0);
        assert_eq!(data.columns[2], [1.0, 0.0, 1.0]);
        assert_eq!(data.integer, [false, true, true]);
    }

    #[test]
    fn text_is_an_error_naming_the_row_and_column() {
        let bytes = write(
            "message m { required double x; required binary s (UTF8); }",
            |group| {
                let mut col = group.next_column().unwrap().unwrap();
                col.typed::<DoubleType>().write_batch(&[1.0], None, None).unwrap();
                col.close().unwrap();
                let mut col = group.next_column().unwrap().unwrap();
                col.typed::<ByteArrayType>()
                    .write_batch(&[ByteArray::from("red")], None, None)
                    .unwrap();
                col.close().unwrap();
            },
        );
        let e = parse(bytes).expect_err("text is refused").0;
        assert!(e.contains("row 1, column `s`") && e.contains("`red`"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_parquet_or_has_no_rows_says_so() {
        let e = parse(b"PAR1 not really".to_vec()).expect_err("garbage").0;
        assert!(e.contains("not a readable Parquet file"), "{e}");
        let empty = write("message m { required double x; }", |group| {
            let mut col = group.next_column().unwrap().unwrap();
            col.typed::<DoubleType>().write_batch(&[], None, None).unwrap();
            col.close().unwrap();
        });
        assert_eq!(
            parse(empty).expect_err("no rows").0,
            "the Parquet file has no rows"
        );
    }
}
