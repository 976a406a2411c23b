//! The rule for environment variable names that come from outside (event
//! payloads, deploy requests): a plain name, and none that changes how the
//! dynamic loader, a shell or an interpreter starts, or that the service sets
//! itself. Values are free text (a NUL is refused where it could not travel).

/// Exact names that are refused.
const DENIED: &[&str] = &[
    // The dynamic loader and the C library.
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "MALLOC_CHECK_",
    "MALLOC_PERTURB_",
    // Shells.
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "IFS",
    "PROMPT_COMMAND",
    "CDPATH",
    "GLOBIGNORE",
    // Interpreters.
    "NODE_OPTIONS",
    "NODE_PATH",
    "RUBYOPT",
    "RUBYLIB",
    "PERLLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    // Set by the service.
    "PATH",
    "HOME",
    "TRACEPARENT",
    "_X_AMZN_TRACE_ID",
];

/// Prefixes that are refused (any name starting with one).
const DENIED_PREFIXES: &[&str] = &["LD_", "BASH_FUNC_", "PYTHON", "PERL5", "JOB_"];

/// Why a name was refused; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("environment variable name '{0}' is invalid: it must match [A-Za-z_][A-Za-z0-9_]*")]
    Malformed(String),
    #[error("environment variable '{0}' is not allowed: it changes how programs start or is set by the service")]
    Denied(String),
}

/// Checks one name against the rule.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let well_formed = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        return Err(NameError::Malformed(name.escape_debug().to_string()));
    }
    let upper = name.to_ascii_uppercase();
    let denied =
        DENIED.contains(&upper.as_str()) || DENIED_PREFIXES.iter().any(|p| upper.starts_with(p));
    if denied {
        return Err(NameError::Denied(name.to_owned()));
    }
    Ok(())
}

/// Checks every name; the first refused one is the error.
pub fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), NameError> {
    names.into_iter().try_for_each(check_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass() {
        for name in ["A", "_x", "TENANT_ID", "appPlaneUrl", "NODE_ENV", "a1_b2"] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn malformed_names_are_refused() {
        for name in [
            "",
            "1A",
            "A-B",
            "A=B",
            "BASH_FUNC_echo%%",
            "A B",
            "É",
            "A\0",
        ] {
            assert!(
                matches!(check_name(name), Err(NameError::Malformed(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn dangerous_names_are_refused_in_any_case() {
        for name in [
            "LD_PRELOAD",
            "ld_library_path",
            "GCONV_PATH",
            "BASH_ENV",
            "ENV",
            "SHELLOPTS",
            "BASHOPTS",
            "PS4",
            "IFS",
            "PROMPT_COMMAND",
            "NODE_OPTIONS",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PERL5OPT",
            "RUBYOPT",
            "PATH",
            "HOME",
            "JOB_OUTPUT",
            "JOB_ID",
            "TRACEPARENT",
            "_X_AMZN_TRACE_ID",
            "BASH_FUNC_x",
        ] {
            assert!(
                matches!(check_name(name), Err(NameError::Denied(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn the_message_names_the_variable() {
        let err = check_names(["OK", "LD_PRELOAD"]).unwrap_err();
        assert!(err.to_string().contains("'LD_PRELOAD'"), "{err}");
    }
}
