//! What a 500 says: the details of a host failure (file paths, cache locations, library
//! messages) go to the server's log under a reference; the answer names the reference.

/// Logs `detail` under a fresh reference and returns the text to answer with.
pub(crate) fn internal_message(what: &str, detail: &str) -> String {
    let reference = format!("{:012x}", uuid::Uuid::new_v4().as_u128() & 0xffff_ffff_ffff);
    tracing::error!(reference, error = %detail, "{what}");
    format!("{what} (reference {reference} in the server's log)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_answer_names_a_reference_and_no_detail() {
        let text = super::internal_message(
            "the server failed",
            "opening /var/lib/kiln/cache/aot/abc.cwasm: permission denied",
        );
        assert!(
            !text.contains("/var/lib") && !text.contains("permission"),
            "{text}"
        );
        assert!(text.starts_with("the server failed (reference "), "{text}");
    }
}
