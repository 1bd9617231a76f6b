//! JSON numbers read straight into a tensor's little-endian bytes, for the OIP `data`
//! arrays and the seed API's `features`/`instances`: no `serde_json::Value` tree, so a
//! request costs its body plus its tensor, not 20–40× the body.
//!
//! Nested arrays of any depth are read row-major, as `flatten` did; `null` stands for
//! NaN in float tensors (JSON has no NaN). A value that does not fit the element type
//! does not stop the reading: the first one is kept as the reason, and the values are
//! still counted, so a wrong count is reported before a wrong value, as always.
//! serde_json's recursion limit (128) bounds the nesting, so a deep body is refused
//! rather than overflowing the stack.

use kiln_types::ElementType;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// Elements reserved before any are read, when the declared count is larger.
const FIRST_RESERVE: usize = 4096;

/// The values of one tensor, as they are read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    /// `None`: the datatype is unknown, so values are only counted.
    element_type: Option<ElementType>,
    /// The element count the request declares (its shape), which bounds the first
    /// reservations; never trusted beyond what was read (see [`Values::grow`]).
    declared: Option<usize>,
    bytes: Vec<u8>,
    count: usize,
    /// The first value that does not fit: its index and why.
    error: Option<(usize, String)>,
}

/// A JSON number as serde_json reads it.
#[derive(Clone, Copy)]
enum Number {
    U(u64),
    I(i64),
    F(f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Number::U(n) => write!(f, "{n}"),
            Number::I(n) => write!(f, "{n}"),
            // serde_json's own spelling, as `Value` printed it (`1.0`, `1e20`).
            Number::F(n) => match serde_json::Number::from_f64(n) {
                Some(n) => write!(f, "{n}"),
                None => write!(f, "{n}"),
            },
        }
    }
}

impl Values {
    /// Values of `element_type` (`None`: count only); `declared` is the shape's count.
    pub fn new(element_type: Option<ElementType>, declared: Option<usize>) -> Values {
        Values {
            element_type,
            declared,
            ..Values::default()
        }
    }

    /// How many values were read (nested arrays flattened).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The first value that does not fit the element type, as `value {i}: {why}`.
    pub fn error(&self) -> Option<String> {
        self.misfit().map(|(i, why)| format!("value {i}: {why}"))
    }

    /// The first value that does not fit the element type: its index and why.
    pub fn misfit(&self) -> Option<(usize, &str)> {
        self.error.as_ref().map(|(i, why)| (*i, why.as_str()))
    }

    /// Adds a number read from elsewhere (a reference file's cell) as if it were JSON:
    /// NaN is a missing value (`null`), an integral value is an integer, anything else
    /// a float.
    pub fn push_f64(&mut self, v: f64) {
        if v.is_nan() {
            self.null()
        } else if v.is_finite() && v.fract() == 0.0 && v.abs() < 2f64.powi(63) {
            self.number(Number::I(v as i64))
        } else {
            self.number(Number::F(v))
        }
    }

    /// The little-endian bytes read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The little-endian bytes read, without a copy.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Reads one JSON value (a number, or arrays of them nested to any depth).
    pub fn read<'de, D: Deserializer<'de>>(&mut self, d: D) -> Result<(), D::Error> {
        Node(self).deserialize(d)
    }

    /// Reads JSON text (a value captured whole while its element type was unknown).
    pub fn read_str(&mut self, json: &str) -> Result<(), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        self.read(&mut de)?;
        de.end()
    }

    /// Makes room for one more element. The declared count is a ceiling, never a
    /// reservation: capacity at most doubles what was read, so a request that declares
    /// a huge shape with little data allocates by its data.
    #[cold]
    fn grow(&mut self, size: usize) {
        let have = self.bytes.len() / size;
        let doubled = have.saturating_mul(2).max(FIRST_RESERVE);
        let want = match self.declared {
            Some(d) if d > have => d.min(doubled),
            _ => doubled,
        };
        self.bytes.reserve_exact((want - have).saturating_mul(size));
    }

    #[inline]
    fn push<const N: usize>(&mut self, le: [u8; N]) {
        if self.bytes.capacity() - self.bytes.len() < N {
            self.grow(N);
        }
        self.bytes.extend_from_slice(&le);
    }

    /// Keeps the first misfit; the bytes are dropped then, as they will not be used.
    fn refuse(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some((self.count, why));
            self.bytes = Vec::new();
        }
    }

    /// Whether values are still written (a type is known and nothing was refused).
    fn writing(&self) -> Option<ElementType> {
        self.element_type.filter(|_| self.error.is_none())
    }

    fn number(&mut self, n: Number) {
        if let Some(t) = self.writing() {
            match (t, n) {
                (ElementType::Bool, Number::U(b @ (0 | 1))) => self.push([b as u8]),
                (ElementType::Bool, _) => self.refuse(format!("{n} is not a boolean")),
                (t, Number::U(v)) if is_float(t) => self.float(t, v as f64),
                (t, Number::I(v)) if is_float(t) => self.float(t, v as f64),
                (t, Number::F(v)) if is_float(t) => self.float(t, v),
                (_, Number::F(_)) => self.refuse(format!("{n} is not an integer")),
                (t, Number::U(v)) => self.int(t, i128::from(v)),
                (t, Number::I(v)) => self.int(t, i128::from(v)),
            }
        }
        self.count += 1;
    }

    fn boolean(&mut self, b: bool) {
        match self.writing() {
            Some(ElementType::Bool) => self.push([b as u8]),
            Some(t) if is_float(t) => self.refuse(format!("{b} is not a number")),
            Some(t) => self.int(t, i128::from(b)),
            None => {}
        }
        self.count += 1;
    }

    fn null(&mut self) {
        match self.writing() {
            Some(ElementType::Bool) => self.refuse("null is not a boolean".into()),
            Some(t) if is_float(t) => self.float(t, f64::NAN),
            Some(_) => self.refuse("null is not an integer".into()),
            None => {}
        }
        self.count += 1;
    }

    /// A string or an object where a number belongs.
    fn other(&mut self, shown: &str) {
        if let Some(t) = self.writing() {
            let what = match t {
                ElementType::Bool => "a boolean",
                t if is_float(t) => "a number",
                _ => "an integer",
            };
            self.refuse(format!("{shown} is not {what}"));
        }
        self.count += 1;
    }

    /// Writes a value of a float type.
    #[inline]
    fn float(&mut self, t: ElementType, v: f64) {
        match t {
            ElementType::F32 => self.push((v as f32).to_le_bytes()),
            ElementType::F64 => self.push(v.to_le_bytes()),
            _ => self.push(kiln_types::tensor::f16_from_f64(v).to_le_bytes()),
        }
    }

    /// Writes a value of an integer type, if it is in its range.
    fn int(&mut self, t: ElementType, n: i128) {
        let (min, max): (i128, i128) = match t {
            ElementType::I8 => (i8::MIN.into(), i8::MAX.into()),
            ElementType::I16 => (i16::MIN.into(), i16::MAX.into()),
            ElementType::I32 => (i32::MIN.into(), i32::MAX.into()),
            ElementType::I64 => (i64::MIN.into(), i64::MAX.into()),
            ElementType::U8 => (0, u8::MAX.into()),
            ElementType::U16 => (0, u16::MAX.into()),
            ElementType::U32 => (0, u32::MAX.into()),
            _ => (0, u64::MAX.into()),
        };
        if n < min || n > max {
            return self.refuse(format!("{n} is out of range for {t}"));
        }
        // In range, so each cast below is exact.
        match t {
            ElementType::I8 => self.push((n as i8).to_le_bytes()),
            ElementType::I16 => self.push((n as i16).to_le_bytes()),
            ElementType::I32 => self.push((n as i32).to_le_bytes()),
            ElementType::I64 => self.push((n as i64).to_le_bytes()),
            ElementType::U8 => self.push([n as u8]),
            ElementType::U16 => self.push((n as u16).to_le_bytes()),
            ElementType::U32 => self.push((n as u32).to_le_bytes()),
            _ => self.push((n as u64).to_le_bytes()),
        }
    }
}

fn is_float(t: ElementType) -> bool {
    matches!(t, ElementType::F16 | ElementType::F32 | ElementType::F64)
}

/// One JSON value read into [`Values`]: a leaf, or an array read element by element.
struct Node<'v>(&'v mut Values);

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("numbers, or arrays of them")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Node(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.number(Number::U(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.number(Number::I(v));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.number(Number::F(v));
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.boolean(v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.null();
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.0.null();
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if self.0.writing().is_some() {
            self.0.other(&shown_str(v));
        } else {
            self.0.count += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // An object is one (wrong) value, as `flatten` counted it; its content is skipped.
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.0.other("{…}");
        Ok(())
    }
}

/// Rows of a feature matrix (the seed API): a JSON array of rows (`instances`), or one
/// row (`features`), each row an array of values. Rows are counted, and the first row
/// whose length is not the width is kept, so the seed API can say which.
#[derive(Debug)]
pub struct Rows {
    pub values: Values,
    width: usize,
    /// Rows read.
    pub rows: usize,
    /// The first row with another length than the width: its index and length.
    pub first_misfit: Option<(usize, usize)>,
}

impl Rows {
    /// Rows of `width` values of `element_type`; `rows` is the row count expected.
    pub fn new(element_type: ElementType, width: usize, rows: usize) -> Rows {
        Rows {
            values: Values::new(Some(element_type), rows.checked_mul(width)),
            width,
            rows: 0,
            first_misfit: None,
        }
    }

    /// Reads JSON text: an array of rows when `batch`, else one row.
    pub fn read_str(&mut self, json: &str, batch: bool) -> Result<(), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        if batch {
            (&mut de).deserialize_seq(RowList(self))?;
        } else {
            Row(self).deserialize(&mut de)?;
        }
        de.end()
    }
}

struct RowList<'r>(&'r mut Rows);

impl<'de> Visitor<'de> for RowList<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Row(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

struct Row<'r>(&'r mut Rows);

impl<'de> DeserializeSeed<'de> for Row<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of features")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut len = 0;
        while seq.next_element_seed(Node(&mut self.0.values))?.is_some() {
            len += 1;
        }
        if len != self.0.width && self.0.first_misfit.is_none() {
            self.0.first_misfit = Some((self.0.rows, len));
        }
        self.0.rows += 1;
        Ok(())
    }
}

/// The element count a shape declares, if it is a valid one.
pub fn declared_count(shape: &[i64]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
}

/// Longest text of a value quoted in an error message; longer ones are cut.
const SHOWN_MAX: usize = 64;

fn cut(text: &str) -> String {
    match text.char_indices().nth(SHOWN_MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A string as JSON (quoted, escaped), cut short for an error message.
fn shown_str(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    cut(&quoted)
}

/// A raw JSON value as an error message quotes it: compact like `Value`'s `Display`,
/// cut short (and never parsed into a tree) when long.
pub fn shown(raw: &RawValue) -> String {
    let text = raw.get();
    if text.len() <= SHOWN_MAX
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
    {
        return v.to_string();
    }
    cut(text)
}

/// The old `Value`-tree parsing, the reference the parsers' tests compare against.
#[cfg(test)]
#[path = "../benches/legacy/mod.rs"]
pub(crate) mod legacy;

#[cfg(test)]
mod tests {
    use super::*;

    fn read(t: ElementType, json: &str) -> Values {
        let mut v = Values::new(Some(t), None);
        v.read_str(json).unwrap();
        v
    }

    #[test]
    fn numbers_from_elsewhere_convert_like_json_numbers() {
        let mut ints = Values::new(Some(ElementType::I64), None);
        for v in [3.0, -2.0] {
            ints.push_f64(v);
        }
        assert_eq!(ints.bytes(), [3i64.to_le_bytes(), (-2i64).to_le_bytes()].concat());
        ints.push_f64(1.5);
        ints.push_f64(f64::NAN);
        assert_eq!(ints.misfit(), Some((2, "1.5 is not an integer")));
        let mut floats = Values::new(Some(ElementType::F32), None);
        floats.push_f64(f64::NAN);
        floats.push_f64(2.0);
        assert!(floats.error().is_none());
        assert_eq!(floats.count(), 2);
        assert!(f32::from_le_bytes(floats.bytes()[..4].try_into().unwrap()).is_nan());
    }

    #[test]
    fn nested_arrays_of_any_depth_are_read_row_major() {
        let v = read(ElementType::I32, "[[[1, 2], [3]], [], [[[4]]], 5]");
        assert_eq!(v.count(), 5);
        let ints: Vec<i32> = v
            .bytes()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(ints, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn values_that_do_not_fit_are_refused_with_the_old_reasons_and_still_counted() {
        let cases = [
            (
                ElementType::U8,
                "[1, 300, -1]",
                "value 1: 300 is out of range for UINT8",
            ),
            (ElementType::I64, "[1.5]", "value 0: 1.5 is not an integer"),
            (ElementType::I64, "[1.0]", "value 0: 1.0 is not an integer"),
            (
                ElementType::I64,
                r#"[0, "a"]"#,
                r#"value 1: "a" is not an integer"#,
            ),
            (ElementType::I32, "[null]", "value 0: null is not an integer"),
            (ElementType::F32, "[true]", "value 0: true is not a number"),
            (ElementType::F32, r#"[{"a": 1}]"#, "value 0: {…} is not a number"),
            (ElementType::Bool, "[2]", "value 0: 2 is not a boolean"),
            (ElementType::Bool, "[1.0]", "value 0: 1.0 is not a boolean"),
            (ElementType::Bool, "[null]", "value 0: null is not a boolean"),
            (ElementType::U64, "[-1]", "value 0: -1 is out of range for UINT64"),
            (ElementType::I64, "[1e20]", "value 0: 1e+20 is not an integer"),
        ];
        for (t, json, want) in cases {
            let v = read(t, json);
            assert_eq!(v.error().as_deref(), Some(want), "{t} {json}");
            assert_eq!(v.count(), json.matches(',').count() + 1, "{json}");
        }
        let long = format!("[\"{}\"]", "x".repeat(1000));
        let why = read(ElementType::F32, &long).error().unwrap();
        assert!(why.len() < 100 && why.ends_with("… is not a number"), "{why}");
    }

    #[test]
    fn integers_and_booleans_convert_as_before() {
        let v = read(ElementType::Bool, "[true, false, 0, 1]");
        assert_eq!(v.bytes(), [1, 0, 0, 1]);
        let v = read(ElementType::U8, "[true, 255]");
        assert_eq!(v.bytes(), [1, 255]);
        let v = read(ElementType::U64, &format!("[{}]", u64::MAX));
        assert_eq!(v.bytes(), u64::MAX.to_le_bytes());
        let v = read(ElementType::F16, "[1.5, null]");
        assert_eq!(v.count(), 2);
        assert!(v.error().is_none());
    }

    #[test]
    fn a_huge_declared_count_reserves_by_the_data_read() {
        let mut v = Values::new(Some(ElementType::F64), Some(usize::MAX / 16));
        v.read_str("[1, 2, 3]").unwrap();
        assert_eq!(v.count(), 3);
        assert!(v.bytes.capacity() <= FIRST_RESERVE * 8, "{}", v.bytes.capacity());
        // An honest count is reserved exactly (no doubling past it).
        let json = format!("[{}]", vec!["1.5"; 10_000].join(","));
        let mut v = Values::new(Some(ElementType::F32), Some(10_000));
        v.read_str(&json).unwrap();
        assert_eq!(v.bytes.capacity(), 40_000);
    }

    #[test]
    fn ten_thousand_levels_of_nesting_are_an_error_not_a_stack_overflow() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let mut v = Values::new(Some(ElementType::F32), None);
        let e = v.read_str(&deep).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
    }

    #[test]
    fn rows_are_counted_and_the_first_misfit_kept() {
        let mut r = Rows::new(ElementType::F32, 2, 3);
        r.read_str("[[1, 2], [3], [4, 5, 6]]", true).unwrap();
        assert_eq!((r.rows, r.first_misfit, r.values.count()), (3, Some((1, 1)), 6));
        let mut r = Rows::new(ElementType::F32, 2, 1);
        r.read_str("[1, null]", false).unwrap();
        assert_eq!((r.rows, r.first_misfit, r.values.count()), (1, None, 2));
    }
}
