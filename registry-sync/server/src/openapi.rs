//! The OpenAPI 3.1 document of the registry server, served at `/openapi.json`. Built from
//! one table of operations (method, path, role, bodies) so it lists exactly the routes
//! `server.rs` mounts; a test checks both agree and a real validator checks the document.

use serde_json::{Map, Value, json};

use crate::api::API_PREFIX;

/// One operation: method, path (below the API prefix), the least role, a summary, the
/// request body schema (if any) and the success status and schema.
pub(crate) struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub role: &'static str,
    pub summary: &'static str,
    pub request: Option<Value>,
    pub status: u16,
    pub response: Value,
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn array(item: Value) -> Value {
    json!({ "type": "array", "items": item })
}

fn obj() -> Value {
    json!({ "type": "object" })
}

/// Every route of the API but `/openapi.json`.
pub(crate) fn operations() -> Vec<Op> {
    let op = |method, path, role, summary, request: Option<Value>, status, response| Op {
        method,
        path,
        role,
        summary,
        request,
        status,
        response,
    };
    let stage_body = json!({
        "type": "object", "required": ["stage"],
        "properties": {
            "stage": { "enum": ["None", "Staging", "Production", "Archived"] },
            "archive_existing": { "type": "boolean" }
        }
    });
    vec![
        op(
            "get",
            "/whoami",
            "viewer",
            "The identity the token names",
            None,
            200,
            r("WhoAmI"),
        ),
        op(
            "get",
            "/versions",
            "viewer",
            "List versions (query `model` for one model)",
            None,
            200,
            array(r("ModelVersion")),
        ),
        op(
            "get",
            "/resolve",
            "viewer",
            "Resolve a reference (query `ref`: NAME/VERSION, NAME/STAGE, NAME/latest, NAME@ALIAS)",
            None,
            200,
            r("ModelVersion"),
        ),
        op(
            "put",
            "/models/{name}/components/{digest}",
            "deployer",
            "Upload a component (raw bytes; `digest` is sha256:<hex> of them)",
            Some(json!({ "type": "string", "contentMediaType": "application/wasm" })),
            201,
            obj(),
        ),
        op(
            "post",
            "/models/{name}/versions",
            "deployer",
            "Register an uploaded component as a version",
            Some(r("Registration")),
            200,
            r("Registered"),
        ),
        op(
            "delete",
            "/models/{name}/versions/{version}",
            "maintainer",
            "Delete a version (query `force=true` for a Production one)",
            None,
            200,
            obj(),
        ),
        op(
            "get",
            "/models/{name}/versions/{version}/golden",
            "viewer",
            "Golden request/response pairs",
            None,
            200,
            array(obj()),
        ),
        op(
            "get",
            "/models/{name}/versions/{version}/component",
            "viewer",
            "The version's component (application/wasm, checked against its digest, streamed; the digest in x-kiln-digest)",
            None,
            200,
            json!({ "type": "string", "format": "binary" }),
        ),
        op(
            "get",
            "/models/{name}/versions/{version}/reference",
            "viewer",
            "The version's reference profile for drift (null when it has none)",
            None,
            200,
            json!({ "anyOf": [r("ReferenceProfile"), { "type": "null" }] }),
        ),
        op(
            "put",
            "/models/{name}/versions/{version}/reference",
            "deployer",
            "Set the version's reference profile for drift (`kiln monitor reference set`)",
            Some(r("ReferenceProfile")),
            200,
            r("ReferenceProfile"),
        ),
        op(
            "put",
            "/models/{name}/versions/{version}/stage",
            "deployer",
            "Move a version to a stage (to or from Production: maintainer)",
            Some(stage_body),
            200,
            r("StageTransition"),
        ),
        op(
            "put",
            "/models/{name}/versions/{version}/description",
            "deployer",
            "Replace the description",
            Some(
                json!({ "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } }),
            ),
            200,
            obj(),
        ),
        op(
            "put",
            "/models/{name}/versions/{version}/tags/{key}",
            "deployer",
            "Set a tag",
            Some(
                json!({ "type": "object", "required": ["value"], "properties": { "value": { "type": "string" } } }),
            ),
            200,
            obj(),
        ),
        op(
            "delete",
            "/models/{name}/versions/{version}/tags/{key}",
            "deployer",
            "Remove a tag",
            None,
            200,
            obj(),
        ),
        op(
            "put",
            "/models/{name}/aliases/{alias}",
            "deployer",
            "Point an alias at a version (`champion`: maintainer)",
            Some(
                json!({ "type": "object", "required": ["version"], "properties": { "version": { "type": "integer", "minimum": 1 } } }),
            ),
            200,
            r("ModelVersion"),
        ),
        op(
            "delete",
            "/models/{name}/aliases/{alias}",
            "deployer",
            "Delete an alias (`champion`: maintainer)",
            None,
            200,
            obj(),
        ),
        op(
            "get",
            "/audit",
            "viewer",
            "The audit log, oldest first (query `model` for one model)",
            None,
            200,
            array(r("AuditEntry")),
        ),
        op(
            "get",
            "/audit/verify",
            "viewer",
            "Check the audit hash chain",
            None,
            200,
            json!({ "type": "object", "properties": { "entries": { "type": "integer" }, "problems": array(json!({ "type": "string" })) } }),
        ),
        op(
            "get",
            "/rollouts",
            "viewer",
            "Rollouts (query `model` for one model)",
            None,
            200,
            array(r("Rollout")),
        ),
        op(
            "post",
            "/rollouts/{name}",
            "deployer",
            "Start a rollout",
            Some(
                json!({ "type": "object", "required": ["to"], "properties": { "to": { "type": "integer" }, "plan": r("PlanOverrides") } }),
            ),
            201,
            r("Rollout"),
        ),
        op(
            "post",
            "/rollouts/{name}/{action}",
            "deployer",
            "pause or resume (deployer); promote, abort or rollback (maintainer)",
            None,
            200,
            obj(),
        ),
        op(
            "put",
            "/rollouts/{name}/policy",
            "maintainer",
            "Set the model's rollout policy",
            Some(r("PlanOverrides")),
            200,
            obj(),
        ),
        op(
            "delete",
            "/rollouts/{name}/policy",
            "maintainer",
            "Clear the model's rollout policy",
            None,
            200,
            json!({ "type": "null" }),
        ),
        op(
            "get",
            "/fleet",
            "viewer",
            "Nodes, routing generation, active rollouts",
            None,
            200,
            obj(),
        ),
        op(
            "put",
            "/fleet/nodes/{name}",
            "admin",
            "Add or re-point a config node",
            Some(
                json!({ "type": "object", "required": ["url"], "properties": { "url": { "type": "string" } } }),
            ),
            200,
            obj(),
        ),
        op(
            "delete",
            "/fleet/nodes/{name}",
            "admin",
            "Stop managing a node",
            None,
            200,
            obj(),
        ),
        op(
            "post",
            "/fleet/nodes/{name}/reset",
            "admin",
            "Let the sync service replace the table of a node that serves a higher routing generation (audited)",
            None,
            200,
            obj(),
        ),
        op(
            "post",
            "/gitops/{mode}",
            "viewer",
            "`plan` (viewer) or `apply` (maintainer; admin when it changes nodes) a GitOps file",
            Some(
                json!({ "type": "object", "required": ["toml"], "properties": { "toml": { "type": "string" } } }),
            ),
            200,
            array(obj()),
        ),
        op(
            "get",
            "/tokens",
            "admin",
            "List tokens (never their secrets)",
            None,
            200,
            array(r("TokenInfo")),
        ),
        op(
            "post",
            "/tokens",
            "admin",
            "Create a token; the answer holds its secret, shown once",
            Some(r("NewToken")),
            201,
            obj(),
        ),
        op(
            "delete",
            "/tokens/{name}",
            "admin",
            "Revoke a token",
            None,
            200,
            r("TokenInfo"),
        ),
    ]
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let opt_string = json!({ "type": ["string", "null"] });
    json!({
        "Error": {
            "type": "object", "required": ["error", "kind"],
            "properties": { "error": string, "kind": string }
        },
        "WhoAmI": {
            "type": "object", "required": ["name", "role", "models"],
            "properties": { "name": string, "role": r("Role"), "models": array(string.clone()) }
        },
        "Role": { "enum": ["viewer", "deployer", "maintainer", "admin", "node"] },
        "ModelVersion": {
            "type": "object", "required": ["name", "version", "stage", "digest"],
            "properties": {
                "name": string, "version": { "type": "integer" },
                "stage": { "enum": ["None", "Staging", "Production", "Archived"] },
                "digest": string, "aliases": array(string.clone()), "description": string,
                "tags": { "type": "object", "additionalProperties": string },
                "lineage": {}, "signature": {}, "size": { "type": "integer" },
                "source_digest": opt_string, "created_at": string
            }
        },
        "ReferenceProfile": {
            "type": "object", "required": ["features", "rows", "source", "profile"],
            "properties": {
                "features": array(string.clone()), "rows": { "type": "integer" }, "source": string,
                "profile": { "type": "string", "description": "kiln-monitor's ModelProfile as JSON text" },
                "created_at": string, "created_by": string
            }
        },
        "StageTransition": {
            "type": "object",
            "properties": { "version": r("ModelVersion"), "previous": string, "archived": array(json!({ "type": "integer" })) }
        },
        "Registration": {
            "type": "object", "required": ["component_digest"],
            "properties": {
                "component_digest": string, "source_digest": opt_string, "description": string,
                "tags": { "type": "object", "additionalProperties": string },
                "lineage": { "type": "object" }, "signature": {}, "golden": array(obj())
            }
        },
        "Registered": {
            "type": "object", "required": ["version", "created"],
            "properties": { "version": r("ModelVersion"), "created": { "type": "boolean" } }
        },
        "AuditEntry": {
            "type": "object",
            "properties": {
                "seq": { "type": "integer" }, "time": string, "actor": string, "action": string,
                "model": string, "version": { "type": ["integer", "null"] }, "before": {}, "after": {},
                "prev_hash": string, "hash": string
            }
        },
        "Rollout": { "type": "object", "properties": { "id": { "type": "integer" }, "model": string, "state": string } },
        "PlanOverrides": {
            "type": "object",
            "properties": {
                "strategy": opt_string, "steps": { "type": ["array", "null"], "items": { "type": "integer" } },
                "interval": opt_string, "max_error_rate": { "type": ["number", "null"] },
                "max_error_rate_increase": { "type": ["number", "null"] }, "max_p99": opt_string,
                "max_disagreement": { "type": ["number", "null"] },
                "max_prediction_drift": { "type": ["number", "null"] }, "min_requests": { "type": ["integer", "null"] },
                "max_consecutive_errors": { "type": ["integer", "null"] }, "max_pause": opt_string,
                "max_node_downtime": opt_string
            }
        },
        "NewToken": {
            "type": "object", "required": ["name", "role"],
            "properties": {
                "name": string, "role": r("Role"), "models": array(string.clone()),
                "expires_in_secs": { "type": ["integer", "null"] }
            }
        },
        "TokenInfo": {
            "type": "object",
            "properties": {
                "name": string, "role": r("Role"), "models": array(string.clone()), "prefix": string,
                "created_at": string, "created_by": string, "expires_at": opt_string,
                "revoked_at": opt_string, "last_used_at": opt_string
            }
        }
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": r("Error") } }
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in operations() {
        let full = format!("{API_PREFIX}{}", op.path);
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({
                    "name": name, "in": "path", "required": true,
                    "schema": if name == "version" { json!({ "type": "integer", "minimum": 1 }) } else { json!({ "type": "string" }) }
                })
            })
            .collect();
        let mut operation = json!({
            "summary": op.summary,
            "description": format!("Needs the {} role (or a higher one).", op.role),
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}'], "_")),
            "parameters": params,
            "responses": {
                op.status.to_string(): {
                    "description": "success",
                    "content": { "application/json": { "schema": op.response } }
                },
                "400": error_response("malformed request"),
                "401": error_response("no token, or an unknown, expired or revoked one"),
                "403": error_response("the token's role or model scope does not allow this"),
                "404": error_response("no such model, version, alias, rollout, node or token"),
                "409": error_response("conflicts with the current state"),
                "422": error_response("invalid values"),
                "408": error_response("the request (its body included) took longer than --request-timeout (--upload-timeout for uploads); the connection is closed"),
                "500": error_response("the registry failed; the server's log has the reference")
            }
        });
        if op.path.ends_with("/component") {
            let status = op.status.to_string();
            operation["responses"][status.as_str()] = json!({
                "description": "success: the component's bytes",
                "headers": { "x-kiln-digest": { "description": "sha256:<hex> of the bytes", "schema": { "type": "string" } } },
                "content": { "application/wasm": { "schema": op.response } }
            });
        }
        if op.request.is_some() {
            operation["responses"]["413"] =
                error_response("the body is over the server's limit (--max-upload-mib for components)");
        }
        if op.path.contains("/components/") && op.request.is_some() {
            operation["responses"]["503"] = json!({
                "description": "overloaded (`kind`: `overloaded`): more uploads at once than --max-concurrent-uploads; retry after the delay given",
                "headers": { "Retry-After": { "description": "seconds to wait", "schema": { "type": "integer" } } },
                "content": { "application/json": { "schema": r("Error") } }
            });
        }
        if let Some(schema) = op.request {
            let media = if op.path.contains("/components/") {
                "application/octet-stream"
            } else {
                "application/json"
            };
            operation["requestBody"] = json!({
                "required": true,
                "content": { media: { "schema": schema } }
            });
        }
        let entry = paths.entry(full).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Kiln registry server",
            "version": kiln_types::KILN_VERSION,
            "description": "Every registry, rollout, GitOps, fleet-node and token operation of Kiln. Every route needs `Authorization: Bearer <token>`; tokens are created with `kiln tokens create` and carry one role: viewer < deployer < maintainer < admin."
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } }
        },
        "security": [{ "token": [] }],
        "paths": paths
    })
}
