#!/bin/sh
# `spin build` (and `kiln spin up`'s tests) run this from the repository root: builds the
# Kiln router and vacant.wasm for wasm32-wasip2, then compiles the bundled example models
# into Kiln model components, all under target/edge-spin/ (gitignored).
#
#   KILN=path/to/kiln   use this kiln binary (default: build target/release/kiln)
set -eu
cd "$(dirname "$0")/../.."
out=target/edge-spin

rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --locked --target wasm32-wasip2 --workspace \
  --manifest-path edge-worker/spin/Cargo.toml --target-dir "$out"
cp "$out/wasm32-wasip2/release/kiln_spin.wasm" "$out/kiln_spin.wasm"
cp "$out/wasm32-wasip2/release/kiln_spin_vacant.wasm" "$out/vacant.wasm"

if [ -z "${KILN:-}" ]; then
  cargo build --release --locked --bin kiln
  KILN=target/release/kiln
fi
mkdir -p "$out/models"
# name version onnx: compiled again only when the ONNX file is newer than the component.
compile() {
  component="$out/models/$1-$2.wasm"
  if [ ! -f "$component" ] || [ "examples/models/$3" -nt "$component" ]; then
    "$KILN" compile "examples/models/$3" --name "$1" --model-version "$2" -o "$component.tmp"
    mv "$component.tmp" "$component"
  fi
}
compile house-price 1 house_price_forest.onnx
compile iris 1 iris_logreg.onnx
compile mlp 1 mlp.onnx
