//! Named network namespaces (`ip netns`), deleted on drop.

use std::fs::File;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use crate::run::{COMMAND_TIMEOUT, describe, run_bounded};
use crate::{LabError, check, require_lab};

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// A network namespace created with `ip netns add`, with its loopback up. Dropping it kills any
/// process still inside it (they can only be ours: the name is unique to this process) and deletes
/// it with `ip netns del`, which also destroys its interfaces (both ends of a veth pair).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// A process started with [`Netns::spawn`]; killed (by its pid) and reaped when dropped.
#[derive(Debug)]
pub struct NsChild {
    child: Child,
}

impl NsChild {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The underlying [`Child`], e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Netns {
    /// Creates a namespace named `PREFIX-PID-N` (N counts up per process) and sets its loopback up.
    /// Panics via [`require_lab`] when not root or `ip` is missing. Errors: `ip netns add` or
    /// `ip link set lo up` failed.
    pub fn new(prefix: &str) -> Result<Netns, LabError> {
        require_lab();
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT_NS.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` and `/run/netns/NAME` know it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME ARGV…` as a [`Command`], for callers that need to add environment or
    /// arguments before running it with [`run_bounded`](crate::run_bounded).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// Runs `argv` inside the namespace and returns its output whatever its exit status. Bounded by
    /// [`COMMAND_TIMEOUT`]. Errors: it could not be started or overran.
    pub fn exec(&self, argv: &[&str]) -> Result<Output, LabError> {
        run_bounded(self.command(argv), COMMAND_TIMEOUT)
    }

    /// Runs `argv` inside the namespace and returns its trimmed stdout. Errors: as [`Netns::exec`],
    /// plus [`LabError::Failed`] (with its stderr) for a non-zero exit.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String, LabError> {
        let cmd = self.command(argv);
        let line = describe(&cmd);
        check(line, run_bounded(cmd, COMMAND_TIMEOUT)?)
    }

    /// `ip -n NAME ARGV…` (iproute2 acting on this namespace); returns stdout. Errors as
    /// [`Netns::exec_ok`].
    pub fn ip(&self, argv: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(argv);
        ip(&full)
    }

    /// Starts `argv` inside the namespace in the background, stdin closed, stdout piped, stderr
    /// inherited. The returned handle kills it when dropped.
    pub fn spawn(&self, argv: &[&str]) -> Result<NsChild, LabError> {
        let mut cmd = self.command(argv);
        let line = describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Spawn { cmd: line, source })?;
        Ok(NsChild { child })
    }

    /// Sets a sysctl of this namespace (`sysctl -w KEY=VALUE`, e.g.
    /// `net.ipv4.ping_group_range` = `0 2147483647`). Only per-namespace sysctls (most of `net.*`)
    /// stay inside it.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        self.exec_ok(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Reads a sysctl of this namespace (`sysctl -n KEY`), whitespace collapsed to single spaces.
    pub fn read_sysctl(&self, key: &str) -> Result<String, LabError> {
        let v = self.exec_ok(&["sysctl", "-n", key])?;
        Ok(v.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// Runs `f` on a new thread that has entered this namespace (`setns(2)` with `CLONE_NEWNET` on
    /// `/run/netns/NAME`) and returns its result. Sockets `f` creates belong to the namespace for
    /// good. Only the network namespace changes: `/proc/sys/net/…` read from the thread shows the
    /// namespace's values (the kernel looks them up in the reading thread's namespace), but `/sys`
    /// and `/proc/net` (bound to the mount and the process) still show the host's. A panic in `f` is
    /// propagated to the caller.
    pub fn run_in<F, R>(&self, f: F) -> Result<R, LabError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|source| LabError::Io {
            what: format!("opening {path}"),
            source,
        })?;
        thread::scope(|s| {
            let handle = s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    LabError::Io {
                        what: format!("setns({path})"),
                        source: e.into(),
                    }
                })?;
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes left inside keep the namespace alive after `ip netns del`; they are ours.
        if let Ok(pids) = ip(&["netns", "pids", &self.name]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("lab: cannot delete network namespace {}: {e}", self.name);
        }
    }
}

/// Runs `ip ARGS…` in the caller's namespace; returns stdout.
pub(crate) fn ip(args: &[&str]) -> Result<String, LabError> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let line = describe(&cmd);
    check(line, run_bounded(cmd, COMMAND_TIMEOUT)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_unique_isolated_and_deleted() {
        let a = Netns::new("labt").unwrap();
        let b = Netns::new("labt").unwrap();
        assert_ne!(a.name(), b.name());
        assert!(
            a.name()
                .starts_with(&format!("labt-{}-", std::process::id()))
        );
        let links = a.ip(&["-o", "link", "show"]).unwrap();
        assert_eq!(links.lines().count(), 1, "only loopback: {links}");
        assert!(links.contains("lo:") && links.contains("UP"), "{links}");

        a.sysctl("net.ipv4.ping_group_range", "0 2147483647")
            .unwrap();
        assert_eq!(
            a.read_sysctl("net.ipv4.ping_group_range").unwrap(),
            "0 2147483647"
        );
        assert_eq!(
            b.read_sysctl("net.ipv4.ping_group_range").unwrap(),
            "1 0",
            "sysctl stays in its namespace"
        );

        let err = a
            .exec_ok(&["sh", "-c", "echo nope >&2; exit 2"])
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");

        let name = a.name().to_string();
        let _sleeper = a.spawn(&["sleep", "60"]).unwrap();
        drop(a);
        let list = ip(&["netns", "list"]).unwrap();
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "{name} left in {list}"
        );
    }

    #[test]
    fn run_in_enters_the_namespace() {
        let ns = Netns::new("labt").unwrap();
        let host_links = std::fs::read_dir("/sys/class/net")
            .map(|d| d.count())
            .unwrap_or(0);
        // A socket bound inside the namespace: only its loopback exists there, so binding an address
        // that is not configured in it fails even if the host has it.
        ns.sysctl("net.ipv4.ping_group_range", "7 8").unwrap();
        let (inside, bound, range) = ns
            .run_in(|| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let ifaces = nix::net::if_::if_nameindex()
                    .map(|l| l.iter().count())
                    .unwrap_or(0);
                let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
                (
                    ifaces,
                    s.local_addr().unwrap(),
                    range.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .unwrap();
        assert_eq!(
            inside, 1,
            "only lo inside (the host has {host_links} interfaces)"
        );
        assert!(bound.ip().is_loopback());
        assert_eq!(range, "7 8", "/proc/sys/net follows the thread's namespace");
        let panicked = std::panic::catch_unwind(|| ns.run_in(|| panic!("boom")));
        assert!(panicked.is_err(), "a panic inside propagates");
    }
}
