//! The Redis backend: GET and SET with PX expiry over one multiplexed connection, opened
//! lazily and reopened after a transport failure, every call bounded by a timeout and
//! guarded by a circuit breaker.

use super::key::CacheKey;
use anyhow::Context as _;
use kiln_node_api::breaker::{Admit, Breaker, BreakerPolicy, Opened};
use kiln_node_api::tls::ClientTls;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisError};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub(super) enum RedisGet {
    Hit(Vec<u8>),
    Miss,
    Unavailable,
}

pub(super) struct RedisBackend {
    client: Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Serializes reconnects so that a burst of requests opens one connection, not many.
    connecting: tokio::sync::Mutex<()>,
    ttl_ms: u64,
    timeout: Duration,
    breaker: Breaker,
    /// `rediss://host:port` for TLS failures' messages (never the password), else `None`.
    tls_origin: Option<String>,
}

enum Failure {
    /// Refused without a call.
    BreakerOpen,
    /// Redis answered with an error; the server is up.
    Server(RedisError),
    /// No answer: connection refused or dropped, or the timeout passed.
    Transport,
}

impl RedisBackend {
    pub(super) fn new(
        url: &str,
        tls: &ClientTls,
        ttl: Duration,
        timeout: Duration,
        policy: BreakerPolicy,
    ) -> anyhow::Result<RedisBackend> {
        // Parses the URL only; the connection is opened on first use, so a Redis that is
        // down at startup does not stop the node from serving.
        let (client, tls_origin) = if url.starts_with("rediss://") {
            // redis builds its own rustls configuration from the process default provider.
            kiln_node_api::tls::install_default_provider();
            let certificates = redis::TlsCertificates {
                client_tls: tls.client_identity_pem().map(|(client_cert, client_key)| {
                    redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }
                }),
                root_cert: tls.roots_pem(),
            };
            let client = Client::build_with_tls(url, certificates)
                .with_context(|| "prediction cache: invalid rediss:// URL or TLS settings".to_string())?;
            let origin = format!("rediss://{}", client.get_connection_info().addr);
            (client, Some(origin))
        } else {
            let client =
                Client::open(url).with_context(|| format!("prediction cache: invalid Redis URL {url:?}"))?;
            (client, None)
        };
        Ok(RedisBackend {
            tls_origin,
            client,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            // PX 0 is an error in Redis; a TTL under 1 ms is rounded up.
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            timeout,
            breaker: Breaker::new(policy, timeout * 4),
        })
    }

    pub(super) fn healthy(&self) -> bool {
        self.breaker.is_closed()
    }

    /// False while the breaker is open: a store would only be refused.
    pub(super) fn admits_store(&self) -> bool {
        self.breaker.is_closed()
    }

    pub(super) async fn get(&self, key: &CacheKey) -> RedisGet {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key.redis_key());
        match self.query::<Option<Vec<u8>>>(&cmd).await {
            Ok(Some(bytes)) => RedisGet::Hit(bytes),
            Ok(None) => RedisGet::Miss,
            Err(Failure::Server(e)) => {
                tracing::debug!(error = %e, "prediction cache GET refused by Redis");
                RedisGet::Unavailable
            }
            Err(_) => RedisGet::Unavailable,
        }
    }

    pub(super) async fn put(&self, key: &CacheKey, value: Vec<u8>) -> Result<(), ()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key.redis_key()).arg(value).arg("PX").arg(self.ttl_ms);
        match self.query::<()>(&cmd).await {
            Ok(()) => Ok(()),
            Err(Failure::Server(e)) => {
                // Typically OOM under `maxmemory` with a no-eviction policy.
                tracing::debug!(error = %e, "prediction cache SET refused by Redis");
                Err(())
            }
            Err(_) => Err(()),
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Failure> {
        let probe = match self.breaker.admit() {
            Admit::Reject => return Err(Failure::BreakerOpen),
            Admit::Probe => true,
            Admit::Call => false,
        };
        let call = async {
            let mut conn = self.connection().await?;
            cmd.query_async::<T>(&mut conn).await
        };
        let error = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.succeeded();
                return Ok(value);
            }
            Ok(Err(e)) if !is_transport_error(&e) => {
                self.succeeded();
                return Err(Failure::Server(e));
            }
            Ok(Err(e)) => {
                // The connection is broken (refused, reset, closed): open a new one next time.
                self.lock_conn().take();
                self.tls_origin
                    .as_deref()
                    .and_then(|origin| kiln_node_api::tls::describe_error(origin, &e))
                    .unwrap_or_else(|| e.to_string())
            }
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        match self.breaker.record_failure(probe) {
            Some(Opened::Now { failures, cooldown }) => tracing::warn!(
                error,
                failures,
                cooldown_ms = cooldown.as_millis() as u64,
                "prediction cache backend failing; circuit breaker open, serving uncached"
            ),
            Some(Opened::Again { cooldown }) => tracing::debug!(
                error,
                cooldown_ms = cooldown.as_millis() as u64,
                "prediction cache probe failed; circuit breaker stays open"
            ),
            None => {}
        }
        if !self.breaker.is_closed() {
            // A connection that only times out may be stuck (a black-holed peer): start over.
            self.lock_conn().take();
        }
        Err(Failure::Transport)
    }

    fn succeeded(&self) {
        if self.breaker.record_success() {
            tracing::info!("prediction cache backend is back; circuit breaker closed");
        }
    }

    fn lock_conn(&self) -> MutexGuard<'_, Option<MultiplexedConnection>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.lock_conn().clone() {
            return Ok(conn);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(conn) = self.lock_conn().clone() {
            return Ok(conn);
        }
        let config = AsyncConnectionConfig::new().set_connection_timeout(self.timeout);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.lock_conn() = Some(conn.clone());
        Ok(conn)
    }
}

fn is_transport_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}
