//! The HTTP side of the alerts: the alerts URL of an Alertmanager, one JSON POST to an
//! alert receiver ([`post_json`], which the sync service's webhook uses too) and its
//! [`PostError`], and the retry, breaker and timeout settings of those POSTs.
//! Credentials in a URL are kept out of every log line, status and error.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::breaker::BreakerPolicy;
use crate::retry::{Failure, RetryPolicy};
use crate::tls::describe_ureq_error;

/// Alertmanager's alerts endpoint, appended to each base URL.
pub const API_PATH: &str = "/api/v2/alerts";

/// Retries of one POST: four attempts, up to 500 ms, 1 s, 2 s apart (full jitter); a
/// `Retry-After` over 5 s ends them (the next resend comes anyway).
pub const ALERTMANAGER_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(5),
};

/// One Alertmanager's breaker: open after three failed POSTs, for 30 s, doubling after each
/// failed probe up to 5 minutes.
pub const ALERTMANAGER_BREAKER: BreakerPolicy = BreakerPolicy {
    failure_threshold: 3,
    initial_cooldown: Duration::from_secs(30),
    max_cooldown: Duration::from_secs(300),
};

/// Longest wait for one POST (connect, send, answer).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Most of an error answer read for its message.
const MAX_ANSWER: u64 = 64 * 1024;

/// The alerts endpoint of an Alertmanager base URL, or what is wrong with the URL.
pub fn alerts_url(base: &str) -> Result<String, String> {
    crate::check_http_url(base).map_err(|e| {
        let e = match userinfo(base) {
            Some(secret) => e.replace(secret, ""),
            None => e,
        };
        format!("Alertmanager URL: {e}")
    })?;
    if base.contains(['?', '#']) {
        return Err(format!(
            "Alertmanager URL `{}`: give the base URL (http://host:9093), without a query or fragment",
            redact(base)
        ));
    }
    let base = base.trim_end_matches('/');
    // Tolerate the full endpoint too: people copy it from Alertmanager's docs.
    let base = base.strip_suffix(API_PATH).unwrap_or(base);
    Ok(format!("{base}{API_PATH}"))
}

/// The `user:password@` of a URL, if it has one (ureq sends it as basic auth).
fn userinfo(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    authority.rfind('@').map(|at| &rest[..=at])
}

/// A URL without the `user:password@` it may hold, for logs and status.
pub(super) fn redact(url: &str) -> String {
    match userinfo(url) {
        Some(secret) => url.replacen(secret, "", 1),
        None => url.to_string(),
    }
}

/// A failed POST: no answer, or a status other than 2xx.
#[derive(Debug)]
pub enum PostError {
    /// No answer (the transport's error, without credentials).
    Transport(String),
    /// An answer other than 2xx: its status, `Retry-After` and the reason it gave.
    Status {
        /// The HTTP status.
        code: u16,
        /// Its `Retry-After`, if any.
        retry_after: Option<String>,
        /// The receiver's reason (Alertmanager's `message`, else the answer's start).
        message: String,
    },
}

/// One attempt of a JSON POST to an alert receiver (Alertmanager, or the sync service's
/// webhook) with `headers`: `Ok` on a 2xx. A `user:password@` in `url` is sent as basic
/// auth by ureq and kept out of the error; `shown` names the receiver in it.
pub fn post_json(
    agent: &ureq::Agent,
    url: &str,
    shown: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<(), PostError> {
    let mut request = agent.post(url).content_type("application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body).map_err(|e| {
        // ureq's own messages may quote the URL, credentials and all.
        let text = describe_ureq_error(shown, &e);
        PostError::Transport(match userinfo(url) {
            Some(secret) => text.replace(secret, ""),
            None => text,
        })
    })?;
    let code = response.status().as_u16();
    if (200..300).contains(&code) {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .unwrap_or_default();
    Err(PostError::Status {
        code,
        retry_after,
        message: rejection_message(&text),
    })
}

impl PostError {
    /// What the retry policy and breaker make of it.
    pub fn failure(&self) -> Failure {
        match self {
            PostError::Transport(_) => Failure::Transport,
            PostError::Status {
                code, retry_after, ..
            } => Failure::status(*code, retry_after.as_deref(), SystemTime::now()),
        }
    }
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Transport(e) => f.write_str(e),
            PostError::Status { code, message, .. } if message.is_empty() => write!(f, "HTTP {code}"),
            PostError::Status { code, message, .. } => write!(f, "HTTP {code}: {message}"),
        }
    }
}

/// Alertmanager's reason in an error answer: `{"code":602,"message":"…"}` from its schema
/// check (422), a JSON string from its own validation (400), else the text's start.
fn rejection_message(text: &str) -> String {
    let start = || text.trim().chars().take(300).collect();
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(message)) => message,
        Ok(Value::Object(mut answer)) => match answer.remove("message") {
            Some(Value::String(message)) => message,
            _ => start(),
        },
        _ => start(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::tests::drift;
    use crate::alerts::{Alerter, AlerterConfig, AlerterStatus};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    #[test]
    fn alertmanager_urls_get_the_api_path_once_and_lose_their_credentials_in_logs() {
        assert_eq!(
            alerts_url("http://127.0.0.1:9093").unwrap(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(
            alerts_url("https://am/prefix/").unwrap(),
            "https://am/prefix/api/v2/alerts"
        );
        assert_eq!(
            alerts_url("http://am:9093/api/v2/alerts").unwrap(),
            "http://am:9093/api/v2/alerts"
        );
        assert!(alerts_url("am:9093").is_err());
        for bad in ["http://u:s3cret@am/?x", "ftp://u:s3cret@am"] {
            let e = alerts_url(bad).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
        let alerter = Alerter::start(AlerterConfig::new(["http://u:s3cret@127.0.0.1:9"])).unwrap();
        assert_eq!(
            alerter.status().alertmanagers[0].url,
            "http://127.0.0.1:9/api/v2/alerts"
        );
        assert!(!format!("{alerter:?}").contains("s3cret"));
        assert_eq!(
            redact("https://u:s3cret@am:9093/api/v2/alerts"),
            "https://am:9093/api/v2/alerts"
        );
        assert_eq!(redact("http://am/a@b"), "http://am/a@b");
        assert!(Alerter::start(AlerterConfig::new(Vec::<String>::new())).is_err());
        let mut config = AlerterConfig::new(["http://127.0.0.1:9"]);
        config.resend_interval = Duration::ZERO;
        assert!(Alerter::start(config).is_err());
    }

    #[test]
    fn rejection_messages_come_from_alertmanagers_answer() {
        assert_eq!(
            rejection_message(r#"{"code":602,"message":"0.labels in body is required"}"#),
            "0.labels in body is required"
        );
        assert_eq!(
            rejection_message(r#""invalid label set: invalid name \"a-b\"""#),
            r#"invalid label set: invalid name "a-b""#
        );
        assert_eq!(rejection_message(" Not Found \n"), "Not Found");
    }

    /// A stand-in Alertmanager on 127.0.0.1 that gives `answers` (status, body) in turn,
    /// one per connection, and records the bodies it was sent.
    fn fake_alertmanager(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for (code, answer) in answers {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let n = stream.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break String::new();
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break body.to_string();
                        }
                    }
                };
                seen.lock().unwrap().push(body);
                let reply = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (url, bodies)
    }

    fn quick_config(url: &str) -> AlerterConfig {
        let mut config = AlerterConfig::new([url]);
        config.resend_interval = Duration::from_secs(3600);
        config.retry = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        config
    }

    fn wait_for(alerter: &Alerter, done: impl Fn(&AlerterStatus) -> bool) -> AlerterStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = alerter.status();
            if done(&status) || Instant::now() > deadline {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_5xx_is_retried_and_the_alert_then_counts_as_sent() {
        let (url, bodies) = fake_alertmanager(vec![(503, ""), (200, "")]);
        let alerter = Alerter::start(quick_config(&url)).unwrap();
        alerter.fire(drift("iris"));
        let status = wait_for(&alerter, |s| s.sent == 1);
        assert_eq!((status.sent, status.failed_posts, status.active), (1, 0, 1));
        assert_eq!(status.alertmanagers[0].target.retries, 1);
        let bodies = bodies.lock().unwrap();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0], bodies[1], "a retry repeats the same body");
        let sent: Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(sent[0]["labels"]["model"], "iris");
    }

    #[test]
    fn a_4xx_is_not_retried_and_alertmanagers_message_is_kept() {
        let (url, bodies) = fake_alertmanager(vec![(
            422,
            r#"{"code":602,"message":"0.labels in body is required"}"#,
        )]);
        let alerter = Alerter::start(quick_config(&url)).unwrap();
        alerter.fire(drift("iris"));
        let status = wait_for(&alerter, |s| s.failed_posts == 1);
        let am = &status.alertmanagers[0];
        assert_eq!((status.sent, status.failed_posts, am.target.retries), (0, 1, 0));
        assert_eq!(
            am.last_error.as_deref(),
            Some("HTTP 422: 0.labels in body is required")
        );
        assert_eq!(am.target.breaker, "closed", "a 4xx shows Alertmanager is up");
        assert_eq!(bodies.lock().unwrap().len(), 1);
        // Invalid alerts never reach the thread.
        alerter.fire(drift("iris").label("bad-name", "x"));
        assert_eq!(alerter.status().invalid, 1);
    }
}
