//! The `kiln_models` variable: which model version each slot holds, e.g.
//! `model-0=house-price@1#<sha256>; model-1=mlp@1` (entries separated by `;` or new
//! lines; the `#digest` is optional: `kiln export spin` writes it, a hand-written
//! manifest may leave it out, and it is then reported as empty).

/// One bound slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotModel {
    /// Slot index (`model-3` → 3).
    pub slot: usize,
    /// Registry model name.
    pub name: String,
    /// Registry version number.
    pub version: u64,
    /// SHA-256 (hex) of the component in the slot, or empty.
    pub digest: String,
}

/// Parses `kiln_models` for a router with `slots` slots.
pub fn parse(text: &str, slots: usize) -> Result<Vec<SlotModel>, String> {
    let mut out: Vec<SlotModel> = Vec::new();
    for entry in text.split([';', '\n']).map(str::trim).filter(|e| !e.is_empty()) {
        let shape = || format!("kiln_models: `{entry}` should look like `model-0=name@1#sha256`");
        let (slot, rest) = entry.split_once('=').ok_or_else(shape)?;
        let slot: usize = slot
            .trim()
            .strip_prefix("model-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                format!(
                    "kiln_models: `{}` is not a slot name (model-0 … model-{})",
                    slot.trim(),
                    slots - 1
                )
            })?;
        if slot >= slots {
            return Err(format!(
                "kiln_models: slot model-{slot} does not exist (the router has model-0 … model-{})",
                slots - 1
            ));
        }
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
                "kiln_models: slot model-{slot} is given twice ({}@{} and {name}@{version})",
                other.name, other.version
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
            &format!("model-0=house-price@1#sha256:{d};\n model-7 = mlp@12 "),
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
            "model-8=a@1",
            "slot-0=a@1",
            "model-0=a",
            "model-0=a@x",
            "model-0=a@1#xyz",
            "model-0=a@1;model-0=b@2",
        ] {
            assert!(parse(bad, 8).is_err(), "{bad}");
        }
    }
}
