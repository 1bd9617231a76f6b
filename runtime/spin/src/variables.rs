//! Spin variables the way Spin resolves them: a component variable is a template over
//! application variables (`"{{ kiln_routes }}"`), and an application variable takes its
//! value from `SPIN_VARIABLE_<NAME>` in the environment, else its manifest default.

use crate::manifest::Variable;
use anyhow::bail;
use std::collections::BTreeMap;

/// Resolves every component variable; `env` looks up environment variables.
pub fn resolve(
    component_variables: &BTreeMap<String, String>,
    app_variables: &BTreeMap<String, Variable>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut app = BTreeMap::new();
    for (name, var) in app_variables {
        let key = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
        match env(&key).or_else(|| var.default.clone()) {
            Some(v) => {
                app.insert(name.clone(), v);
            }
            None if var.required => {
                bail!("application variable {name:?} is required: set {key} or give it a default")
            }
            None => {}
        }
    }
    let mut out = BTreeMap::new();
    for (name, template) in component_variables {
        out.insert(
            name.clone(),
            expand(template, &app).map_err(|e| anyhow::anyhow!("component variable {name:?}: {e}"))?,
        );
    }
    Ok(out)
}

/// Expands `{{ name }}` references.
fn expand(template: &str, app: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("unclosed `{{{{` in {template:?}"));
        };
        let name = after[..end].trim();
        match app.get(name) {
            Some(v) => out.push_str(v),
            None => {
                return Err(format!(
                    "refers to application variable {name:?}, which has no value"
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(default: Option<&str>) -> Variable {
        Variable {
            default: default.map(str::to_string),
            ..Variable::default()
        }
    }

    #[test]
    fn environment_overrides_the_default_and_templates_expand() {
        let app = BTreeMap::from([
            ("kiln_routes".to_string(), var(Some("echo=1"))),
            ("kiln_models".to_string(), var(Some("model-a=echo@1"))),
        ]);
        let comp = BTreeMap::from([
            ("kiln_routes".to_string(), "{{ kiln_routes }}".to_string()),
            (
                "both".to_string(),
                "{{kiln_models}}|{{ kiln_routes }}".to_string(),
            ),
        ]);
        let env = |k: &str| (k == "SPIN_VARIABLE_KILN_ROUTES").then(|| "echo=1:0,2:100".to_string());
        let got = resolve(&comp, &app, env).unwrap();
        assert_eq!(got["kiln_routes"], "echo=1:0,2:100");
        assert_eq!(got["both"], "model-a=echo@1|echo=1:0,2:100");
    }

    #[test]
    fn a_required_variable_without_a_value_is_an_error() {
        let app = BTreeMap::from([(
            "token".to_string(),
            Variable {
                required: true,
                ..Variable::default()
            },
        )]);
        let err = resolve(&BTreeMap::new(), &app, |_| None).unwrap_err().to_string();
        assert!(err.contains("SPIN_VARIABLE_TOKEN"), "{err}");
    }

    #[test]
    fn an_unknown_reference_is_an_error() {
        let comp = BTreeMap::from([("x".to_string(), "{{ nope }}".to_string())]);
        assert!(resolve(&comp, &BTreeMap::new(), |_| None).is_err());
    }
}
