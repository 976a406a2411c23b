//! What the machine offers this process: its CPUs and how the scheduler treats it.

/// CPUs this process may use (cgroup quotas included): the runtime's
/// threads and the local runtime's eager workers are counted from it.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Makes the calling thread, and the threads and processes it starts from
/// then on, batch work for the scheduler (`SCHED_BATCH`): the same share of
/// the CPU, but a thread woken by another does not preempt it. A request
/// through the local runtime wakes four threads in turn (the proxy, the
/// Runtime API's thread, the worker and back); preempting the waker each
/// time cost ~10 % of the proxy's throughput on 2 CPUs.
pub fn run_as_batch_work() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's policy; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
