//! Kiln's Cloudflare Worker under workerd. The Worker is built once per test run by
//! `edge-worker/cloudflare/build.sh` into `target/wasm-js/kiln-cloudflare` (the browser
//! package shares `target/wasm-js` and its RUSTFLAGS, so tract is compiled once for both);
//! a file lock keeps concurrent test processes from building it twice at once. Each test
//! then deploys it with its own model bundles and variables into a fresh `workerd` (the
//! npm package's binary, from `npm ci` in `edge-worker/cloudflare`) on 127.0.0.1.

use crate::kiln_process::{Server, free_port};
use kiln_cloudflare::manifest::{self, ModelEntry};
use kiln_engine::{Bundle, BundleConfig, LoadOptions};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `edge-worker/cloudflare`.
pub fn worker_dir() -> PathBuf {
    crate::root().join("edge-worker").join("cloudflare")
}

/// The directory holding the built `shim.mjs` and `index.wasm`, built if needed.
pub fn build_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let out = crate::root()
        .join("target")
        .join("wasm-js")
        .join("kiln-cloudflare");
    crate::build_wasm_js(
        &worker_dir().join("build.sh"),
        ".kiln-cloudflare.lock",
        &[("KILN_WORKER_OUT", &out)],
        "`rustup target add wasm32-unknown-unknown`, `cargo install wasm-bindgen-cli --version 0.2.130` \
         and `npm ci` in edge-worker/cloudflare",
    );
    for f in ["shim.mjs", "index.wasm"] {
        assert!(
            out.join(f).is_file(),
            "build.sh wrote no {f} in {}",
            out.display()
        );
    }
    out
}

/// The `workerd` binary that `npm ci` installed beside the Worker.
pub fn workerd_bin() -> PathBuf {
    let bin = worker_dir().join("node_modules/@cloudflare/workerd-linux-64/bin/workerd");
    assert!(
        bin.is_file(),
        "{} is missing: run `npm ci` in edge-worker/cloudflare (.ci/run does)",
        bin.display()
    );
    bin
}

/// An example model as a Kiln bundle, loaded with default options (as `kiln serve` and
/// `kiln compile` do) under `name`, version label `version`.
pub fn example_bundle(example: &str, name: &str, version: u64) -> Vec<u8> {
    bundle(crate::onnx(example), name, version)
}

/// ONNX bytes as a Kiln bundle (default load options) under `name`, version label `version`.
pub fn bundle(onnx: Vec<u8>, name: &str, version: u64) -> Vec<u8> {
    Bundle {
        config: BundleConfig {
            options: LoadOptions {
                name: name.to_string(),
                version: version.to_string(),
                ..LoadOptions::default()
            },
        },
        onnx,
    }
    .encode()
}

/// One bundle deployed with the Worker.
#[derive(Clone)]
pub struct Deployed {
    /// What `KILN_MODELS` says about it (the SHA-256 it must have).
    pub entry: ModelEntry,
    /// The bytes actually deployed as its data module.
    pub bytes: Vec<u8>,
}

impl Deployed {
    /// A bundle whose `KILN_MODELS` entry carries its true SHA-256.
    pub fn new(name: &str, version: u64, bytes: Vec<u8>) -> Deployed {
        Deployed {
            entry: ModelEntry {
                name: name.to_string(),
                version,
                sha256: kiln_types::digest(&bytes),
            },
            bytes,
        }
    }

    /// An example's bundle (see [`example_bundle`]).
    pub fn example(example: &str, name: &str, version: u64) -> Deployed {
        Deployed::new(name, version, example_bundle(example, name, version))
    }
}

/// `KILN_MODELS` for a set of bundles.
pub fn models_var(models: &[Deployed]) -> String {
    manifest::to_text(&models.iter().map(|m| m.entry.clone()).collect::<Vec<_>>())
}

fn capnp_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The Worker running in its own workerd, deleted with its files when dropped.
pub struct Workerd {
    pub server: Server,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Workerd {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Workerd {
    /// Deploys the Worker with `models` (bundles as data modules under `models/`) and
    /// `KILN_MODELS` set from them, plus the extra `vars`, and waits until it answers.
    pub fn start(models: &[Deployed], vars: &[(&str, &str)]) -> Workerd {
        Workerd::deploy(models, None, vars)
    }

    /// Like [`Workerd::start`], but `KILN_MODELS` also names `undeployed`, whose bundle
    /// is not part of the deployment.
    pub fn start_with_undeployed(models: &[Deployed], undeployed: &ModelEntry) -> Workerd {
        Workerd::deploy(models, Some(undeployed), &[])
    }

    fn deploy(models: &[Deployed], undeployed: Option<&ModelEntry>, vars: &[(&str, &str)]) -> Workerd {
        let mut listed: Vec<ModelEntry> = models.iter().map(|m| m.entry.clone()).collect();
        listed.extend(undeployed.cloned());
        let models_var = manifest::to_text(&listed);
        let mut all_vars = vec![(manifest::MODELS_VAR, models_var.as_str())];
        all_vars.extend_from_slice(vars);
        let dir = tempfile::tempdir().expect("temp dir");
        let models_dir = dir.path().join("models");
        std::fs::create_dir_all(&models_dir).expect("creating models/");
        for m in models {
            std::fs::write(models_dir.join(m.entry.file_name()), &m.bytes).expect("writing a bundle");
        }
        let entries: Vec<ModelEntry> = models.iter().map(|m| m.entry.clone()).collect();
        std::fs::write(
            models_dir.join("kiln-models.mjs"),
            manifest::bundles_module(&entries, "./"),
        )
        .expect("writing kiln-models.mjs");
        Workerd::start_dir(dir, &entries, &all_vars)
    }

    /// Deploys the Worker with the bundles found in `dir/models` (and its
    /// `models/kiln-models.mjs`, as `kiln export cloudflare` writes them) and `vars`.
    pub fn start_dir(dir: tempfile::TempDir, entries: &[ModelEntry], vars: &[(&str, &str)]) -> Workerd {
        let build = build_dir();
        // workerd embeds files relative to its config (an absolute path would be looked
        // up among capnp's import paths), so the build is linked in beside the models.
        let linked = dir.path().join("worker");
        std::fs::create_dir_all(&linked).expect("creating worker/");
        for f in ["shim.mjs", "index.wasm"] {
            std::os::unix::fs::symlink(build.join(f), linked.join(f)).expect("linking the Worker build");
        }
        let addr = format!("127.0.0.1:{}", free_port());
        let mut modules = vec![
            "(name = \"worker/shim.mjs\", esModule = embed \"worker/shim.mjs\")".to_string(),
            "(name = \"worker/index.wasm\", wasm = embed \"worker/index.wasm\")".to_string(),
            "(name = \"models/kiln-models.mjs\", esModule = embed \"models/kiln-models.mjs\")".to_string(),
        ];
        for e in entries {
            modules.push(format!(
                "(name = {}, data = embed {})",
                capnp_string(&e.module_name()),
                capnp_string(&e.module_name())
            ));
        }
        let bindings: Vec<String> = vars
            .iter()
            .map(|(k, v)| format!("(name = {}, text = {})", capnp_string(k), capnp_string(v)))
            .collect();
        let config = format!(
            "using Workerd = import \"/workerd/workerd.capnp\";\n\
             const config :Workerd.Config = (\n  services = [ (name = \"kiln\", worker = .kiln) ],\n  \
             sockets = [ (name = \"http\", address = {}, http = (), service = \"kiln\") ],\n);\n\
             const kiln :Workerd.Worker = (\n  modules = [\n    {}\n  ],\n  bindings = [\n    {}\n  ],\n  \
             compatibilityDate = \"2026-04-01\",\n);\n",
            capnp_string(&addr),
            modules.join(",\n    "),
            bindings.join(",\n    "),
        );
        let config_path = dir.path().join("kiln.capnp");
        std::fs::write(&config_path, config).expect("writing the workerd config");
        let mut cmd = Command::new(workerd_bin());
        cmd.arg("serve").arg(&config_path).arg("--verbose");
        let server = Server::spawn_command(cmd, &addr);
        let w = Workerd { server, _dir: dir };
        w.wait_answering(Duration::from_secs(60));
        w
    }

    /// Waits until the Worker answers HTTP at all (a Worker that refused its bundles
    /// answers 503, which is what some tests want to see).
    fn wait_answering(&self, limit: Duration) {
        let started = Instant::now();
        while self.server.try_get("/v2/health/live").is_none() {
            assert!(
                started.elapsed() < limit,
                "workerd did not answer within {limit:?}:\n{}",
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
