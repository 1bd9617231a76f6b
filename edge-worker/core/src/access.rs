//! Who may name which version. A version is *open* when its routing table marks it so (a
//! Production or aliased version, a rollout's target) or when it takes traffic already
//! (weight > 0); anyone may force it (`x-kiln-version`), select it (seed `model_version`,
//! OIP `/versions/{v}`) or download its bundle. Every other version (Staging, no stage,
//! kept warm at weight 0 for a rollback, rolled back, shadow only) is *restricted*: only a
//! request the host marked as coming from a [`Reader`] of that model may name it; others
//! get a 403.
//!
//! Sans-I/O like the rest of the crate: the host authenticates (`kiln serve` checks a
//! registry token) and hands the identity over in [`crate::Request::reader`]. Hosts
//! without a token store (managed nodes, the edges) never set it, so restricted versions
//! are not nameable there at all.

use crate::error::ApiError;
use crate::routing::Served;

/// The `kind` of the 403 that refuses a restricted version.
pub const RESTRICTED: &str = "restricted_version";

/// An identity the host authenticated that may read some models (on `kiln serve`: a
/// registry token of the viewer role or above).
pub trait Reader: Send + Sync {
    /// The identity's name (the token's name), for error texts and logs.
    fn name(&self) -> &str;
    /// Whether it may read `model` (its token is not limited to other models).
    fn may_read(&self, model: &str) -> bool;
}

/// How a request names a version, for the wording of the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The `x-kiln-version` header.
    Header,
    /// The request's own selector (seed `model_version`, OIP `/versions/{v}`).
    Selector,
    /// `GET /v1/models/{name}/versions/{v}/bundle`.
    Bundle,
}

impl Naming {
    fn what(self) -> &'static str {
        match self {
            Naming::Header => "forcing it with the x-kiln-version header",
            Naming::Selector => "selecting it in the request (`model_version`, `/versions/{v}`)",
            Naming::Bundle => "downloading its bundle",
        }
    }
}

/// Whether any client may name `version` (see the module docs).
pub fn is_open<T: Served + ?Sized>(version: &T) -> bool {
    version.open() || version.weight() > 0
}

/// What the host knows of a request's sender.
#[derive(Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The identity the host authenticated, if any.
    pub reader: Option<&'a dyn Reader>,
    /// Whether the request carried an `Authorization: Bearer` token at all (one the host
    /// did not accept as a reader, when `reader` is `None`).
    pub presented_token: bool,
}

impl<'a> Caller<'a> {
    /// The caller of a request with these headers, as the host authenticated it.
    pub fn of(headers: &[(String, String)], reader: Option<&'a dyn Reader>) -> Caller<'a> {
        let presented_token = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .filter_map(|(_, v)| kiln_node_api::bearer_token(v.trim()))
            .any(|t| !t.is_empty());
        Caller {
            reader,
            presented_token,
        }
    }

    /// Lets this caller name `version` of `model`, or says why not (403, kind
    /// [`RESTRICTED`]).
    pub fn may_name<T: Served + ?Sized>(
        &self,
        model: &str,
        version: &T,
        how: Naming,
    ) -> Result<(), ApiError> {
        if is_open(version) {
            return Ok(());
        }
        let v = version.version();
        let message = match self.reader {
            Some(reader) if reader.may_read(model) => return Ok(()),
            Some(reader) => format!(
                "model `{model}` version {v} is restricted (not in Production, no alias, no traffic) and the token `{}` is limited to other models, so {} is refused; use a viewer token that covers `{model}`",
                reader.name(),
                how.what()
            ),
            None if self.presented_token => format!(
                "model `{model}` version {v} is restricted (not in Production, no alias, no traffic) and the bearer token presented is not a viewer token here (unknown, expired, revoked, of the node role, or this server takes no tokens: managed nodes and edges do not), so {} is refused",
                how.what()
            ),
            None => format!(
                "model `{model}` version {v} is restricted (not in Production, no alias, no traffic): {} needs a viewer token (`Authorization: Bearer <token>`, a registry token of the viewer role or above that covers `{model}`)",
                how.what()
            ),
        };
        Err(ApiError {
            kind: Some(RESTRICTED),
            ..ApiError::new(403, message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{Backend, EdgeApp, EdgeModel};
    use crate::routes::Routes;
    use crate::{Env, Request, Response};
    use kiln_node_api::{ModelRouting, VersionRoute};
    use kiln_types::{ElementType, EngineError, ModelInfo, Tensor, TensorSpec};

    /// Answers its input: enough to see which version ran.
    struct Echo;
    impl Backend for Echo {
        fn predict(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
            Ok(inputs
                .into_iter()
                .map(|t| Tensor {
                    name: "y".into(),
                    ..t
                })
                .collect())
        }
    }

    struct Fixed;
    impl Env for Fixed {
        fn now_unix_seconds(&self) -> f64 {
            0.0
        }
        fn random_u128(&self) -> u128 {
            7
        }
    }

    /// A token limited to some models.
    struct Token(&'static [&'static str]);
    impl Reader for Token {
        fn name(&self) -> &str {
            "ci-viewer"
        }
        fn may_read(&self, model: &str) -> bool {
            self.0.contains(&model)
        }
    }

    fn model(version: u64) -> EdgeModel {
        let spec = |name: &str| TensorSpec {
            name: name.into(),
            element_type: ElementType::F32,
            shape: vec![-1, 1],
        };
        EdgeModel {
            name: "m".into(),
            version,
            digest: format!("{version:064x}"),
            info: ModelInfo {
                name: "m".into(),
                version: version.to_string(),
                source_digest: String::new(),
                inputs: vec![spec("x")],
                outputs: vec![spec("y")],
                labels: vec![],
                metadata: vec![],
            },
            backend: Box::new(Echo),
        }
    }

    /// `m`: v1 Production (100), v2 Staging (0), v3 marked open (0, a rollout's target),
    /// v4 weight 0 and unmarked (rolled back, or from a table older than the flag).
    fn app() -> EdgeApp {
        let route = |version, weight, stage: &str, open| VersionRoute {
            version,
            weight,
            stage: stage.into(),
            open,
            ..VersionRoute::default()
        };
        let mut routes = Routes::default();
        routes.models.insert(
            "m".into(),
            ModelRouting {
                versions: vec![
                    route(1, 100, "Production", true),
                    route(2, 0, "Staging", false),
                    route(3, 0, "None", true),
                    route(4, 0, "Archived", false),
                ],
                shadow: None,
                serving: None,
            },
        );
        EdgeApp::new((1..=4).map(model).collect(), routes).unwrap()
    }

    fn send(
        app: &EdgeApp,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        reader: Option<&dyn Reader>,
    ) -> Response {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        app.handle(
            &Request {
                method: "POST",
                path,
                headers: &headers,
                body: body.as_bytes(),
                reader,
            },
            &Fixed,
        )
    }

    const OIP: &str = r#"{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[1.5]}]}"#;

    fn served(r: &Response) -> String {
        assert_eq!(r.status, 200, "{:?}", r.json_body());
        r.json_body().unwrap()["model_version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn refused(r: &Response) -> String {
        assert_eq!(r.status, 403, "{:?}", r.json_body());
        let body = r.json_body().unwrap();
        assert_eq!(body["kind"], RESTRICTED);
        assert!(
            !r.headers
                .iter()
                .any(|(k, _)| k == kiln_node_api::SERVED_VERSION_HEADER),
            "a refused request names no served version"
        );
        body["error"].as_str().unwrap_or_default().to_string()
    }

    #[test]
    fn restricted_versions_are_refused_to_anonymous_requests_however_named() {
        let app = app();
        let header = [(kiln_node_api::FORCE_VERSION_HEADER, "2")];
        for r in [
            send(&app, "/v2/models/m/infer", &header, OIP, None),
            send(&app, "/v2/models/m/versions/2/infer", &[], OIP, None),
            send(&app, "/v2/models/m/versions/staging/infer", &[], OIP, None),
            send(&app, "/v2/models/m/versions/4/infer", &[], OIP, None),
            send(
                &app,
                "/v1/models/m/predict",
                &[],
                r#"{"features":[1.5],"model_version":"2"}"#,
                None,
            ),
            send(
                &app,
                "/v1/models/m/predict",
                &header,
                r#"{"features":[1.5]}"#,
                None,
            ),
        ] {
            let error = refused(&r);
            assert!(error.contains("needs a viewer token"), "{error}");
        }
        let error = refused(&send(&app, "/v2/models/m/infer", &header, OIP, None));
        assert!(error.contains("x-kiln-version"), "{error}");
        // `latest` is version 4 here: naming it by `latest` is naming it.
        refused(&send(&app, "/v2/models/m/versions/latest/infer", &[], OIP, None));
    }

    #[test]
    fn open_versions_stay_nameable_without_a_token() {
        let app = app();
        assert_eq!(served(&send(&app, "/v2/models/m/infer", &[], OIP, None)), "1");
        for (path, headers, want) in [
            ("/v2/models/m/versions/1/infer", vec![], "1"),
            ("/v2/models/m/versions/production/infer", vec![], "1"),
            ("/v2/models/m/versions/3/infer", vec![], "3"),
            (
                "/v2/models/m/infer",
                vec![(kiln_node_api::FORCE_VERSION_HEADER, "3")],
                "3",
            ),
            // A wrong token on an open version changes nothing.
            (
                "/v2/models/m/versions/1/infer",
                vec![("authorization", "Bearer nope")],
                "1",
            ),
        ] {
            assert_eq!(served(&send(&app, path, &headers, OIP, None)), want, "{path}");
        }
    }

    #[test]
    fn a_reader_of_the_model_may_name_restricted_versions_and_only_of_its_models() {
        let app = app();
        let viewer = Token(&["m"]);
        let header = [(kiln_node_api::FORCE_VERSION_HEADER, "2")];
        assert_eq!(
            served(&send(&app, "/v2/models/m/infer", &header, OIP, Some(&viewer))),
            "2"
        );
        assert_eq!(
            served(&send(
                &app,
                "/v2/models/m/versions/4/infer",
                &[],
                OIP,
                Some(&viewer)
            )),
            "4"
        );
        let other = Token(&["other"]);
        let error = refused(&send(
            &app,
            "/v2/models/m/versions/2/infer",
            &[],
            OIP,
            Some(&other),
        ));
        assert!(
            error.contains("`ci-viewer` is limited to other models"),
            "{error}"
        );
        let error = refused(&send(
            &app,
            "/v2/models/m/versions/2/infer",
            &[("authorization", "Bearer kiln_wrong")],
            OIP,
            None,
        ));
        assert!(error.contains("not a viewer token here"), "{error}");
    }

    #[test]
    fn weight_alone_opens_a_version_and_the_flag_defaults_to_restricted() {
        let old: VersionRoute = serde_json::from_str(&format!(
            r#"{{"version":2,"digest":"{}","weight":0}}"#,
            "a".repeat(64)
        ))
        .unwrap();
        assert!(
            !old.open && !old.is_open(),
            "an old table's version is restricted"
        );
        let canary = VersionRoute { weight: 5, ..old };
        assert!(canary.is_open(), "a canary that takes traffic is open");
    }
}
