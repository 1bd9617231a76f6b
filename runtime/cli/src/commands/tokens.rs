//! `kiln tokens ...`: the identities a registry server accepts. `create` prints the token
//! once (only its SHA-256 is stored); against the local `$KILN_HOME` it is how the first
//! admin token is made.

use clap::Subcommand;
use comfy_table::{Table, presets};
use kiln_registry::Role;
use kiln_registry::auth::NewToken;
use kiln_registry::duration::parse_ms;
use kiln_registry_server::RegistryApi;

use crate::render::{or_dash, trim_lines};

/// Create, list and revoke API tokens (`kiln tokens ...`).
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once.
    Create {
        /// Its name: the audit log's actor for everything done with it (e.g. ci-deploy).
        #[arg(long)]
        name: String,
        /// viewer, deployer, maintainer, admin, or node (a fleet node's join credential).
        #[arg(long)]
        role: Role,
        /// Limit it to models matching this pattern ('*' and '?' wildcards); repeat for more.
        #[arg(long = "model", value_name = "PATTERN")]
        models: Vec<String>,
        /// Lifetime: 30d, 12h, 90m (default: until revoked).
        #[arg(long)]
        expires: Option<String>,
        /// Print JSON (with the token) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Runs a `kiln tokens` command; returns what to print.
pub fn run(registry: &dyn RegistryApi, cmd: TokensCommand) -> anyhow::Result<String> {
    Ok(match cmd {
        TokensCommand::Create {
            name,
            role,
            models,
            expires,
            json,
        } => {
            let expires_in_secs = match expires.as_deref() {
                Some(text) => Some(parse_ms(text)?.div_ceil(1000)),
                None => None,
            };
            let issued = registry.create_token(&NewToken {
                name,
                role,
                models,
                expires_in_secs,
            })?;
            if json {
                return Ok(serde_json::to_string_pretty(&issued)?);
            }
            let scope = if issued.info.models.is_empty() {
                "every model".to_string()
            } else {
                format!("models {}", issued.info.models.join(", "))
            };
            // The token alone on stdout (so `> file` stores just it); the rest on stderr.
            eprintln!(
                "token '{}' ({}, {scope}, {}) created; it is shown only this once: keep it in a file and pass it with --token-file or KILN_TOKEN_FILE",
                issued.info.name,
                issued.info.role,
                issued
                    .info
                    .expires_at
                    .as_deref()
                    .map(|e| format!("expires {e}"))
                    .unwrap_or_else(|| "no expiry".into()),
            );
            issued.token.clone()
        }
        TokensCommand::List { json } => {
            let tokens = registry.tokens()?;
            if json {
                return Ok(serde_json::to_string_pretty(&tokens)?);
            }
            if tokens.is_empty() {
                return Ok("no tokens: create one with `kiln tokens create --name NAME --role ROLE`".into());
            }
            let mut t = Table::new();
            t.load_preset(presets::NOTHING);
            t.set_header([
                "NAME",
                "ROLE",
                "MODELS",
                "STATE",
                "PREFIX",
                "CREATED",
                "BY",
                "EXPIRES",
                "LAST USED",
            ]);
            for tok in &tokens {
                let i = &tok.info;
                t.add_row([
                    i.name.clone(),
                    i.role.to_string(),
                    or_dash(&i.models.join(",")).to_string(),
                    tok.state.clone(),
                    format!("{}…", i.prefix),
                    i.created_at.clone(),
                    i.created_by.clone(),
                    i.expires_at.clone().unwrap_or_else(|| "-".into()),
                    i.last_used_at.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            trim_lines(&t.to_string())
        }
        TokensCommand::Revoke { name } => {
            let info = registry.revoke_token(&name)?;
            format!("token '{}' ({}) revoked", info.name, info.role)
        }
    })
}
