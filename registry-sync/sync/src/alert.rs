//! The alert webhook (`--alert-webhook`): a JSON POST when a rollout is rolled back by
//! itself, sent on its own thread so the control loop never waits for it.
//!
//! Delivery is at least once, within limits: a transport failure, a 5xx, a 408 or a 429
//! (after its `Retry-After`, up to 5 s) is retried under [`WEBHOOK_RETRY`]; any other
//! answer ends it. A POST is not idempotent by itself, so each alert carries an `id`
//! (also sent as the `Idempotency-Key` header) that is the same on every attempt: a
//! receiver that saw the alert before (its answer was lost) can drop the repeat. After
//! [`WEBHOOK_BREAKER`]'s threshold of alerts that failed in that way, the webhook's
//! circuit breaker opens: alerts are then logged (with their body) and not sent until the
//! cool-down is over, and the next alert is the probe.

use std::sync::Arc;
use std::time::Duration;

use kiln_node_api::alerts::{PostError, post_json};
use kiln_node_api::breaker::BreakerPolicy;
use kiln_node_api::retry::{Event, Refused, RetryPolicy, Target, ThreadPause};
use kiln_registry::rollout::Rollout;
use serde_json::json;

use crate::state::Shared;

/// Retries of one alert: the same as a POST to Alertmanager (four attempts, 500 ms, 1 s,
/// 2 s apart at most, full jitter).
pub const WEBHOOK_RETRY: RetryPolicy = kiln_node_api::alerts::ALERTMANAGER_RETRY;

/// The webhook's breaker, like an Alertmanager's: open after three failed alerts, for
/// 30 s, doubling after each failed probe up to 5 minutes.
pub const WEBHOOK_BREAKER: BreakerPolicy = kiln_node_api::alerts::ALERTMANAGER_BREAKER;

/// The webhook's name in the status and the metrics.
pub const TARGET: &str = "webhook";

/// The webhook's target (made on first use).
pub fn target(shared: &Shared) -> Arc<Target> {
    // A probe waits at most 5 s per attempt; one older than a minute was abandoned.
    shared.other_target(TARGET, || {
        Target::new(TARGET, "webhook", WEBHOOK_BREAKER, Duration::from_secs(60))
    })
}

/// Tells the alert webhook that rollout `r` was rolled back (in the background; the
/// outcome is logged).
pub fn alert(shared: &Shared, r: &Rollout, reason: &str) {
    let Some(url) = shared.config.alert_webhook.clone() else {
        return;
    };
    let id = format!("kiln-rollout-{}-rolled-back", r.id);
    let body = json!({
        "id": id,
        "event": "rollout.rolled_back",
        "model": r.model,
        "rollout": r.id,
        "from_version": r.from_version,
        "to_version": r.to_version,
        "reason": reason,
        "time": kiln_types::format::now_rfc3339(),
    });
    let tls = shared.config.client_tls.clone();
    let target = target(shared);
    let spawned = std::thread::Builder::new()
        .name("sync-alert".into())
        .spawn(move || {
            let agent: ureq::Agent = tls
                .agent_config()
                .timeout_global(Some(Duration::from_secs(5)))
                .http_status_as_error(false)
                .build()
                .into();
            let bytes = body.to_string().into_bytes();
            let attempt = || post_json(&agent, &url, &url, &bytes, &[("idempotency-key", &id)]);
            let on_event = |event: Event<'_, PostError>| match event {
                Event::Retry {
                    attempt,
                    delay,
                    error,
                } => tracing::info!(url = %url, attempt, delay_ms = delay.as_millis() as u64, error = %error, "alert webhook call failed; retrying"),
                Event::Opened(_) => tracing::warn!(url = %url, "alert webhook circuit breaker open: alerts are logged, not sent, until its cool-down ends"),
                Event::Closed => tracing::info!(url = %url, "alert webhook answers again; circuit breaker closed"),
            };
            match target.call(
                &WEBHOOK_RETRY,
                &mut ThreadPause,
                PostError::failure,
                on_event,
                attempt,
            ) {
                Ok(()) => tracing::debug!(url = %url, id = %id, "alert delivered"),
                Err(Refused::Failed { error, attempts }) => {
                    tracing::warn!(url = %url, attempts, error = %error, alert = %body, "alert webhook call failed; alert not delivered")
                }
                Err(Refused::Open { retry_in }) => {
                    tracing::warn!(url = %url, retry_in_ms = retry_in.as_millis() as u64, alert = %body, "alert webhook circuit breaker open; alert not sent")
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the alert thread");
    }
}
