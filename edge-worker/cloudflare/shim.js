// The Worker's entry module. build.sh bundles it with wasm-bindgen's glue into
// build/shim.mjs; `./index.wasm` (the engine) and `../models/kiln-models.mjs` (the model
// bundles, written by `kiln export cloudflare`) stay separate modules of the deployment.
import * as glue from "./index.js";
import { BUNDLES } from "../models/kiln-models.mjs";

// Data modules are ArrayBuffers; the Rust side reads them from here, checks each one's
// SHA-256 against KILN_MODELS and loads them once per isolate.
globalThis.__KILN_BUNDLES = BUNDLES;

// A trap (a panic, a failed allocation) surfaces as an uncaught RuntimeError in the task
// that polled the request's future, whose promise then never settles. wasm-bindgen's abort
// handler has already scheduled a fresh instance (it loads the models again on the next
// request); here the requests in flight are answered with the error `kiln serve` gives for
// a trapped model.
const inFlight = new Set();
addEventListener("error", (event) => {
  if (event.error instanceof WebAssembly.RuntimeError) {
    console.error(`kiln: the engine trapped (${event.error.message}); a fresh instance takes over`);
    for (const fail of inFlight) fail(event.error);
  }
});

function trapped(e) {
  return Response.json({ error: `the model trapped: ${e.message}`, kind: "trap" }, { status: 500 });
}

export default {
  async fetch(request, env, ctx) {
    let fail;
    const trap = new Promise((_, reject) => {
      fail = reject;
    });
    inFlight.add(fail);
    try {
      return await Promise.race([glue.fetch(request, env, ctx), trap]);
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) return trapped(e);
      throw e;
    } finally {
      inFlight.delete(fail);
    }
  },
};
