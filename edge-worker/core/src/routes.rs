//! An edge's traffic split, from configuration text (a Spin variable, a Worker var):
//! `forest=3:90,4:10;mlp=1` (version:weight, a bare version weighs 100), or the JSON of a
//! `kiln_node_api::RoutingTable` (what `kiln sync` pushes to nodes, with stages and
//! aliases), so one registry rollout drives nodes and edges alike.

use kiln_node_api::{ModelRouting, RoutingTable, VersionRoute};
use std::collections::BTreeMap;

/// Weights (and optional stages and aliases) per model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Routing by model name; models not named serve their highest version.
    pub models: BTreeMap<String, ModelRouting>,
}

impl Routes {
    /// Parses the compact text form or a routing table's JSON (text starting with `{`).
    /// Blank text means "every model serves its highest version".
    pub fn parse(text: &str) -> Result<Routes, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Routes::default());
        }
        if text.starts_with('{') {
            let table: RoutingTable =
                serde_json::from_str(text).map_err(|e| format!("routes: not a routing table: {e}"))?;
            return Ok(Routes::from_table(&table));
        }
        let mut models = BTreeMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, versions) = part
                .split_once('=')
                .ok_or_else(|| format!("routes: `{part}` should look like `model=3:90,4:10`"))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("routes: `{part}` has no model name"));
            }
            let mut routing = ModelRouting::default();
            for v in versions.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                let (version, weight) = match v.split_once(':') {
                    Some((version, weight)) => (version.trim(), weight.trim()),
                    None => (v, "100"),
                };
                let version: u64 = version
                    .parse()
                    .map_err(|_| format!("routes: model `{name}`: `{version}` is not a version number"))?;
                let weight: u32 = weight.parse().map_err(|_| {
                    format!("routes: model `{name}` version {version}: `{weight}` is not a weight")
                })?;
                if routing.versions.iter().any(|r| r.version == version) {
                    return Err(format!("routes: model `{name}` lists version {version} twice"));
                }
                routing.versions.push(VersionRoute {
                    version,
                    weight,
                    ..Default::default()
                });
            }
            if routing.versions.is_empty() {
                return Err(format!("routes: model `{name}` lists no versions"));
            }
            if routing.versions.iter().all(|r| r.weight == 0) {
                return Err(format!(
                    "routes: model `{name}`: every version has weight 0, so nothing would answer its traffic"
                ));
            }
            if models.insert(name.to_string(), routing).is_some() {
                return Err(format!("routes: model `{name}` is named twice"));
            }
        }
        Ok(Routes { models })
    }

    /// The routes of a routing table (the table's digests, stages and aliases kept).
    pub fn from_table(table: &RoutingTable) -> Routes {
        Routes {
            models: table.models.clone(),
        }
    }

    /// The compact text form (weights only), for a variable an operator edits.
    pub fn to_text(&self) -> String {
        self.models
            .iter()
            .map(|(name, r)| {
                let versions: Vec<String> = r
                    .versions
                    .iter()
                    .map(|v| format!("{}:{}", v.version, v.weight))
                    .collect();
                format!("{name}={}", versions.join(","))
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_forms_parse_to_the_same_weights() {
        let r = Routes::parse(" forest=3:90, 4:10 ; mlp=1 ").unwrap();
        assert_eq!(r.to_text(), "forest=3:90,4:10;mlp=1:100");
        assert_eq!(Routes::parse(&r.to_text()).unwrap(), r);
        let table = RoutingTable {
            generation: 7,
            models: r.models.clone(),
            readers: Vec::new(),
        };
        let json = serde_json::to_string(&table).unwrap();
        assert_eq!(Routes::parse(&json).unwrap(), r);
        assert_eq!(Routes::parse("").unwrap(), Routes::default());
        for bad in [
            "forest",
            "forest=x:1",
            "forest=3:y",
            "forest=3:0",
            "forest=3,3",
            "=3",
            "a=1;a=2",
            "{",
        ] {
            assert!(Routes::parse(bad).is_err(), "{bad}");
        }
    }
}
