//! Identifiers made on hot paths.

/// A random (version 4) UUID for request ids on hot paths: drawn from a
/// fast per-thread generator instead of a `getrandom` system call per id.
/// Unique, not secret: never use it for tokens.
pub fn request_uuid() -> String {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_uuids_are_version_4_and_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| super::request_uuid()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids.iter().take(10) {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
        }
    }
}
