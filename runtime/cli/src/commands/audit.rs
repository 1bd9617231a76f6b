//! `kiln audit ...`: the registry's hash-chained audit log, listed and verified.

use anyhow::bail;
use clap::Subcommand;
use comfy_table::{Table, presets};
use kiln_registry::AuditEntry;
use kiln_registry_server::RegistryApi;

use crate::render::{compact, trim_lines, truncate};

/// Read and check the hash-chained audit log (`kiln audit ...`).
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries, oldest first.
    Log {
        /// Only entries about this model.
        #[arg(long)]
        model: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain; exits non-zero and names the entry if the log was tampered with.
    Verify,
}

/// Runs a `kiln audit` subcommand; `verify` fails (non-zero exit) when it finds problems.
pub fn run(registry: &dyn RegistryApi, cmd: AuditCommand) -> anyhow::Result<String> {
    match cmd {
        AuditCommand::Log { model, json } => {
            let entries = registry.audit_log(model.as_deref())?;
            if json {
                return Ok(serde_json::to_string_pretty(&entries)?);
            }
            if entries.is_empty() {
                return Ok("audit log is empty".to_string());
            }
            Ok(audit_table(&entries))
        }
        AuditCommand::Verify => {
            let report = registry.verify_audit()?;
            if report.ok() {
                Ok(format!("audit log intact: {} entries", report.entries))
            } else {
                let mut msg = format!(
                    "audit log of {} failed verification ({} entries read):",
                    registry.location(),
                    report.entries
                );
                for problem in &report.problems {
                    msg.push_str("\n  - ");
                    msg.push_str(problem);
                }
                msg.push_str("\nrestore registry.db from a backup or investigate who changed it");
                bail!(msg)
            }
        }
    }
}

fn audit_table(entries: &[AuditEntry]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(["SEQ", "TIME", "ACTOR", "ACTION", "MODEL", "VERSION", "CHANGE"]);
    for e in entries {
        let change = format!("{} → {}", compact(&e.before), compact(&e.after));
        table.add_row([
            e.seq.to_string(),
            e.time.clone(),
            e.actor.clone(),
            e.action.clone(),
            e.model.clone(),
            e.version.map(|v| v.to_string()).unwrap_or_default(),
            truncate(&change, 80),
        ]);
    }
    trim_lines(&table.to_string())
}
