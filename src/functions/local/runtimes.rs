//! The interpreters the local runtime runs functions on, found once at
//! start: `node`, `python3` and their versioned names (`node22`,
//! `python3.13`) on the search path, or the paths `[functions.runtimes]`
//! sets. A runtime runs only on an interpreter of its own version
//! (`nodejs22.x` on Node.js 22, `python3.12` on Python 3.12): deploying one
//! this machine lacks is refused, naming what it has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use crate::function_config::{runtime_kind, runtime_names, RuntimeKind};

/// Names looked up on the search path, in order of preference.
const NODE_NAMES: &[&str] = &["node", "nodejs", "node24", "node22", "node20", "node18"];
const PYTHON_NAMES: &[&str] = &[
    "python3",
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3.9",
];

/// Directories the function sandbox shows as they are; an interpreter
/// installed elsewhere has its prefix shown read-only.
const SHOWN: &[&str] = &["/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/opt/"];

/// How long `--version` may take (a cold pyenv shim takes a while).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// An interpreter found on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Interpreter {
    /// `node` or `python`.
    pub language: &'static str,
    /// As `--version` says it, e.g. `22.11.0`, `3.12.1`.
    pub version: String,
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// What a sandboxed worker must see besides the standard directories
    /// (the installation an interpreter outside them belongs to).
    #[serde(skip)]
    pub prefix: Option<PathBuf>,
}

impl Interpreter {
    /// Whether it runs `runtime` (`nodejs22.x`: Node.js 22.*; `python3.12`: Python 3.12.*).
    fn runs(&self, runtime: &str) -> bool {
        wanted(runtime).is_some_and(|(language, version)| {
            language == self.language && version_matches(&self.version, &version)
        })
    }
}

/// The language and version prefix a runtime needs: `nodejs22.x` → (`node`, `22`).
fn wanted(runtime: &str) -> Option<(&'static str, String)> {
    match runtime_kind(runtime)? {
        RuntimeKind::Node => Some((
            "node",
            runtime
                .strip_prefix("nodejs")?
                .strip_suffix(".x")?
                .to_owned(),
        )),
        RuntimeKind::Python => Some(("python", runtime.strip_prefix("python")?.to_owned())),
        RuntimeKind::Provided => None,
    }
}

/// `22.11.0` matches `22`; `3.12.1` matches `3.12` but not `3.1`.
fn version_matches(version: &str, wanted: &str) -> bool {
    version == wanted
        || version
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// What was found, and which interpreter each runtime runs on.
#[derive(Debug, Default)]
pub struct Runtimes {
    interpreters: Vec<Interpreter>,
    chosen: BTreeMap<&'static str, usize>,
}

/// A runtime as `GET /runtimes` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeView {
    /// The Lambda runtime identifier.
    pub runtime: &'static str,
    /// Whether this service can run it.
    pub available: bool,
    /// The interpreter it runs on (local backend; `null` for `provided.*`
    /// and on Lambda).
    pub interpreter: Option<Interpreter>,
}

impl Runtimes {
    /// Finds the interpreters: first the configured ones (each must be the
    /// version its runtime names), then the names above on `search_path`.
    pub fn discover(
        search_path: &str,
        configured: &BTreeMap<String, PathBuf>,
    ) -> Result<Runtimes, String> {
        let mut runtimes = Runtimes::default();
        for (runtime, path) in configured {
            let Some((runtime, (language, version))) = runtime_names()
                .find(|name| name == runtime)
                .and_then(|name| Some((name, wanted(name)?)))
            else {
                return Err(format!(
                    "functions.runtimes: '{runtime}' is not a Node.js or Python runtime (use e.g. nodejs22.x, python3.13)"
                ));
            };
            let found = probe(language, path).map_err(|why| {
                format!(
                    "functions.runtimes.\"{runtime}\" = {}: {why}",
                    path.display()
                )
            })?;
            if !version_matches(&found.version, &version) {
                return Err(format!(
                    "functions.runtimes.\"{runtime}\" = {} is {} {}, not {version}",
                    path.display(),
                    language,
                    found.version
                ));
            }
            let index = runtimes.add(found);
            runtimes.chosen.insert(runtime, index);
        }
        let dirs: Vec<&str> = search_path.split(':').filter(|d| !d.is_empty()).collect();
        let candidates: Vec<(&'static str, PathBuf)> = NODE_NAMES
            .iter()
            .map(|name| ("node", *name))
            .chain(PYTHON_NAMES.iter().map(|name| ("python", *name)))
            .filter_map(|(language, name)| {
                let path = dirs
                    .iter()
                    .map(|dir| Path::new(dir).join(name))
                    .find(|candidate| is_executable(candidate))?;
                Some((language, path))
            })
            .collect();
        // Probed side by side: a few interpreters start in the time of one.
        let probed: Vec<Option<Interpreter>> = std::thread::scope(|scope| {
            let handles: Vec<_> = candidates
                .iter()
                .map(|(language, path)| scope.spawn(move || probe(language, path).ok()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().ok().flatten())
                .collect()
        });
        for found in probed.into_iter().flatten() {
            runtimes.add(found);
        }
        for runtime in runtime_names() {
            if runtimes.chosen.contains_key(runtime) {
                continue;
            }
            if let Some(index) = runtimes.interpreters.iter().position(|i| i.runs(runtime)) {
                runtimes.chosen.insert(runtime, index);
            }
        }
        Ok(runtimes)
    }

    /// [`Runtimes::discover`], once per process for each search path and
    /// configuration (a process that builds several services probes once).
    pub fn shared(
        search_path: &str,
        configured: &BTreeMap<String, PathBuf>,
    ) -> Result<Arc<Runtimes>, String> {
        type Found = BTreeMap<(String, BTreeMap<String, PathBuf>), Arc<Runtimes>>;
        static FOUND: Mutex<Found> = Mutex::new(BTreeMap::new());
        let key = (search_path.to_owned(), configured.clone());
        if let Some(found) = FOUND.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(found.clone());
        }
        let found = Arc::new(Self::discover(search_path, configured)?);
        FOUND
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }

    /// Adds `found` unless the same version of the language at the same
    /// place is known; its index.
    fn add(&mut self, found: Interpreter) -> usize {
        let same = |known: &Interpreter| {
            known.language == found.language
                && known.version == found.version
                && canonical(&known.path) == canonical(&found.path)
        };
        if let Some(index) = self.interpreters.iter().position(same) {
            return index;
        }
        self.interpreters.push(found);
        self.interpreters.len() - 1
    }

    /// The interpreter `runtime` runs on (`None` for `provided.*`, which
    /// runs the zip's `bootstrap`), or why this machine cannot run it.
    pub fn interpreter(&self, runtime: &str) -> Result<Option<&Interpreter>, String> {
        let Some((language, version)) = wanted(runtime) else {
            return match runtime_kind(runtime) {
                Some(RuntimeKind::Provided) => Ok(None),
                _ => Err(format!("'{runtime}' is not a runtime")),
            };
        };
        if let Some(index) = self.chosen.get(runtime) {
            return Ok(self.interpreters.get(*index));
        }
        let name = if language == "node" {
            "Node.js"
        } else {
            "Python"
        };
        let have: Vec<String> = self
            .available()
            .filter(|r| wanted(r).is_some_and(|(l, _)| l == language))
            .map(str::to_owned)
            .collect();
        Err(format!(
            "{runtime} needs {name} {version}, which this service does not have; {}; install it, or set its path in [functions.runtimes]",
            if have.is_empty() {
                format!("it has no {name} at all")
            } else {
                format!("it runs {}", have.join(", "))
            }
        ))
    }

    /// The runtime identifiers this machine runs, in the API's order.
    pub fn available(&self) -> impl Iterator<Item = &'static str> + '_ {
        runtime_names().filter(|r| {
            self.chosen.contains_key(r) || runtime_kind(r) == Some(RuntimeKind::Provided)
        })
    }

    /// The runtime a new app gets when its deploy names none: `nodejs20.x`
    /// where it runs, else the newest Node.js runtime here.
    pub fn default_runtime(&self) -> Option<&'static str> {
        const DEFAULT: &str = "nodejs20.x";
        if self.chosen.contains_key(DEFAULT) {
            return Some(DEFAULT);
        }
        self.available()
            .filter(|r| runtime_kind(r) == Some(RuntimeKind::Node))
            .last()
    }

    /// Every runtime, whether it runs here and on what.
    pub fn views(&self) -> Vec<RuntimeView> {
        runtime_names()
            .map(|runtime| {
                let interpreter = self.interpreter(runtime);
                RuntimeView {
                    runtime,
                    available: interpreter.is_ok(),
                    interpreter: interpreter.ok().flatten().cloned(),
                }
            })
            .collect()
    }

    /// One start-up line's worth: `nodejs20.x=/usr/bin/node (20.19.2), …`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .available()
            .map(|runtime| match self.interpreter(runtime) {
                Ok(Some(i)) => match &i.prefix {
                    Some(shown) => format!(
                        "{runtime}={} ({}; sandbox shows {})",
                        i.path.display(),
                        i.version,
                        shown.display()
                    ),
                    None => format!("{runtime}={} ({})", i.path.display(), i.version),
                },
                _ => runtime.to_owned(),
            })
            .collect();
        parts.join(", ")
    }
}

/// Runs `path --version` and reads the version it prints.
fn probe(language: &'static str, path: &Path) -> Result<Interpreter, String> {
    if !is_executable(path) {
        return Err("not an executable file".into());
    }
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("`--version` did not answer".into());
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("cannot read its version: {e}"))?;
    if !output.status.success() {
        return Err("`--version` failed".into());
    }
    // Node prints `v22.11.0`; Python `Python 3.12.1` (Python 2 on stderr).
    let text = String::from_utf8_lossy(if output.stdout.is_empty() {
        &output.stderr
    } else {
        &output.stdout
    })
    .trim()
    .to_owned();
    let version = match language {
        "node" => text.strip_prefix('v'),
        _ => text.strip_prefix("Python "),
    }
    .filter(|v| {
        v.split('.').all(|part| !part.is_empty()) && v.starts_with(|c: char| c.is_ascii_digit())
    })
    .ok_or_else(|| format!("it does not say a {language} version (`--version`: {text:?})"))?
    .to_owned();
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let real = canonical(&path);
    let prefix = (!SHOWN.iter().any(|dir| real.starts_with(dir))).then(|| shown_for(&real));
    Ok(Interpreter {
        language,
        version,
        path,
        prefix,
    })
}

/// Directories never shown whole to a sandboxed worker, whatever an
/// interpreter's path suggests.
const NEVER_SHOWN: &[&str] = &[
    "/", "/home", "/root", "/var", "/tmp", "/etc", "/srv", "/mnt", "/media", "/run", "/proc",
    "/sys", "/dev", "/boot",
];

/// What a sandboxed worker must see of an interpreter outside the standard
/// directories: its installation (`/x/python-3.12` for
/// `/x/python-3.12/bin/python3.12`) when it looks like one (a `lib` with
/// `node_modules` or `python3.*`, at least two levels deep, not a directory
/// such as a home), else the file alone.
fn shown_for(real: &Path) -> PathBuf {
    let dir = real.parent().unwrap_or(real);
    let prefix = match dir.file_name() {
        Some(name) if name == "bin" => dir.parent().unwrap_or(dir),
        _ => dir,
    };
    let lib = prefix.join("lib");
    let installed = lib.join("node_modules").is_dir()
        || std::fs::read_dir(&lib).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("python3") && e.path().is_dir()
            })
        });
    let deep = prefix.components().count() >= 3;
    let home = prefix.parent() == Some(Path::new("/home"));
    let forbidden = NEVER_SHOWN.iter().any(|d| prefix == Path::new(d));
    match installed && deep && !home && !forbidden {
        true => prefix.to_owned(),
        false => real.to_owned(),
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake interpreter: a script that prints `said` for `--version`.
    fn fake(dir: &Path, name: &str, said: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{said}'\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    fn versions_match_by_their_parts() {
        assert!(version_matches("22.11.0", "22"));
        assert!(!version_matches("220.1.0", "22"));
        assert!(version_matches("3.12.1", "3.12"));
        assert!(!version_matches("3.1.2", "3.12"));
        assert!(!version_matches("3.13.0", "3.1"));
        assert_eq!(wanted("nodejs22.x"), Some(("node", "22".into())));
        assert_eq!(wanted("python3.9"), Some(("python", "3.9".into())));
        assert_eq!(wanted("provided.al2023"), None);
    }

    #[test]
    fn finds_versioned_names_and_refuses_what_is_missing() {
        let dir = tempfile::tempdir().expect("temp dir");
        fake(dir.path(), "node", "v18.20.4");
        fake(dir.path(), "node22", "v22.11.0");
        fake(dir.path(), "python3", "Python 3.11.2");
        fake(dir.path(), "python3.13", "Python 3.13.0");
        let runtimes = Runtimes::discover(&dir.path().display().to_string(), &BTreeMap::new())
            .expect("discovered");
        let path_of = |r: &str| {
            runtimes
                .interpreter(r)
                .expect("runs")
                .map(|i| i.path.clone())
        };
        assert_eq!(path_of("nodejs22.x"), Some(dir.path().join("node22")));
        assert_eq!(path_of("nodejs18.x"), Some(dir.path().join("node")));
        assert_eq!(path_of("python3.13"), Some(dir.path().join("python3.13")));
        assert_eq!(path_of("provided.al2023"), None);
        let refused = runtimes.interpreter("nodejs20.x").expect_err("no node 20");
        assert!(refused.contains("needs Node.js 20"), "{refused}");
        assert!(refused.contains("nodejs18.x, nodejs22.x"), "{refused}");
        let refused = runtimes.interpreter("python3.12").expect_err("no 3.12");
        assert!(refused.contains("python3.11, python3.13"), "{refused}");
        // nodejs20.x is missing: a new app gets the newest Node.js here.
        assert_eq!(runtimes.default_runtime(), Some("nodejs22.x"));
        let views = runtimes.views();
        assert!(views
            .iter()
            .any(|v| v.runtime == "nodejs24.x" && !v.available));
        assert!(views
            .iter()
            .any(|v| v.runtime == "provided.al2" && v.available));
    }

    #[test]
    fn configured_paths_win_and_must_be_the_version_they_claim() {
        let dir = tempfile::tempdir().expect("temp dir");
        let elsewhere = dir.path().join("opt-node/bin");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        let node24 = fake(&elsewhere, "node", "v24.1.0");
        fake(dir.path(), "node", "v24.0.0");
        let configured = BTreeMap::from([("nodejs24.x".to_owned(), node24.clone())]);
        let runtimes =
            Runtimes::discover(&dir.path().display().to_string(), &configured).expect("discovered");
        let chosen = runtimes
            .interpreter("nodejs24.x")
            .expect("runs")
            .expect("an interpreter");
        assert_eq!(chosen.path, node24);
        // Outside the directories a sandbox shows, not an installation (no
        // lib/node_modules): the file alone is shown; an installation whole.
        assert_eq!(chosen.prefix.as_deref(), Some(canonical(&node24).as_path()));
        std::fs::create_dir_all(dir.path().join("opt-node/lib/node_modules")).expect("mkdir");
        let again = Runtimes::discover("", &configured).expect("discovered");
        let chosen = again
            .interpreter("nodejs24.x")
            .expect("runs")
            .expect("an interpreter");
        assert_eq!(
            chosen.prefix.as_deref(),
            Some(canonical(&dir.path().join("opt-node")).as_path())
        );
        // Never a directory such as /root or a home, whatever the path.
        assert_eq!(
            shown_for(Path::new("/root/bin/node")),
            PathBuf::from("/root/bin/node")
        );
        assert_eq!(shown_for(Path::new("/node")), PathBuf::from("/node"));
        let wrong = BTreeMap::from([("nodejs22.x".to_owned(), node24.clone())]);
        let err = Runtimes::discover("", &wrong).expect_err("a lie");
        assert!(err.contains("is node 24.1.0, not 22"), "{err}");
        let unknown = BTreeMap::from([("ruby3.3".to_owned(), node24)]);
        assert!(Runtimes::discover("", &unknown).is_err());
        let missing = BTreeMap::from([("python3.12".to_owned(), dir.path().join("nope"))]);
        let err = Runtimes::discover("", &missing).expect_err("missing");
        assert!(err.contains("not an executable file"), "{err}");
    }
}
