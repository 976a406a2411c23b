//! Confining a worker: bubblewrap (`bwrap`, what Flatpak uses) gives it its
//! own mount, PID and IPC namespaces with only the system's libraries and
//! runtimes, its code (`/var/task`) and our runtime clients (`/var/runtime`)
//! read-only, and a private size-bounded `/tmp`; `setpriv` then drops it to a
//! user id of its own (claimed through a lock file, so no two workers on the
//! machine share one); a memory and a pids cgroup of its own hold
//! `memorySize` and the process count. Outbound network is left as it is.
//!
//! bwrap runs as root (no user namespace): only then can it bind paths the
//! worker's user could not reach. The worker's processes die with it: the
//! PID namespace ends when its first process does.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where the code and our runtime clients appear inside the sandbox.
pub const TASK_ROOT: &str = "/var/task";
pub const RUNTIME_DIR: &str = "/var/runtime";
/// The directories the sandbox makes itself (left as they are when an
/// interpreter's installation below one is shown).
const SANDBOX_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/opt", "/etc", "/proc", "/dev", "/tmp",
    "/var",
];

/// `PATH` inside the sandbox.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Files of `/etc` a runtime needs (name resolution, TLS roots, time zones,
/// users); nothing else of `/etc` is visible.
const ETC: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/mime.types",
    "/etc/os-release",
];

/// Settings of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub uid_base: u32,
    pub uid_count: u32,
    pub max_processes: u32,
    pub tmp_size_bytes: u64,
}

/// A machine's ability to sandbox workers, found at start.
#[derive(Debug)]
pub struct Sandbox {
    bwrap: PathBuf,
    setpriv: PathBuf,
    options: SandboxOptions,
    cgroups: Option<Cgroups>,
    /// Where the per-uid lock files are.
    locks: PathBuf,
    /// Where the next uid search starts.
    cursor: AtomicU32,
}

impl Sandbox {
    /// Finds what the sandbox needs and tries it once; the error says what is missing.
    pub fn probe(options: SandboxOptions) -> Result<Arc<Sandbox>, String> {
        // SAFETY: no arguments, no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the sandbox runs each worker as a user of its own, which needs the service to run as root".into());
        }
        let bwrap = find_program("bwrap")
            .ok_or("bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)")?;
        let setpriv = find_program("setpriv").ok_or("setpriv (util-linux) is not installed")?;
        let locks = PathBuf::from("/run/orchestrator/sandbox-uids");
        std::fs::create_dir_all(&locks)
            .map_err(|e| format!("cannot create {}: {e}", locks.display()))?;
        let cgroups = match Cgroups::find() {
            Ok(cgroups) => Some(cgroups),
            Err(why) => {
                tracing::warn!(reason = %why, "no cgroups for workers: memorySize is held by the runtimes' heap limits only, the process count by RLIMIT_NPROC");
                None
            }
        };
        let start = std::process::id() % options.uid_count.max(1);
        let sandbox = Arc::new(Sandbox {
            bwrap,
            setpriv,
            options,
            cgroups,
            locks,
            cursor: AtomicU32::new(start),
        });
        sandbox.try_once()?;
        Ok(sandbox)
    }

    /// Whether memory and process limits are held by cgroups.
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Runs `/bin/true` confined, to learn at start whether this kernel allows it.
    fn try_once(self: &Arc<Self>) -> Result<(), String> {
        let cell = self
            .cell(64)
            .map_err(|e| format!("preparing a trial sandbox: {e}"))?;
        let empty = std::env::temp_dir();
        let mut command = std::process::Command::new(&self.bwrap);
        command
            .args(cell.arguments(&empty, &empty, None, Path::new("/bin/true"), &[]))
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let output = command
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bwrap.display()))?;
        if !output.status.success() {
            return Err(format!(
                "bwrap could not create a sandbox ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }

    /// A cell for one worker: a user id of its own and, where available,
    /// cgroups holding `memory_mb` and the process count.
    pub fn cell(self: &Arc<Self>, memory_mb: u32) -> io::Result<Cell> {
        let (uid, lock) = self.claim_uid()?;
        let groups = match &self.cgroups {
            Some(cgroups) => Some(cgroups.create(
                uid,
                u64::from(memory_mb) * 1024 * 1024,
                self.options.max_processes,
            )?),
            None => None,
        };
        Ok(Cell {
            sandbox: self.clone(),
            uid,
            _lock: lock,
            groups,
        })
    }

    /// Claims a free user id: its lock file held for the cell's life.
    fn claim_uid(&self) -> io::Result<(u32, File)> {
        let count = self.options.uid_count;
        for _ in 0..count {
            let slot = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
            let uid = self.options.uid_base + slot;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(self.locks.join(uid.to_string()))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok((uid, file));
            }
        }
        Err(io::Error::other("every sandbox user id is in use"))
    }
}

/// One worker's confinement; dropping it frees the user id and the cgroups.
#[derive(Debug)]
pub struct Cell {
    sandbox: Arc<Sandbox>,
    pub uid: u32,
    _lock: File,
    groups: Option<CellGroups>,
}

impl Cell {
    /// bwrap's arguments to run `program args` confined, with `code` as
    /// `/var/task`, `runtimes` as `/var/runtime`, and `shown` (an
    /// interpreter's installation outside the standard directories) read-only.
    pub fn arguments(
        &self,
        code: &Path,
        runtimes: &Path,
        shown: Option<&Path>,
        program: &Path,
        args: &[PathBuf],
    ) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |parts: &[&std::ffi::OsStr]| out.extend(parts.iter().map(|p| p.into()));
        push(&[
            "--unshare-pid".as_ref(),
            "--unshare-ipc".as_ref(),
            "--unshare-cgroup-try".as_ref(),
            "--die-with-parent".as_ref(),
            "--new-session".as_ref(),
            "--ro-bind".as_ref(),
            "/usr".as_ref(),
            "/usr".as_ref(),
        ]);
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/opt"] {
            match std::fs::read_link(top) {
                Ok(target) => push(&["--symlink".as_ref(), target.as_os_str(), top.as_ref()]),
                Err(_) => push(&["--ro-bind-try".as_ref(), top.as_ref(), top.as_ref()]),
            }
        }
        push(&[
            "--perms".as_ref(),
            "0755".as_ref(),
            "--dir".as_ref(),
            "/etc".as_ref(),
        ]);
        for path in ETC {
            push(&["--ro-bind-try".as_ref(), path.as_ref(), path.as_ref()]);
        }
        let tmp_size = self.sandbox.options.tmp_size_bytes.to_string();
        push(&[
            "--proc".as_ref(),
            "/proc".as_ref(),
            "--dev".as_ref(),
            "/dev".as_ref(),
            "--perms".as_ref(),
            "01777".as_ref(),
            "--size".as_ref(),
            tmp_size.as_ref(),
            "--tmpfs".as_ref(),
            "/tmp".as_ref(),
            "--perms".as_ref(),
            "0755".as_ref(),
            "--dir".as_ref(),
            "/var".as_ref(),
            "--ro-bind".as_ref(),
            code.as_os_str(),
            TASK_ROOT.as_ref(),
            "--ro-bind".as_ref(),
            runtimes.as_os_str(),
            RUNTIME_DIR.as_ref(),
        ]);
        // After `/tmp` and `/var` are made: an installation under them stays
        // visible. Its parents are made traversable (bwrap would make them
        // 0700, closed to the worker's user), all but those the sandbox has.
        if let Some(shown) = shown {
            let mut parents: Vec<&Path> = shown.ancestors().skip(1).collect();
            parents.reverse();
            for parent in parents {
                let has =
                    parent == Path::new("/") || SANDBOX_DIRS.iter().any(|d| parent == Path::new(d));
                if !has {
                    push(&[
                        "--perms".as_ref(),
                        "0755".as_ref(),
                        "--dir".as_ref(),
                        parent.as_os_str(),
                    ]);
                }
            }
            push(&["--ro-bind".as_ref(), shown.as_os_str(), shown.as_os_str()]);
        }
        push(&["--chdir".as_ref(), TASK_ROOT.as_ref(), "--".as_ref()]);
        let id = self.uid.to_string();
        let reuid = format!("--reuid={id}");
        let regid = format!("--regid={id}");
        push(&[
            self.sandbox.setpriv.as_os_str(),
            reuid.as_ref(),
            regid.as_ref(),
            "--clear-groups".as_ref(),
            "--inh-caps=-all".as_ref(),
            "--bounding-set=-all".as_ref(),
            "--no-new-privs".as_ref(),
            "--".as_ref(),
            program.as_os_str(),
        ]);
        out.extend(args.iter().map(|a| a.as_os_str().to_owned()));
        out
    }

    /// The program that runs first (bwrap).
    pub fn program(&self) -> &Path {
        &self.sandbox.bwrap
    }

    /// What the child must do between fork and exec (as root): join the
    /// cgroups and cap its user's process count.
    pub fn joiner(&self) -> io::Result<Joiner> {
        let procs = match &self.groups {
            Some(groups) => groups
                .dirs
                .iter()
                .map(|dir| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_CLOEXEC)
                        .open(dir.join("cgroup.procs"))
                        .map(OwnedFd::from)
                })
                .collect::<io::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(Joiner {
            procs,
            max_processes: self.sandbox.options.max_processes,
        })
    }

    /// Whether the kernel killed a process of this cell for memory.
    pub fn ran_out_of_memory(&self) -> bool {
        self.groups.as_ref().is_some_and(CellGroups::oom_killed)
    }

    /// Kills whatever is left in the cell's cgroups and removes them.
    pub async fn clear(&self) {
        if let Some(groups) = &self.groups {
            groups.clear().await;
        }
    }
}

/// Joins the cell's cgroups from the forked child, before exec.
pub struct Joiner {
    procs: Vec<OwnedFd>,
    max_processes: u32,
}

impl Joiner {
    /// Runs in the child between fork and exec: only async-signal-safe calls.
    pub fn join(&self) -> io::Result<()> {
        for fd in &self.procs {
            // "0" moves the writing process (and what it starts later).
            // SAFETY: writing two bytes from a static buffer to our own descriptor.
            if unsafe { libc::write(fd.as_raw_fd(), b"0\n".as_ptr().cast(), 2) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let limit = libc::rlimit {
            rlim_cur: libc::rlim_t::from(self.max_processes),
            rlim_max: libc::rlim_t::from(self.max_processes),
        };
        // Held per user id, so per worker: the fallback where no pids cgroup is.
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The cgroup hierarchies workers are put in.
#[derive(Debug)]
enum Cgroups {
    /// cgroup v1: the memory and pids hierarchies' directories for this service.
    V1 { memory: PathBuf, pids: PathBuf },
    /// cgroup v2: this service's directory, with memory and pids delegated.
    V2 { dir: PathBuf },
}

impl Cgroups {
    /// This process's own cgroups, with a directory for its workers under each.
    fn find() -> Result<Cgroups, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let path_of = |controller: &str| {
            own.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                names
                    .split(',')
                    .any(|n| n == controller)
                    .then(|| path.trim_start_matches('/').to_owned())
            })
        };
        let ours = format!("orchestrator-{}", std::process::id());
        let root = Path::new("/sys/fs/cgroup");
        if let (Some(memory), Some(pids)) = (path_of("memory"), path_of("pids")) {
            let memory = root.join("memory").join(memory).join(&ours);
            let pids = root.join("pids").join(pids).join(&ours);
            for dir in [&memory, &pids] {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            return Ok(Cgroups::V1 { memory, pids });
        }
        if let Some(path) = path_of("") {
            let dir = root.join(path).join(&ours);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids").map_err(|e| {
                let _ = std::fs::remove_dir(&dir);
                format!("memory and pids are not delegated to this cgroup v2 subtree: {e}")
            })?;
            return Ok(Cgroups::V2 { dir });
        }
        Err("neither cgroup v1 memory and pids hierarchies nor cgroup v2 found".into())
    }

    /// A worker's cgroups, limits set.
    fn create(&self, uid: u32, memory: u64, processes: u32) -> io::Result<CellGroups> {
        let name = format!("w{uid}");
        let (dirs, limits): (Vec<PathBuf>, Vec<(PathBuf, String)>) = match self {
            Cgroups::V1 { memory: m, pids: p } => {
                let (m, p) = (m.join(&name), p.join(&name));
                // The swap limit may never be below the memory limit: lifted
                // first (a reused cgroup keeps its old one), set last.
                let limits = vec![
                    (m.join("memory.memsw.limit_in_bytes"), "-1".to_owned()),
                    (m.join("memory.limit_in_bytes"), memory.to_string()),
                    (m.join("memory.memsw.limit_in_bytes"), memory.to_string()),
                    (p.join("pids.max"), processes.to_string()),
                ];
                (vec![m, p], limits)
            }
            Cgroups::V2 { dir } => {
                let d = dir.join(&name);
                let limits = vec![
                    (d.join("memory.max"), memory.to_string()),
                    (d.join("memory.swap.max"), "0".to_owned()),
                    (d.join("pids.max"), processes.to_string()),
                ];
                (vec![d], limits)
            }
        };
        let groups = CellGroups {
            dirs,
            v2: matches!(self, Cgroups::V2 { .. }),
        };
        for dir in &groups.dirs {
            // A cgroup left by a worker that died with an earlier service is
            // reused; the service's own directory is made again if it went.
            std::fs::create_dir_all(dir)?;
        }
        for (file, value) in limits {
            // Without swap accounting these files are absent; then there is no swap to account.
            let optional =
                file.ends_with("memory.swap.max") || file.ends_with("memory.memsw.limit_in_bytes");
            if let Err(e) = std::fs::write(&file, &value) {
                if !optional {
                    return Err(io::Error::other(format!("{}: {e}", file.display())));
                }
            }
        }
        Ok(groups)
    }
}

/// A worker's cgroup directories.
#[derive(Debug)]
struct CellGroups {
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl CellGroups {
    fn oom_killed(&self) -> bool {
        let Some(dir) = self.dirs.first() else {
            return false;
        };
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
            })
            .is_some_and(|kills| kills > 0)
    }

    /// Kills what is left and removes the directories (waiting for the
    /// kernel to let the processes go).
    async fn clear(&self) {
        for dir in &self.dirs {
            for _ in 0..100 {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: signalling a process in a cgroup only our workers use.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
}

/// An executable on the service's `PATH` or in the usual places.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"])
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| is_executable(candidate));
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Makes `dir` and what is under it readable by a worker's user.
pub fn make_readable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let wanted = if meta.is_dir() || mode & 0o111 != 0 {
        mode | 0o555
    } else {
        mode | 0o444
    };
    if wanted != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(wanted & 0o7777))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            make_readable(&entry?.path())?;
        }
    }
    Ok(())
}

impl Drop for CellGroups {
    fn drop(&mut self) {
        // Usually gone already (`clear`); a cell whose processes never ran
        // (the trial, a failed spawn) is empty and goes at once.
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(Cgroups::V1 { memory, pids }) = &self.cgroups {
            let _ = std::fs::remove_dir(memory);
            let _ = std::fs::remove_dir(pids);
        }
        if let Some(Cgroups::V2 { dir }) = &self.cgroups {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
