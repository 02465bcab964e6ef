//! The command's process group: waiting for its leader without reaping it, killing the group, and
//! reaping group members that were re-parented to this process.
//!
//! Order matters. The group is killed while the leader is still an unreaped zombie: a zombie keeps
//! its pid, so the group id cannot have been reused by an unrelated process (`kill(2)` on a stale
//! pgid could otherwise hit a stranger). Only then is the leader reaped through tokio's `Child`.

use std::io;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

/// How long [`reap_orphans`] waits for killed members to die before giving up (they are then reaped
/// by init or whichever subreaper adopted them).
const ORPHAN_REAP_LIMIT: Duration = Duration::from_secs(1);

/// Kills the process group `pgid` with SIGKILL when dropped while armed, so a cancelled probe
/// (its future dropped) leaves nothing running.
#[derive(Debug)]
pub(crate) struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl GroupGuard {
    /// Guards the group whose id is the leader's pid `pgid` (the command runs with
    /// `process_group(0)`, i.e. `setpgid(0, 0)` in the child).
    pub(crate) fn new(pgid: u32) -> Option<Self> {
        let raw = i32::try_from(pgid).ok().filter(|p| *p > 0)?;
        Some(GroupGuard {
            pgid: Pid::from_raw(raw),
            armed: true,
        })
    }

    /// The process group id.
    pub(crate) fn pgid(&self) -> Pid {
        self.pgid
    }

    /// Whether the leader has exited (it stays a zombie: `WNOWAIT` leaves it for tokio to reap).
    /// `ECHILD` (already reaped) counts as exited.
    pub(crate) fn leader_exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.pgid), flags) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) => true,
            Err(Errno::ECHILD) => true,
            Err(_) => false,
        }
    }

    /// Sends SIGKILL to every process of the group and disarms the guard. Call it before reaping the
    /// leader. `ESRCH` cannot happen while the leader is unreaped; any error is returned for logging.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        self.armed = false;
        match killpg(self.pgid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Reaps members of group `pgid` that became this process's children. That happens when netprobe is
/// PID 1 of a container or a child subreaper (`PR_SET_CHILD_SUBREAPER`): the killed command's own
/// children are re-parented here, and nobody else would collect them, leaving zombies. Returns
/// immediately (`ECHILD`) when they were adopted by someone else. Call after the leader was reaped,
/// so this never takes the leader's status from tokio. Bounded by [`ORPHAN_REAP_LIMIT`].
pub(crate) async fn reap_orphans(pgid: Pid) -> usize {
    let group = Pid::from_raw(-pgid.as_raw());
    let give_up = tokio::time::Instant::now() + ORPHAN_REAP_LIMIT;
    let mut reaped = 0;
    // Each pass either reaps one process or sleeps 5 ms, so the count bound is generous.
    for _ in 0..10_000 {
        match waitpid(group, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if tokio::time::Instant::now() >= give_up {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(_) => reaped += 1,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    reaped
}

/// `SIGKILL (9)`-style text for a signal number.
pub(crate) fn signal_text(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => format!("{} ({signal})", s.as_str()),
        Err(_) => format!("signal {signal}"),
    }
}

/// `ENOENT (No such file or directory)`-style text for an errno.
pub(crate) fn errno_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => {
            let errno = Errno::from_raw(code);
            format!("{errno:?} ({})", errno.desc())
        }
        None => err.to_string(),
    }
}
