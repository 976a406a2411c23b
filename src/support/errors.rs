//! Errors as logs show them.

/// An error's sources, joined, for logs.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

/// An error with its sources, as one sentence for people (an app's
/// `lastError`): a source whose words the message already ends with is not
/// repeated.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.ends_with(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn causes_are_told_once() {
        let err = Outer(Inner(std::io::Error::other("disk full")));
        assert_eq!(with_causes(&err), "outer: inner: disk full");
        assert_eq!(error_chain(&err), "inner: disk full");
    }
}
