//! Helpers shared by the registry integration tests.
#![allow(dead_code, unused_imports)]

use kiln_registry::Registry;
pub use kiln_registry::testing::{new_version, open, register};

/// Raw SQL access to the registry database, as an attacker or a crash would have.
pub fn raw(registry: &Registry) -> rusqlite::Connection {
    rusqlite::Connection::open(registry.home().join("registry.db")).expect("open raw connection")
}
