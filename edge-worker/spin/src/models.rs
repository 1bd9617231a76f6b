//! The `kiln_models` variable: which model version each slot holds, e.g.
//! `model-a=house-price@1#<sha256>; model-b=mlp@1` (entries separated by `;` or new
//! lines; the `#digest` is optional: `kiln export spin` writes it, a hand-written
//! manifest may leave it out, and it is then reported as empty).

/// One bound slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotModel {
    /// Slot index (`model-d` → 3).
    pub slot: usize,
    /// Registry model name.
    pub name: String,
    /// Registry version number.
    pub version: u64,
    /// SHA-256 (hex) of the component in the slot, or empty.
    pub digest: String,
}

/// The letter of slot `index` (`model-a` is 0): Spin's dependency names are kebab
/// words that must start with a letter, so slots cannot be numbered.
pub fn slot_name(index: usize) -> char {
    (b'a' + index.min(25) as u8) as char
}

/// The index of a slot name (`model-c` → 2).
pub fn slot_index(name: &str) -> Option<usize> {
    match name.strip_prefix("model-")?.as_bytes() {
        [c @ b'a'..=b'z'] => Some((c - b'a') as usize),
        _ => None,
    }
}

/// Parses `kiln_models` for a router with `slots` slots.
pub fn parse(text: &str, slots: usize) -> Result<Vec<SlotModel>, String> {
    let mut out: Vec<SlotModel> = Vec::new();
    for entry in text.split([';', '\n']).map(str::trim).filter(|e| !e.is_empty()) {
        let shape = || format!("kiln_models: `{entry}` should look like `model-a=name@1#sha256`");
        let (slot, rest) = entry.split_once('=').ok_or_else(shape)?;
        let slot = slot.trim();
        let index = slot_index(slot).ok_or_else(|| {
            format!(
                "kiln_models: `{slot}` is not a slot name (model-a … model-{})",
                slot_name(slots - 1)
            )
        })?;
        if index >= slots {
            return Err(format!(
                "kiln_models: slot {slot} does not exist (the router has model-a … model-{})",
                slot_name(slots - 1)
            ));
        }
        let slot = index;
        let (model, digest) = match rest.split_once('#') {
            Some((m, d)) => (m.trim(), d.trim().trim_start_matches("sha256:")),
            None => (rest.trim(), ""),
        };
        let (name, version) = model.rsplit_once('@').ok_or_else(shape)?;
        let version: u64 = version
            .trim()
            .parse()
            .map_err(|_| format!("kiln_models: `{entry}`: `{version}` is not a version number"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(shape());
        }
        if !digest.is_empty() && (digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(format!(
                "kiln_models: `{entry}`: `{digest}` is not a SHA-256 in hex"
            ));
        }
        if let Some(other) = out.iter().find(|m| m.slot == slot) {
            return Err(format!(
                "kiln_models: slot model-{} is given twice ({}@{} and {name}@{version})",
                slot_name(slot),
                other.name,
                other.version
            ));
        }
        out.push(SlotModel {
            slot,
            name: name.to_string(),
            version,
            digest: digest.to_ascii_lowercase(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slots_names_versions_and_digests() {
        let d = "ab".repeat(32);
        let got = parse(
            &format!("model-a=house-price@1#sha256:{d};\n model-h = mlp@12 "),
            8,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                SlotModel {
                    slot: 0,
                    name: "house-price".into(),
                    version: 1,
                    digest: d
                },
                SlotModel {
                    slot: 7,
                    name: "mlp".into(),
                    version: 12,
                    digest: String::new()
                },
            ]
        );
    }

    #[test]
    fn refuses_bad_entries() {
        for bad in [
            "model-i=a@1",
            "model-0=a@1",
            "slot-0=a@1",
            "model-a=a",
            "model-a=a@x",
            "model-a=a@1#xyz",
            "model-a=a@1;model-a=b@2",
        ] {
            assert!(parse(bad, 8).is_err(), "{bad}");
        }
    }
}
