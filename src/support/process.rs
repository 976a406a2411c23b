//! Child processes we supervise: each leads a process group of its own, so a
//! signal reaches everything it started, and gets `SIGKILL` when the thread
//! that spawned it ends (`PR_SET_PDEATHSIG`), so none outlives the service.

use std::io;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

/// How often [`stop_groups`] looks whether the groups have ended.
const POLL: Duration = Duration::from_millis(20);

/// The process group of a child spawned by [`spawn_supervised`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessGroup(Pid);

impl ProcessGroup {
    /// Its id (its leader's pid), for logs.
    pub fn id(self) -> i32 {
        self.0.as_raw_pid()
    }

    /// Sends `signal` to every process in the group; a group already gone
    /// is not an error.
    fn signal(self, signal: Signal) -> io::Result<()> {
        match rustix::process::kill_process_group(self.0, signal) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Asks the group to stop (`SIGTERM`).
    pub fn terminate(self) {
        let _ = self.signal(Signal::TERM);
    }

    /// Kills the group (`SIGKILL`).
    pub fn kill(self) {
        let _ = self.signal(Signal::KILL);
    }
}

/// Spawns `command` as the leader of a new process group that is killed
/// when the spawning thread ends. Steps the caller registered with
/// `pre_exec` run in the child before the parent-death signal is set.
pub fn spawn_supervised(command: &mut Command) -> io::Result<(Child, Option<ProcessGroup>)> {
    command.process_group(0);
    // SAFETY: the closure makes one raw `prctl` system call (async-signal-safe),
    // allocates nothing and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                .map_err(io::Error::from)
        });
    }
    let child = command.spawn()?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw)
        .map(ProcessGroup);
    Ok((child, group))
}

/// Stops groups the way a service manager does: `SIGTERM` to each group that
/// `running` lists, up to `grace` for them to end (`running` listing none),
/// then `SIGKILL` to those still listed. Gives back how many were killed.
pub async fn stop_groups(running: impl Fn() -> Vec<ProcessGroup>, grace: Duration) -> usize {
    let groups = running();
    if groups.is_empty() {
        return 0;
    }
    for group in groups {
        group.terminate();
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if running().is_empty() {
            return 0;
        }
        tokio::time::sleep(POLL).await;
    }
    let left = running();
    for group in &left {
        group.kill();
    }
    left.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(command: &str) -> Command {
        let mut sh = Command::new("sh");
        sh.args(["-c", command]);
        sh
    }

    #[tokio::test]
    async fn a_group_is_killed_with_everything_it_started() {
        // The shell starts a grandchild in the same group; killing the group ends both.
        let (mut child, group) = spawn_supervised(&mut sleeper("sleep 30 & wait")).unwrap();
        let group = group.unwrap();
        assert_eq!(
            rustix::process::getpgid(Pid::from_raw(group.id())).ok(),
            Pid::from_raw(group.id()),
            "the child leads its own group"
        );
        group.kill();
        let status = child.wait().await.unwrap();
        assert!(!status.success());
        group.kill(); // gone already: not an error
    }

    #[tokio::test]
    async fn stopping_asks_first_and_kills_after_the_grace() {
        let (mut polite, polite_group) = spawn_supervised(&mut sleeper("sleep 30")).unwrap();
        let (mut stubborn, stubborn_group) =
            spawn_supervised(&mut sleeper("trap '' TERM; sleep 30 & wait; sleep 30")).unwrap();
        let groups = [polite_group.unwrap(), stubborn_group.unwrap()];
        // The stubborn shell must have set its trap before it is asked.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let alive = |group: &ProcessGroup| {
            rustix::process::test_kill_process_group(group.0).is_ok()
                && std::fs::read_to_string(format!("/proc/{}/stat", group.id()))
                    .is_ok_and(|stat| !stat.contains(") Z "))
        };
        let killed = stop_groups(
            || groups.iter().copied().filter(alive).collect(),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(killed, 1, "only the one that ignored SIGTERM");
        assert!(polite.wait().await.is_ok());
        assert!(stubborn.wait().await.is_ok());
        assert_eq!(stop_groups(Vec::new, Duration::from_secs(5)).await, 0);
    }
}
