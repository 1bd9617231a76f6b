//! The wasmtime host of one `kiln` command, created on first use.

use kiln_host::{Host, HostConfig};
use std::sync::{Arc, OnceLock};

/// The wasmtime host, created on first use: registry commands other than `register` (and
/// a sync service that never imports from MLflow) need no engine.
pub struct LazyHost {
    config: HostConfig,
    cell: OnceLock<Arc<Host>>,
}

impl LazyHost {
    /// A host with `config`, not created yet.
    pub fn new(config: HostConfig) -> LazyHost {
        LazyHost {
            config,
            cell: OnceLock::new(),
        }
    }

    /// The host, created now if it was not.
    pub fn get(&self) -> anyhow::Result<Arc<Host>> {
        if let Some(h) = self.cell.get() {
            return Ok(Arc::clone(h));
        }
        let h = Arc::new(Host::new(self.config.clone())?);
        Ok(Arc::clone(self.cell.get_or_init(|| h)))
    }
}
