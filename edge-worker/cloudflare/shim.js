// The Worker's entry module. build.sh bundles it with wasm-bindgen's glue into
// build/shim.mjs; `./index.wasm` (the engine) and `../models/kiln-models.mjs` (the model
// bundles, written by `kiln export cloudflare`) stay separate modules of the deployment.
import * as glue from "./index_bg.js";
import wasmModule from "./index.wasm";
import { BUNDLES } from "../models/kiln-models.mjs";

// Data modules are ArrayBuffers; the Rust side reads them from here, checks each one's
// SHA-256 against KILN_MODELS and loads them once per isolate.
globalThis.__KILN_BUNDLES = BUNDLES;

const instance = new WebAssembly.Instance(wasmModule, { "./index_bg.js": glue });
glue.__wbg_set_wasm(instance.exports);
instance.exports.__wbindgen_start?.();

export default {
  async fetch(request, env, ctx) {
    return await glue.fetch(request, env, ctx);
  },
};
