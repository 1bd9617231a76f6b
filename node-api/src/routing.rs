//! The weighted version choice. Every host uses these two functions, so a routing key
//! lands on the same version on every node while the weights are the same.

use sha2::{Digest, Sha256};

/// A point in `[0, 2^64)` for a routing key: the first 8 bytes of its SHA-256, big-endian.
pub fn routing_point(key: &str) -> u64 {
    let hash = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// The index of the entry of `weights` that `point` falls in, when `[0, 2^64)` is cut into
/// consecutive ranges proportional to the weights (in order). `None` when every weight is
/// 0 (or there are none).
///
/// Callers list the newest version first: when a canary's weight grows, the range it
/// already had stays its own, so a sticky key that was on the canary stays on it.
pub fn choose_weighted(weights: &[u32], point: u64) -> Option<usize> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    // Scale the point into [0, total) without overflow: (point * total) >> 64.
    let scaled = ((u128::from(point) * u128::from(total)) >> 64) as u64;
    let mut upper = 0u64;
    for (i, w) in weights.iter().enumerate() {
        upper += u64::from(*w);
        if scaled < upper {
            return Some(i);
        }
    }
    // Unreachable for scaled < total; the last non-zero weight otherwise.
    weights.iter().rposition(|w| *w > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_weights_never_win_and_all_zero_is_none() {
        assert_eq!(choose_weighted(&[], 5), None);
        assert_eq!(choose_weighted(&[0, 0], 5), None);
        for p in [0, 1, u64::MAX / 2, u64::MAX] {
            assert_eq!(choose_weighted(&[0, 7, 0], p), Some(1));
        }
    }

    #[test]
    fn shares_follow_the_weights() {
        let mut hits = [0u32; 3];
        for i in 0..20_000 {
            let p = routing_point(&format!("user-{i}"));
            hits[choose_weighted(&[5, 25, 70], p).unwrap()] += 1;
        }
        let share = |n: u32| f64::from(n) / 20_000.0;
        assert!((share(hits[0]) - 0.05).abs() < 0.01, "{hits:?}");
        assert!((share(hits[1]) - 0.25).abs() < 0.015, "{hits:?}");
        assert!((share(hits[2]) - 0.70).abs() < 0.015, "{hits:?}");
    }

    #[test]
    fn a_sticky_key_on_the_canary_stays_there_as_its_weight_grows() {
        let steps = [5u32, 25, 50, 100];
        for i in 0..2000 {
            let p = routing_point(&format!("k{i}"));
            let mut on_canary = false;
            for w in steps {
                let now = choose_weighted(&[w, 100 - w], p) == Some(0);
                assert!(!on_canary || now, "key k{i} left the canary at weight {w}");
                on_canary = now;
            }
            assert!(on_canary, "at weight 100 every key is on the canary");
        }
    }

    #[test]
    fn routing_points_are_stable() {
        // SHA-256("abc") starts with ba7816bf8f01cfea.
        assert_eq!(routing_point("abc"), 0xba78_16bf_8f01_cfea);
    }
}
