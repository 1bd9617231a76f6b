//! `kiln up`: the main job. On an empty `$KILN_HOME` it compiles, registers and promotes
//! the bundled example models, then serves them as `kiln serve` does.

use kiln_host::Host;
use kiln_registry::Registry;
use std::sync::Arc;

use super::serve::{self, ServeArgs};

/// Bootstraps the examples (reusing what the registry holds) and serves.
pub fn run(host: Arc<Host>, registry: Arc<Registry>, args: &ServeArgs) -> anyhow::Result<()> {
    let actor = kiln_registry::Identity::local().name;
    for b in crate::bootstrap::bootstrap(&host, &registry, &actor)? {
        eprintln!(
            "{} {}/{}",
            if b.reused {
                "reusing"
            } else {
                "registered and promoted"
            },
            b.name,
            b.version
        );
    }
    serve::run(host, registry, args, true)
}
