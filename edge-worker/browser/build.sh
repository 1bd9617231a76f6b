#!/usr/bin/env bash
# Builds Kiln's browser package (an ES module: kiln_web.js + kiln_web_bg.wasm) into
# target/wasm-js/kiln-web/, where `kiln serve` finds it for /ui/playground.
#
# Needs: rustup target add wasm32-unknown-unknown
#        cargo install wasm-bindgen-cli --version 0.2.130   (the wasm-bindgen in Cargo.lock)
# The Cloudflare Worker builds into the same target dir with the same RUSTFLAGS, so tract
# is compiled once for both. WASM_BINDGEN may name the CLI binary.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target_dir="$root/target/wasm-js"
out_dir="$target_dir/kiln-web"
bindgen="${WASM_BINDGEN:-wasm-bindgen}"

want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/, ""); print; exit}' "$root/Cargo.lock")
have=$("$bindgen" --version 2>/dev/null | awk '{print $2}') || true
if [ "$have" != "$want" ]; then
  echo "build.sh: needs wasm-bindgen-cli $want (found: ${have:-none}); run: cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi

# The Cloudflare Worker is built in the same cargo run, as its build.sh does: cargo unifies
# the features of the packages it builds together, so both scripts get the same tract
# artifacts instead of one copy each.
packages=(-p kiln-web)
[ -f "$root/edge-worker/cloudflare/Cargo.toml" ] && packages+=(-p kiln-cloudflare)
cd "$root"
RUSTFLAGS="-C target-feature=+simd128" cargo build --release --locked --target wasm32-unknown-unknown \
  "${packages[@]}" --target-dir "$target_dir" ${CARGO_BUILD_QUIET:+--quiet}
# Into a fresh directory, then swapped in, so a server never serves half a package.
rm -rf "$out_dir.tmp"
"$bindgen" --target web --out-dir "$out_dir.tmp" --out-name kiln_web \
  "$target_dir/wasm32-unknown-unknown/release/kiln_web.wasm"
rm -rf "$out_dir"
mv "$out_dir.tmp" "$out_dir"
echo "$out_dir"
