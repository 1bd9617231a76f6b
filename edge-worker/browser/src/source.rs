//! Where a model's bytes come from (a URL or bytes handed over by the page) and the checks
//! they pass before the engine sees them: the SHA-256 the caller expects, then the Kiln
//! bundle header (or a plain ONNX file).

use js_sys::{ArrayBuffer, Promise, Uint8Array};
use kiln_engine::{Bundle, BundleConfig, LoadOptions};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    /// The global `fetch` (window or worker).
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(url: &str) -> Promise;

    type FetchResponse;
    #[wasm_bindgen(method, getter)]
    fn ok(this: &FetchResponse) -> bool;
    #[wasm_bindgen(method, getter)]
    fn status(this: &FetchResponse) -> u16;
    #[wasm_bindgen(method, catch, js_name = arrayBuffer)]
    fn array_buffer(this: &FetchResponse) -> Result<Promise, JsValue>;
}

/// Reads the model bytes: fetches a URL (string or `URL`), or copies an `ArrayBuffer`,
/// a typed array or a `DataView`.
pub async fn read(source: &JsValue) -> Result<Vec<u8>, String> {
    if let Some(url) = source
        .as_string()
        .or_else(|| source.dyn_ref::<web_url::Url>().map(|u| u.href()))
    {
        return fetch(&url).await;
    }
    if let Some(buffer) = source.dyn_ref::<ArrayBuffer>() {
        return Ok(Uint8Array::new(buffer).to_vec());
    }
    if ArrayBuffer::is_view(source) {
        let view: &js_sys::Object = source.unchecked_ref();
        let get = |key: &str| {
            js_sys::Reflect::get(view, &JsValue::from_str(key))
                .ok()
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0) as u32
        };
        let buffer: ArrayBuffer = js_sys::Reflect::get(view, &JsValue::from_str("buffer"))
            .map_err(|_| "the typed array has no buffer".to_string())?
            .unchecked_into();
        return Ok(Uint8Array::new_with_byte_offset_and_length(
            &buffer,
            get("byteOffset"),
            get("byteLength"),
        )
        .to_vec());
    }
    Err("KilnModel.load takes a URL (string) or the model's bytes (ArrayBuffer or Uint8Array)".into())
}

async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let failed = |e: JsValue| format!("fetching {url}: {}", describe(&e));
    let response: FetchResponse = JsFuture::from(global_fetch(url))
        .await
        .map_err(failed)?
        .unchecked_into();
    if !response.ok() {
        return Err(format!("fetching {url}: HTTP {}", response.status()));
    }
    let buffer = JsFuture::from(response.array_buffer().map_err(failed)?)
        .await
        .map_err(failed)?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// The message of a JS error, or its string form.
pub fn describe(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Refuses bytes whose SHA-256 is not `expected` (lowercase or uppercase hex).
pub fn verify(bytes: &[u8], expected: &str) -> Result<String, String> {
    let expected = expected.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "sha256 must be 64 hex digits (the SHA-256 of the model bytes), got {expected:?}"
        ));
    }
    let actual = kiln_types::digest(bytes);
    if actual != expected {
        return Err(format!(
            "refusing the model: its SHA-256 is {actual}, expected {expected} (the bytes were changed or are not the version you asked for)"
        ));
    }
    Ok(actual)
}

/// A Kiln bundle (`KILNMDL1` header), else plain ONNX bytes with default load options.
pub fn bundle(bytes: Vec<u8>) -> Result<Bundle, String> {
    if bytes.starts_with(b"KILNMDL1") {
        return Bundle::decode(&bytes).map_err(|e| e.to_string());
    }
    Ok(Bundle {
        config: BundleConfig {
            options: LoadOptions::default(),
        },
        onnx: bytes,
    })
}

/// `URL` objects, without pulling web-sys in for one getter.
mod web_url {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_name = URL)]
        pub type Url;
        #[wasm_bindgen(method, getter)]
        pub fn href(this: &Url) -> String;
    }
}
