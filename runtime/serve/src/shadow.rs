//! Shadow traffic: after the served version answered, the same inputs run on the model's
//! shadow version in the background and the two answers are compared and counted
//! (`kiln_shadow_requests_total`). The client never waits for, or sees, the shadow.

use crate::metrics::ShadowResult;
use crate::state::State;
use crate::table::ServedModel;
use kiln_api::infer::check_inputs;
use kiln_types::{ElementType, Tensor};
use std::sync::Arc;

/// Relative tolerance of float outputs: |a − b| ≤ 1e-5 · max(1, |a|).
const FLOAT_TOLERANCE: f64 = 1e-5;

/// Runs `inputs` on `shadow` in a spawned task and counts how its outputs compare with
/// `served_outputs` (restricted to `requested` when not empty). When the shadow calls in
/// flight are at the limit the copy is dropped and counted, never queued: a slow shadow
/// must not pile up work behind the served traffic.
pub(crate) fn spawn(
    state: &Arc<State>,
    shadow: Arc<ServedModel>,
    inputs: Vec<Tensor>,
    served_outputs: Vec<Tensor>,
    requested: &[String],
) {
    let Ok(permit) = state.shadow_slots.clone().try_acquire_owned() else {
        state
            .metrics
            .shadow(&shadow.name, &shadow.version_label, ShadowResult::Dropped);
        return;
    };
    let state = state.clone();
    let requested = requested.to_vec();
    tokio::spawn(async move {
        let _permit = permit;
        let result = match run(&shadow, inputs).await {
            Ok(outputs) => {
                if outputs_agree(&served_outputs, &outputs, &requested) {
                    ShadowResult::Agree
                } else {
                    tracing::debug!(
                        model = %shadow.name,
                        version = shadow.version,
                        digest = %shadow.digest,
                        "the shadow version answered differently"
                    );
                    ShadowResult::Disagree
                }
            }
            Err(reason) => {
                tracing::debug!(
                    model = %shadow.name,
                    version = shadow.version,
                    digest = %shadow.digest,
                    error = %reason,
                    "the shadow version failed"
                );
                ShadowResult::Error
            }
        };
        state.metrics.shadow(&shadow.name, &shadow.version_label, result);
    });
}

/// The shadow's outputs, on the blocking pool (it is background work: never on an async
/// worker, whatever its latency).
async fn run(shadow: &Arc<ServedModel>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
    // The inputs fit the served version; the shadow may take other ones.
    let inputs = check_inputs(&shadow.model.info, inputs)?;
    let model = shadow.model.clone();
    match tokio::task::spawn_blocking(move || model.predict(inputs)).await {
        Ok(Ok(outputs)) => Ok(outputs),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the shadow task failed: {e}")),
    }
}

fn is_float(t: ElementType) -> bool {
    matches!(t, ElementType::F16 | ElementType::F32 | ElementType::F64)
}

/// Whether two answers agree: the same output names (among `requested` when not empty),
/// shapes, integer and boolean values exactly, float values within [`FLOAT_TOLERANCE`].
pub(crate) fn outputs_agree(served: &[Tensor], shadow: &[Tensor], requested: &[String]) -> bool {
    let (a, b) = (pick(served, requested), pick(shadow, requested));
    a.len() == b.len() && a.iter().zip(&b).all(|(a, b)| tensors_agree(a, b))
}

/// The outputs that count (`requested` when not empty), by name.
fn pick<'a>(outputs: &'a [Tensor], requested: &[String]) -> Vec<&'a Tensor> {
    let mut kept: Vec<&Tensor> = outputs
        .iter()
        .filter(|t| requested.is_empty() || requested.contains(&t.name))
        .collect();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    kept
}

fn tensors_agree(a: &Tensor, b: &Tensor) -> bool {
    if a.name != b.name || a.shape != b.shape {
        return false;
    }
    if is_float(a.element_type) && is_float(b.element_type) {
        let (Ok(x), Ok(y)) = (a.to_f64_vec(), b.to_f64_vec()) else {
            return false;
        };
        return x.len() == y.len()
            && x.iter().zip(&y).all(|(x, y)| {
                (x.is_nan() && y.is_nan()) || (x - y).abs() <= FLOAT_TOLERANCE * x.abs().max(1.0)
            });
    }
    a.element_type == b.element_type && a.data == b.data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_agree_within_the_tolerance_and_integers_exactly() {
        let a = [
            Tensor::from_i64("label", &[1, 2]),
            Tensor::from_f32("p", &[2], &[1000.0, 0.5]),
        ];
        let close = [
            Tensor::from_f32("p", &[2], &[1000.009, 0.500_004]),
            Tensor::from_i64("label", &[1, 2]),
        ];
        assert!(outputs_agree(&a, &close, &[]), "order does not matter");
        let far = [
            Tensor::from_i64("label", &[1, 2]),
            Tensor::from_f32("p", &[2], &[1000.0, 0.5001]),
        ];
        assert!(!outputs_agree(&a, &far, &[]));
        assert!(
            outputs_agree(&a, &far, &["label".to_string()]),
            "only requested outputs count"
        );
        let other_label = [
            Tensor::from_i64("label", &[1, 3]),
            Tensor::from_f32("p", &[2], &[1000.0, 0.5]),
        ];
        assert!(!outputs_agree(&a, &other_label, &[]));
        let renamed = [
            Tensor::from_i64("class", &[1, 2]),
            Tensor::from_f32("p", &[2], &[1000.0, 0.5]),
        ];
        assert!(!outputs_agree(&a, &renamed, &[]));
        assert!(!outputs_agree(&a, &a[..1], &[]), "a missing output");
        let nan = [Tensor::from_f32("p", &[1], &[f32::NAN])];
        assert!(outputs_agree(&nan, &nan, &[]));
    }
}
