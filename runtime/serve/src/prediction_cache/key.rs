//! The cache key: SHA-256 over a canonical, unambiguous encoding of what determines a
//! prediction. Every variable-length field is length-prefixed, so no two different requests
//! encode to the same bytes; inputs and requested outputs are sorted, so their order in the
//! request does not matter.

use kiln_types::Tensor;
use sha2::{Digest, Sha256};
use std::cmp::Ordering;

/// Prefix of every Redis key Kiln writes; the version changes with the key or value format.
pub const REDIS_KEY_PREFIX: &str = "kiln:prediction:v1:";

/// SHA-256 over the component digest and the canonical bytes of the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Key of `inputs` (order-independent: sorted by name) run on the component `digest`,
    /// restricted to the `requested` outputs (empty = all).
    pub fn new(digest: &str, inputs: &[Tensor], requested: &[String]) -> CacheKey {
        compute(digest, inputs, requested)
    }

    /// The key as lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The Redis key the value is stored under.
    pub fn redis_key(&self) -> String {
        format!("{REDIS_KEY_PREFIX}{}", self.hex())
    }
}

/// Changes whenever the encoding below changes, so old keys can never match new ones.
const KEY_VERSION: &[u8] = b"kiln-prediction-key/v1";

fn compute(digest: &str, inputs: &[Tensor], requested: &[String]) -> CacheKey {
    let mut h = Sha256::new();
    field(&mut h, KEY_VERSION);
    field(&mut h, digest.as_bytes());

    // Sorted by name; ties (duplicate names, which the model rejects anyway) are broken by
    // the rest of the tensor so that the key stays independent of the order.
    let mut sorted: Vec<&Tensor> = inputs.iter().collect();
    sorted.sort_by(|a, b| canonical_order(a, b));
    count(&mut h, sorted.len());
    for t in sorted {
        field(&mut h, t.name.as_bytes());
        field(&mut h, t.element_type.oip_name().as_bytes());
        count(&mut h, t.shape.len());
        for d in &t.shape {
            h.update(d.to_le_bytes());
        }
        field(&mut h, &t.data);
    }

    let mut names: Vec<&str> = requested.iter().map(String::as_str).collect();
    names.sort_unstable();
    count(&mut h, names.len());
    for n in names {
        field(&mut h, n.as_bytes());
    }
    CacheKey(h.finalize().into())
}

fn canonical_order(a: &Tensor, b: &Tensor) -> Ordering {
    a.name
        .cmp(&b.name)
        .then_with(|| a.element_type.oip_name().cmp(b.element_type.oip_name()))
        .then_with(|| a.shape.cmp(&b.shape))
        .then_with(|| a.data.cmp(&b.data))
}

fn count(h: &mut Sha256, n: usize) {
    h.update((n as u64).to_le_bytes());
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    count(h, bytes.len());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_types::ElementType;

    fn t(name: &str, ty: ElementType, shape: &[u64], data: &[u8]) -> Tensor {
        Tensor {
            name: name.into(),
            element_type: ty,
            shape: shape.to_vec(),
            data: data.to_vec(),
        }
    }

    fn inputs() -> Vec<Tensor> {
        vec![
            t("a", ElementType::F32, &[1, 2], &[0, 0, 128, 63, 0, 0, 0, 64]),
            t("b", ElementType::I64, &[1], &[7, 0, 0, 0, 0, 0, 0, 0]),
        ]
    }

    fn key(inputs: &[Tensor]) -> CacheKey {
        CacheKey::new("sha256:00ff", inputs, &[])
    }

    #[test]
    fn same_request_gives_same_key() {
        assert_eq!(key(&inputs()), key(&inputs()));
    }

    #[test]
    fn input_order_does_not_change_the_key() {
        let mut reversed = inputs();
        reversed.reverse();
        assert_eq!(key(&inputs()), key(&reversed));
    }

    #[test]
    fn requested_output_order_does_not_change_the_key() {
        let ab = ["label".to_string(), "probabilities".to_string()];
        let ba = [ab[1].clone(), ab[0].clone()];
        assert_eq!(
            CacheKey::new("d", &inputs(), &ab),
            CacheKey::new("d", &inputs(), &ba)
        );
    }

    #[test]
    fn key_is_sensitive_to_every_field() {
        let base = key(&inputs());
        assert_ne!(base, CacheKey::new("sha256:00fe", &inputs(), &[]), "digest");
        assert_ne!(
            base,
            CacheKey::new("sha256:00ff", &inputs(), &["a".into()]),
            "requested"
        );

        let mut renamed = inputs();
        renamed[0].name = "c".into();
        assert_ne!(base, key(&renamed), "name");

        let mut retyped = inputs();
        retyped[0].element_type = ElementType::I32;
        assert_ne!(base, key(&retyped), "element type");

        let mut reshaped = inputs();
        reshaped[0].shape = vec![2, 1];
        assert_ne!(base, key(&reshaped), "shape");

        let mut changed = inputs();
        changed[1].data[0] = 8;
        assert_ne!(base, key(&changed), "data");

        assert_ne!(base, key(&inputs()[..1]), "input count");
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // Moving bytes from the name into the data, or between shape dims, must not collide.
        let one = [t("ab", ElementType::U8, &[1], b"c")];
        let two = [t("a", ElementType::U8, &[1], b"bc")];
        assert_ne!(key(&one), key(&two));
        let split = [t("x", ElementType::U8, &[2, 3], &[0; 6])];
        let merged = [t("x", ElementType::U8, &[6], &[0; 6])];
        assert_ne!(key(&split), key(&merged));
        let names = ["ab".to_string()];
        let parts = ["a".to_string(), "b".to_string()];
        assert_ne!(CacheKey::new("d", &one, &names), CacheKey::new("d", &one, &parts));
    }
}
