//! Connection and request limits shared by the commands that serve HTTP (`kiln serve`,
//! `kiln registry serve`, `kiln sync run`): `--max-connections`, `--header-timeout`,
//! `--idle-timeout`, `--request-timeout`, `--upload-timeout`, `--max-concurrent-uploads`,
//! each with its `KILN_*` environment variable. Flatten them into a command's flags with
//! `#[command(flatten)]`; [`LimitsArgs::limits`] is what `kiln_node_api::tls::serve` and
//! the routers take.

use std::time::Duration;

use kiln_node_api::tls::ServeLimits;

/// A duration flag: `30s`, `500ms`, `10m`, or a bare number of seconds.
fn duration(text: &str) -> Result<Duration, String> {
    let d = kiln_registry::duration::parse(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(10) {
        return Err(format!("`{text}` is too short: give at least 10ms"));
    }
    Ok(d)
}

/// How many connections, how slow a client may be, how long a request may take.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitsArgs {
    /// Most connections open at once (TLS handshakes included); at the limit the server
    /// stops accepting and new connections wait in the kernel's listen backlog.
    #[arg(long, env = "KILN_MAX_CONNECTIONS", default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// Longest a client may take to send a request's line and headers (from connecting,
    /// or from the first byte of a later request); the connection is then closed.
    #[arg(long, env = "KILN_HEADER_TIMEOUT", default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub header_timeout: Duration,
    /// Longest a keep-alive connection may stay idle between requests before it is closed.
    #[arg(long, env = "KILN_IDLE_TIMEOUT", default_value = "60s", value_parser = duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Longest a request may take from its headers to its answer, its body included;
    /// then 408 with a JSON body of kind `timeout`.
    #[arg(long, env = "KILN_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration, value_name = "DURATION")]
    pub request_timeout: Duration,
    /// The same for component uploads (the node admin API's and the registry's).
    #[arg(long, env = "KILN_UPLOAD_TIMEOUT", default_value = "10m", value_parser = duration, value_name = "DURATION")]
    pub upload_timeout: Duration,
    /// Most component uploads received at once; more get 503 with Retry-After.
    #[arg(
        long,
        env = "KILN_MAX_CONCURRENT_UPLOADS",
        default_value_t = 2,
        value_name = "N"
    )]
    pub max_concurrent_uploads: usize,
}

impl LimitsArgs {
    /// The limits these flags describe.
    pub fn limits(&self) -> ServeLimits {
        ServeLimits {
            max_connections: self.max_connections.max(1),
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            request_timeout: self.request_timeout,
            upload_timeout: self.upload_timeout,
            max_concurrent_uploads: self.max_concurrent_uploads.max(1),
            ..ServeLimits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitsArgs,
    }

    #[test]
    fn defaults_match_the_library_and_durations_parse() {
        let defaults = Flags::try_parse_from(["kiln"]).unwrap().limits.limits();
        let library = ServeLimits::default();
        assert_eq!(defaults.max_connections, library.max_connections);
        assert_eq!(defaults.header_timeout, library.header_timeout);
        assert_eq!(defaults.idle_timeout, library.idle_timeout);
        assert_eq!(defaults.request_timeout, library.request_timeout);
        assert_eq!(defaults.upload_timeout, library.upload_timeout);
        assert_eq!(defaults.max_concurrent_uploads, library.max_concurrent_uploads);
        let set = Flags::try_parse_from(["kiln", "--request-timeout", "1500ms", "--idle-timeout", "2"])
            .unwrap()
            .limits;
        assert_eq!(set.request_timeout, Duration::from_millis(1500));
        assert_eq!(set.idle_timeout, Duration::from_secs(2));
        assert!(Flags::try_parse_from(["kiln", "--header-timeout", "soon"]).is_err());
        assert!(Flags::try_parse_from(["kiln", "--header-timeout", "0"]).is_err());
    }
}
