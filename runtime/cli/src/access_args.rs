//! Flags of `kiln serve` (and `kiln up`) for who may use the inference port and how much:
//! `--rate-limit`, `--rate-limit-burst`, `--rate-limit-key`, each with its `KILN_*`
//! environment variable. Bearer tokens need no flag: on a registry, `kiln serve` accepts
//! the registry's viewer (or higher) tokens for restricted versions.

use kiln_serve::{AccessConfig, RateLimit, RateLimitKey};

/// Per-client rate limits of the inference port (off by default).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccessArgs {
    /// Limit each client to RATE requests (`100/s`, `6000/m`, `N/h`) on the API, the
    /// playground and bundle downloads; above it, 429 with Retry-After. Health and
    /// /metrics are never limited. Off when unset.
    #[arg(long, env = "KILN_RATE_LIMIT", value_name = "RATE")]
    pub rate_limit: Option<String>,
    /// Requests a client may send at once before --rate-limit's average applies
    /// (default: the N of --rate-limit).
    #[arg(
        long,
        env = "KILN_RATE_LIMIT_BURST",
        value_name = "N",
        requires = "rate_limit"
    )]
    pub rate_limit_burst: Option<u32>,
    /// What one client is: `token-or-ip` (its viewer token when it presents one this
    /// server accepts, else its IP address) or `ip`.
    #[arg(
        long,
        env = "KILN_RATE_LIMIT_KEY",
        value_name = "KEY",
        default_value = "token-or-ip"
    )]
    pub rate_limit_key: RateLimitKey,
}

impl AccessArgs {
    /// The access settings these flags describe.
    pub fn config(&self) -> anyhow::Result<AccessConfig> {
        let rate_limit = match &self.rate_limit {
            None => None,
            Some(text) => Some(
                RateLimit::parse(text, self.rate_limit_burst, self.rate_limit_key)
                    .map_err(|e| anyhow::anyhow!("--rate-limit {e}"))?,
            ),
        };
        Ok(AccessConfig::with_rate_limit(rate_limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        access: AccessArgs,
    }

    #[test]
    fn the_limit_is_off_unless_asked_for_and_checked_when_given() {
        let off = Flags::parse_from(["kiln"]).access.config().unwrap();
        assert!(off.rate_limit.is_none());
        let on = Flags::parse_from([
            "kiln",
            "--rate-limit",
            "5/s",
            "--rate-limit-burst",
            "2",
            "--rate-limit-key",
            "ip",
        ])
        .access
        .config()
        .unwrap();
        let limit = on.rate_limit.unwrap();
        assert_eq!((limit.requests, limit.burst, limit.key), (5, 2, RateLimitKey::Ip));
        let bad = Flags::parse_from(["kiln", "--rate-limit", "5 per second"])
            .access
            .config()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(bad.contains("--rate-limit"), "{bad}");
        assert!(Flags::try_parse_from(["kiln", "--rate-limit-burst", "3"]).is_err());
    }
}
