//! Reference data files, read into columns of numbers: CSV with a header row (the header
//! names the features) and NumPy `.npy` arrays (one row per sample; features named by the
//! caller or `f0…fN`). A model's inputs are numbers, so every cell must be one: an empty
//! cell, `nan`, `NA` or `null` is a missing value (counted as missing, as Evidently drops
//! it), anything else that is not a number is an error naming its line and column.

use std::fmt;

/// A table of numbers by column.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Column names, in feature-position order.
    pub names: Vec<String>,
    /// One vector per column, all of the same length.
    pub columns: Vec<Vec<f64>>,
    /// Whether each column holds integers only (an integer dtype, or a CSV column whose
    /// every present cell is written without a fraction or exponent): Evidently treats
    /// integer columns with few values as categorical.
    pub integer: Vec<bool>,
}

impl Dataset {
    /// Rows in the table.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    /// Renames the columns (`--feature-names`); the count must match.
    pub fn rename(&mut self, names: Vec<String>) -> Result<(), DatasetError> {
        if names.len() != self.columns.len() {
            return Err(DatasetError(format!(
                "{} feature names given for {} columns",
                names.len(),
                self.columns.len()
            )));
        }
        self.names = names;
        Ok(())
    }
}

/// Why a reference file could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetError(pub String);

impl fmt::Display for DatasetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DatasetError {}

fn err(message: impl Into<String>) -> DatasetError {
    DatasetError(message.into())
}

/// The default feature names: `f0`, `f1`, …
pub fn default_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("f{i}")).collect()
}

/// Reads a CSV file's text: a header row, then one row per sample, comma-separated, fields
/// optionally in double quotes (`""` inside quotes is a quote).
pub fn parse_csv(text: &str) -> Result<Dataset, DatasetError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(err(
            "the CSV file is empty; it needs a header row naming the features",
        ));
    };
    let names: Vec<String> = split_csv_line(header, 1)?
        .into_iter()
        .map(|n| n.trim().to_string())
        .collect();
    if let Some(pos) = names.iter().position(String::is_empty) {
        return Err(err(format!("the CSV header's column {} has no name", pos + 1)));
    }
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(err(format!("the CSV header names `{n}` twice")));
        }
        if n.parse::<f64>().is_ok() {
            return Err(err(format!(
                "the CSV file's first row holds numbers (`{n}`): it needs a header row naming the features"
            )));
        }
    }
    let mut columns = vec![Vec::new(); names.len()];
    let mut integer = vec![true; names.len()];
    for (index, line) in lines {
        let fields = split_csv_line(line, index + 1)?;
        if fields.len() != names.len() {
            return Err(err(format!(
                "line {}: {} fields, but the header names {} columns",
                index + 1,
                fields.len(),
                names.len()
            )));
        }
        for (col, field) in fields.iter().enumerate() {
            let cell = field.trim();
            let value = if is_missing(cell) {
                f64::NAN
            } else {
                let v = cell.parse::<f64>().map_err(|_| {
                    err(format!(
                        "line {}, column `{}`: `{cell}` is not a number (model inputs are numbers; leave a cell empty for a missing value)",
                        index + 1,
                        names[col]
                    ))
                })?;
                if cell.contains(['.', 'e', 'E']) || !v.is_finite() {
                    integer[col] = false;
                }
                v
            };
            columns[col].push(value);
        }
    }
    if columns.first().is_none_or(Vec::is_empty) {
        return Err(err("the CSV file has a header but no rows"));
    }
    Ok(Dataset {
        names,
        columns,
        integer,
    })
}

fn is_missing(cell: &str) -> bool {
    cell.is_empty() || ["nan", "na", "null", "none"].contains(&cell.to_ascii_lowercase().as_str())
}

fn split_csv_line(line: &str, number: usize) -> Result<Vec<String>, DatasetError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if at_start => quoted = true,
            ',' if !quoted => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            c => field.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(err(format!(
            "line {number}: a quoted field is not closed (fields cannot span lines)"
        )));
    }
    fields.push(field);
    Ok(fields)
}

/// Decodes one little-endian element into a number.
type Decode = fn(&[u8]) -> f64;

/// Reads a NumPy `.npy` file: a 1-D array (one feature) or a 2-D array of rows × features,
/// of a little-endian float, integer or boolean dtype, in C or Fortran order.
pub fn parse_npy(bytes: &[u8]) -> Result<Dataset, DatasetError> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err("not a .npy file (it does not start with \\x93NUMPY)"));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err("the .npy header is cut short"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(err(format!(
                ".npy format version {v} is not supported (1, 2 and 3 are)"
            )));
        }
    };
    let header = bytes
        .get(start..start.saturating_add(header_len))
        .ok_or_else(|| err("the .npy header is cut short"))?;
    let header = std::str::from_utf8(header).map_err(|_| err("the .npy header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| err("the .npy header has no `descr`"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").is_some_and(|v| v.starts_with("True"));
    let shape = dict_value(header, "shape").ok_or_else(|| err("the .npy header has no `shape`"))?;
    let dims: Vec<usize> = shape
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| err(format!("the .npy shape `{shape}` is not a shape")))
        })
        .collect::<Result<_, _>>()?;
    let (rows, cols) = match dims.as_slice() {
        [n] => (*n, 1),
        [n, f] => (*n, *f),
        _ => {
            return Err(err(format!(
                "the .npy array has shape {dims:?}; a reference needs rows × features (2-D) or one feature (1-D)"
            )));
        }
    };
    let (width, integer, read): (usize, bool, Decode) = match descr {
        "<f8" => (8, false, |b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
        "<f4" => (4, false, |b| {
            f32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as f64
        }),
        "<i8" => (8, true, |b| {
            i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64
        }),
        "<i4" => (4, true, |b| {
            i32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as f64
        }),
        "<i2" => (2, true, |b| {
            i16::from_le_bytes(b.try_into().unwrap_or([0; 2])) as f64
        }),
        "|i1" => (1, true, |b| b[0] as i8 as f64),
        "<u8" => (8, true, |b| {
            u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64
        }),
        "<u4" => (4, true, |b| {
            u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as f64
        }),
        "<u2" => (2, true, |b| {
            u16::from_le_bytes(b.try_into().unwrap_or([0; 2])) as f64
        }),
        "|u1" | "|b1" => (1, true, |b| b[0] as f64),
        other => {
            return Err(err(format!(
                "the .npy dtype `{other}` is not supported (little-endian floats, integers and booleans are)"
            )));
        }
    };
    let data = &bytes[start + header_len..];
    let count = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(width))
        .ok_or_else(|| err("the .npy shape is too large"))?;
    if data.len() < count {
        return Err(err(format!(
            "the .npy data holds {} bytes, its shape {dims:?} of `{descr}` needs {count}",
            data.len()
        )));
    }
    if rows == 0 {
        return Err(err("the .npy array has no rows"));
    }
    let mut columns = vec![Vec::with_capacity(rows); cols];
    for (c, column) in columns.iter_mut().enumerate() {
        for r in 0..rows {
            let index = if fortran { c * rows + r } else { r * cols + c };
            column.push(read(&data[index * width..(index + 1) * width]));
        }
    }
    Ok(Dataset {
        names: default_names(cols),
        columns,
        integer: vec![integer; cols],
    })
}

/// The text after `'key':` in a .npy header dict, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    Some(rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_reads_names_numbers_missing_cells_and_quotes() {
        let d = parse_csv("\"sepal, length\",b,c\n1.5,2,\n-3e2,4,nan\r\n\n").unwrap();
        assert_eq!(d.names, ["sepal, length", "b", "c"]);
        assert_eq!(d.rows(), 2);
        assert_eq!(d.columns[0], [1.5, -300.0]);
        assert_eq!(d.columns[1], [2.0, 4.0]);
        assert!(d.columns[2].iter().all(|v| v.is_nan()));
        assert_eq!(d.integer, [false, true, true]);
    }

    #[test]
    fn csv_errors_name_the_line_and_column() {
        let e = parse_csv("a,b\n1,x\n").unwrap_err().0;
        assert!(
            e.contains("line 2, column `b`") && e.contains("`x` is not a number"),
            "{e}"
        );
        let e = parse_csv("a,b\n1,2,3\n").unwrap_err().0;
        assert!(e.contains("line 2: 3 fields"), "{e}");
        assert!(parse_csv("1,2\n3,4\n").unwrap_err().0.contains("header row"));
        assert!(parse_csv("a,a\n1,2\n").unwrap_err().0.contains("twice"));
        assert!(parse_csv("a,b\n").unwrap_err().0.contains("no rows"));
        assert!(parse_csv("a,\"b\n1,2\n").unwrap_err().0.contains("not closed"));
    }

    /// A format-1.0 file like `np.save`'s, without its header padding (the length field says
    /// where the data starts).
    fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
        let header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}\n",
            if fortran { "True" } else { "False" }
        );
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_reads_c_and_fortran_order_floats_and_integers() {
        let values: Vec<u8> = [1.5f64, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let d = parse_npy(&npy("<f8", "(3, 2)", false, &values)).unwrap();
        assert_eq!(d.names, ["f0", "f1"]);
        assert_eq!(d.columns, [vec![1.5, 3.0, 5.0], vec![2.0, 4.0, 6.0]]);
        assert_eq!(d.integer, [false, false]);
        let d = parse_npy(&npy("<f8", "(3, 2)", true, &values)).unwrap();
        assert_eq!(d.columns, [vec![1.5, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
        let ints: Vec<u8> = [7i64, -1, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let d = parse_npy(&npy("<i8", "(3,)", false, &ints)).unwrap();
        assert_eq!(d.columns, [vec![7.0, -1.0, 3.0]]);
        assert_eq!(d.integer, [true]);
    }

    #[test]
    fn npy_reads_a_file_numpy_wrote() {
        // python3 -c "import numpy as np, io; b = io.BytesIO();
        //   np.save(b, np.array([[1.5, 2], [3, 4]], dtype='<f4')); print(b.getvalue())"
        let mut bytes =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }".to_vec();
        bytes.extend(std::iter::repeat_n(b' ', 58));
        bytes.push(b'\n');
        bytes.extend_from_slice(b"\x00\x00\xc0?\x00\x00\x00@\x00\x00@@\x00\x00\x80@");
        assert_eq!(bytes.len(), 10 + 0x76 + 16);
        let d = parse_npy(&bytes).unwrap();
        assert_eq!(d.columns, [vec![1.5, 3.0], vec![2.0, 4.0]]);
    }

    #[test]
    fn npy_refuses_what_it_cannot_read() {
        let values: Vec<u8> = [1.0f64; 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(
            parse_npy(&npy("<f8", "(3, 2)", false, &values))
                .unwrap_err()
                .0
                .contains("needs 48")
        );
        assert!(
            parse_npy(&npy("<c16", "(1,)", false, &values))
                .unwrap_err()
                .0
                .contains("not supported")
        );
        assert!(
            parse_npy(&npy("<f8", "(1, 1, 1)", false, &values))
                .unwrap_err()
                .0
                .contains("rows × features")
        );
        assert!(
            parse_npy(b"PK\x03\x04 not npy")
                .unwrap_err()
                .0
                .contains("not a .npy")
        );
    }
}
