//! The ONNX node-test data: generating it with the `onnx` package and finding cases.

use super::*;

/// Writes the node cases with the `onnx` package's own generator. `cmd_tools
/// generate-data` only writes the model cases (`real`, `simple`) in onnx 1.23, so this
/// hands it the node cases instead. Writes into `argv[1]`, prints the onnx version.
const GENERATE_SCRIPT: &str = r#"
import argparse, sys, warnings
warnings.simplefilter("ignore")
import onnx
import onnx.backend.test.cmd_tools as tools
import onnx.backend.test.case.model as model_cases
import onnx.backend.test.case.node as node_cases
cases = node_cases.collect_testcases()
model_cases.collect_testcases = lambda: cases
tools.generate_data(argparse.Namespace(output=sys.argv[1]))
print(onnx.__version__)
"#;

/// `$KILN_ONNX_NODE_TESTS`, else `<workspace>/target/onnx-node-tests`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("KILN_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target").join("onnx-node-tests"))
}

/// Makes sure `dir/node` holds the node cases, generating them (a few seconds, ~56 MB)
/// with `python3` (or `$KILN_PYTHON`) and the `onnx` package when missing.
pub fn ensure_data(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let node = dir.join("node");
    if node.is_dir() {
        return Ok(());
    }
    let python = std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python).args(["-c", "import onnx"]).output().with_context(|| {
        format!("running `{python}` to generate the ONNX node test data (set KILN_PYTHON to another interpreter)")
    })?;
    if !probe.status.success() {
        anyhow::bail!(
            "`{python}` cannot import the `onnx` package, which generates the ONNX node test data: \
             pip install onnx (or point KILN_PYTHON at an interpreter that has it); {}",
            last_line(&String::from_utf8_lossy(&probe.stderr))
        );
    }
    // Generate next to the final place and rename, so a run that is interrupted (or
    // races another) never leaves a half-written `node` directory behind.
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = dir.join(format!(".generating-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new(&python)
        .args(["-c", GENERATE_SCRIPT])
        .arg(&partial)
        .output()
        .with_context(|| format!("running `{python}` to generate the ONNX node test data"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        anyhow::bail!(
            "generating the ONNX node test data into {} failed: {}",
            dir.display(),
            last_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let _ = std::fs::write(partial.join("onnx-version.txt"), format!("{version}\n"));
    let renamed = std::fs::rename(partial.join("node"), &node);
    if let Err(e) = renamed
        && !node.is_dir()
    {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e).with_context(|| format!("moving the generated cases into {}", node.display()));
    }
    let _ = std::fs::rename(partial.join("onnx-version.txt"), dir.join("onnx-version.txt"));
    let _ = std::fs::remove_dir_all(&partial);
    Ok(())
}

/// The onnx version that generated the data, if recorded.
pub fn data_onnx_version(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("onnx-version.txt"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Directories of the node cases under `dir/node` whose name contains `filter`, sorted.
pub fn case_dirs(dir: &Path, filter: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let node = dir.join("node");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&node)
        .with_context(|| format!("listing {}", node.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .filter(|p| filter.is_none_or(|f| case_name(p).contains(f)))
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// A case's name: its directory's name.
pub fn case_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
