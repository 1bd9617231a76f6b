//! `kiln serve`'s backpressure and fallback flags: the JSON body limit, the node's body
//! bytes in flight, each model's bulkhead, and each model's fallback.

use anyhow::Context;
use kiln_serve::{Fallback, Limits, ServeConfig};
use std::collections::HashMap;
use std::path::Path;

/// Backpressure and fallback flags.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Largest JSON part of an inference request, in MiB (413 above; send large tensors
    /// with the OIP binary tensor extension, which --max-request-mib bounds).
    #[arg(long, env = "KILN_MAX_JSON_MIB", default_value_t = 16)]
    pub max_json_mib: usize,
    /// Request-body MiB being read, parsed or run at once on this server; a request that
    /// would pass it is shed with 503 `overloaded` (0: no limit).
    #[arg(long, env = "KILN_MAX_BODY_MIB_IN_FLIGHT", default_value_t = 256)]
    pub max_body_mib_in_flight: usize,
    /// Every model's bulkhead, `CALLS[:QUEUE]`: calls running at once, and calls waiting
    /// (default: the idle instances kept per model or the CPU count, whichever is larger,
    /// and a queue 8 times that).
    #[arg(long, env = "KILN_MAX_CONCURRENT_CALLS", value_name = "CALLS[:QUEUE]")]
    pub max_concurrent_calls: Option<Limits>,
    /// One model's bulkhead, `MODEL=CALLS[:QUEUE]` (repeatable).
    #[arg(long = "bulkhead", value_name = "MODEL=CALLS[:QUEUE]")]
    pub bulkheads: Vec<String>,
    /// One model's fallback when its version fails (trap, timeout, memory cap, model or
    /// host error): `MODEL=previous` (another version this server serves) or
    /// `MODEL=FILE.json` (fixed outputs, `{"outputs": {"NAME": [one row]}}`); repeatable.
    #[arg(long = "fallback", value_name = "MODEL=previous|FILE")]
    pub fallbacks: Vec<String>,
}

impl LoadArgs {
    /// Sets these flags' fields of `config`.
    pub fn apply(&self, config: &mut ServeConfig) -> anyhow::Result<()> {
        config.max_json_bytes = self.max_json_mib.max(1) << 20;
        config.max_body_bytes_in_flight = self.max_body_mib_in_flight << 20;
        config.bulkhead = self.max_concurrent_calls;
        config.bulkheads = self.bulkheads()?;
        config.fallbacks = self.fallbacks()?;
        Ok(())
    }

    fn bulkheads(&self) -> anyhow::Result<HashMap<String, Limits>> {
        let mut all = HashMap::new();
        for flag in &self.bulkheads {
            let (model, limits) = split(flag, "--bulkhead")?;
            let limits: Limits = limits
                .parse()
                .map_err(|e| anyhow::anyhow!("--bulkhead {flag}: {e}"))?;
            all.insert(model.to_string(), limits);
        }
        Ok(all)
    }

    fn fallbacks(&self) -> anyhow::Result<HashMap<String, Fallback>> {
        let mut all = HashMap::new();
        for flag in &self.fallbacks {
            let (model, value) = split(flag, "--fallback")?;
            let fallback = if value == "previous" {
                Fallback::Previous
            } else {
                let path = Path::new(value);
                let json = std::fs::read(path)
                    .with_context(|| format!("--fallback {flag}: reading {}", path.display()))?;
                Fallback::fixed_from_json(&json).map_err(|e| anyhow::anyhow!("--fallback {flag}: {e}"))?
            };
            all.insert(model.to_string(), fallback);
        }
        Ok(all)
    }
}

fn split<'a>(flag: &'a str, name: &str) -> anyhow::Result<(&'a str, &'a str)> {
    flag.split_once('=')
        .filter(|(m, v)| !m.is_empty() && !v.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{name} {flag}: use MODEL=VALUE"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        load: LoadArgs,
    }

    #[test]
    fn flags_set_bulkheads_and_fallbacks_per_model() {
        let dir = tempfile::tempdir().unwrap();
        let fixed = dir.path().join("fixed.json");
        std::fs::write(&fixed, r#"{"outputs": {"label": [0]}}"#).unwrap();
        let flags = Flags::try_parse_from([
            "kiln".to_string(),
            "--max-concurrent-calls".into(),
            "3".into(),
            "--bulkhead".into(),
            "iris=1:2".into(),
            "--fallback".into(),
            "iris=previous".into(),
            "--fallback".into(),
            format!("mlp={}", fixed.display()),
            "--max-json-mib".into(),
            "2".into(),
        ])
        .unwrap();
        let mut config = ServeConfig::default();
        flags.load.apply(&mut config).unwrap();
        assert_eq!(config.max_json_bytes, 2 << 20);
        assert_eq!(config.bulkhead.unwrap().max_concurrent, 3);
        assert_eq!(config.bulkheads["iris"].max_queue, 2);
        assert_eq!(config.fallbacks["iris"], Fallback::Previous);
        assert!(matches!(config.fallbacks["mlp"], Fallback::Fixed(_)));
        let bad = Flags::try_parse_from(["kiln", "--bulkhead", "iris"]).unwrap();
        assert!(bad.load.apply(&mut ServeConfig::default()).is_err());
    }
}
