#!/usr/bin/env bash
# Builds Kiln's Cloudflare Worker into build/: index.wasm (tract + kiln-api, simd128),
# shim.mjs (entry module with wasm-bindgen's glue). The models are not part of this step:
# `kiln export cloudflare` writes them to models/ (bundles + kiln-models.mjs) and the
# KILN_MODELS / KILN_ROUTES vars; without them the Worker serves no models.
#
# Needs: rustup target add wasm32-unknown-unknown; cargo install wasm-bindgen-cli --version
# 0.2.130 (the wasm-bindgen in Cargo.lock; WASM_BINDGEN may name the binary); `npm ci` here
# (esbuild). wrangler runs this as its build command. KILN_WORKER_OUT moves the output
# (the tests build into target/wasm-js/kiln-cloudflare).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# Shared with the browser package (edge-worker/browser): same dir, same flags, so tract is
# compiled once for both.
target_dir="$root/target/wasm-js"
# KILN_WORKER_SMALL=1: a build for the free plan's 3 MB (2.4 MB gzipped instead of 4.1):
# fat LTO, opt-level s, no names, in its own target dir (a cold build, ~10 min on 2 cores;
# the tests and the browser package keep the shared one).
if [ -n "${KILN_WORKER_SMALL:-}" ]; then
  target_dir="$root/target/wasm-js-small"
  export CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_DEBUG=false KILN_WORKER_STRIP=1
fi
profile=release
wasm_bindgen=${WASM_BINDGEN:-wasm-bindgen}
esbuild=${ESBUILD_BIN:-$here/node_modules/.bin/esbuild}

want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/, ""); print; exit}' "$root/Cargo.lock")
have=$("$wasm_bindgen" --version 2>/dev/null | awk '{print $2}') || true
if [ "$have" != "$want" ]; then
  echo "build.sh: wasm-bindgen $want is needed (found '${have:-none}'): cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi
[ -x "$esbuild" ] || { echo "build.sh: esbuild missing: run \`npm ci\` in $here" >&2; exit 1; }

# The browser package is built in the same cargo run: cargo unifies the features of the
# packages it builds together, so tract's artifacts are the same for both; built alone,
# each would get its own feature set (worker pulls extra features of smallvec, memchr,
# syn...) and its own copy of tract.
packages=(-p kiln-cloudflare)
[ -f "$root/edge-worker/browser/Cargo.toml" ] && packages+=(-p kiln-web)
(cd "$root" && RUSTFLAGS="-C target-feature=+simd128" cargo build --release --locked \
  --target wasm32-unknown-unknown "${packages[@]}" --target-dir "$target_dir" ${CARGO_BUILD_QUIET:+--quiet})

out=${KILN_WORKER_OUT:-$here/build}
rm -rf "$out/pkg"
mkdir -p "$out/pkg"
# KILN_WORKER_STRIP=1 drops the function names (-2.2 MB raw, -0.5 MB gzipped; panics in the
# Worker's logs then show no Rust function names).
strip=()
[ -n "${KILN_WORKER_STRIP:-}" ] && strip=(--remove-name-section)
# As worker-build does: the `module` target with a reset function, so the entry module can
# replace a trapped wasm instance (a panic, an allocation failure) with a fresh one.
"$wasm_bindgen" --target module --no-typescript "${strip[@]}" --out-name index --out-dir "$out/pkg" \
  --experimental-reset-state-function --force-enable-abort-handler \
  "$target_dir/wasm32-unknown-unknown/$profile/kiln_cloudflare.wasm"
# Workers import a .wasm module as a WebAssembly.Module (no source-phase `import source`).
sed -i 's|^import source wasmModule from "./index_bg.wasm";|import wasmModule from "./index.wasm";|' "$out/pkg/index.js"
grep -q '^import wasmModule from "./index.wasm";' "$out/pkg/index.js" || {
  echo "build.sh: wasm-bindgen's index.js no longer imports index_bg.wasm as expected" >&2
  exit 1
}
cp "$here/shim.js" "$out/pkg/shim.js"
"$esbuild" "$out/pkg/shim.js" --bundle --format=esm --minify --log-level=warning \
  --external:./index.wasm --external:../models/kiln-models.mjs \
  --outfile="$out/shim.mjs"
mv "$out/pkg/index_bg.wasm" "$out/index.wasm"
rm -rf "$out/pkg"

# A Worker with no exported models still needs the module it imports.
if [ -z "${KILN_WORKER_OUT:-}" ] && [ ! -f "$here/models/kiln-models.mjs" ]; then
  mkdir -p "$here/models"
  printf '// No models exported yet: run `kiln export cloudflare`.\nexport const BUNDLES = {};\n' \
    > "$here/models/kiln-models.mjs"
fi
echo "build.sh: $(du -b "$out/index.wasm" | cut -f1) bytes of wasm, $(du -b "$out/shim.mjs" | cut -f1) bytes of JS in $out"
