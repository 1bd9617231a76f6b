//! GET from a running Kiln service (`kiln serve` or the sync service) with an optional
//! bearer token from a file: what `kiln monitor drift --url` and `kiln sync status --url`
//! ask. A non-200 answer is an error carrying the service's own message.

use anyhow::Context;
use std::path::Path;

use crate::tls_args::ClientTlsArgs;

/// The body of `GET {base}{path}`; `flag` names the URL's flag in errors.
pub fn get(
    base: &str,
    path: &str,
    token_file: Option<&Path>,
    tls: &ClientTlsArgs,
    flag: &str,
) -> anyhow::Result<String> {
    kiln_node_api::check_http_url(base).map_err(|e| anyhow::anyhow!("{flag} {e}"))?;
    let agent: ureq::Agent = tls
        .load()?
        .agent_config()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let target = format!("{}{path}", base.trim_end_matches('/'));
    let mut request = agent.get(&target);
    if let Some(path) = token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        request = request.header("authorization", format!("Bearer {}", token.trim()));
    }
    let mut resp = request.call().with_context(|| format!("asking {target}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {target}"))?;
    if status != 200 {
        anyhow::bail!(
            "{base} answered HTTP {status}: {}",
            kiln_node_api::error_message(&text)
        );
    }
    Ok(text)
}
