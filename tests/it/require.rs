//! What a test needs from the machine beyond the crate (a PostgreSQL server,
//! moto, curl). Under CI (`CI` set: GitHub Actions sets it, `.ci/run` exports
//! it) a missing one fails the test, so a run that tested nothing cannot pass;
//! elsewhere the test says `SKIPPED` on stderr and returns.

use std::io::Write;

/// Reports that `what` is unavailable: panics under CI, else prints `SKIPPED`.
pub fn missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what}; CI is set, so this is a failure rather than a skip");
    }
    // Straight to stderr: the harness captures `eprintln!` of passing tests, and a skip must show.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}; nothing was tested");
}
