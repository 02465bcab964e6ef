//! Entering a network namespace — kernel-facing: `setns(2)` on a dedicated OS thread.
//!
//! `setns(fd, CLONE_NEWNET)` moves only the calling *thread* into the namespace (a network
//! namespace may be entered by one thread of a multi-threaded process, unlike a mount or user
//! namespace; setns(2)). So collection runs on a fresh `std::thread` — never on a tokio worker,
//! which would carry the namespace into unrelated tasks — and everything it does there follows:
//! netlink and raw sockets it opens, `/proc/sys/net` it reads, and the children it spawns (a child
//! inherits the spawning thread's namespaces), which is how `iptables-save`, `nft`, `ipset` and
//! `ip` see the target namespace without `ip netns exec`. The thread ends when the work is done,
//! so no thread of the process is left in a foreign namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which network namespace to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetnsTarget {
    /// The namespace netprobe runs in (nothing is entered).
    Current,
    /// A namespace named by `ip netns add NAME`: the bind mount `/run/netns/NAME`.
    Named {
        /// The name (no `/`).
        name: String,
    },
    /// The namespace of a process: `/proc/PID/ns/net` (a container's, from its main pid).
    Pid {
        /// The process id, as seen from netprobe's pid namespace.
        pid: u32,
    },
}

impl NetnsTarget {
    /// The file whose descriptor `setns(2)` takes; `None` for [`NetnsTarget::Current`].
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            NetnsTarget::Current => None,
            NetnsTarget::Named { name } => Some(Path::new("/run/netns").join(name)),
            NetnsTarget::Pid { pid } => Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
        }
    }

    /// For messages: `current network namespace`, `network namespace NAME`, `network namespace of pid N`.
    pub fn describe(&self) -> String {
        match self {
            NetnsTarget::Current => "current network namespace".to_string(),
            NetnsTarget::Named { name } => format!("network namespace {name}"),
            NetnsTarget::Pid { pid } => format!("network namespace of pid {pid}"),
        }
    }
}

/// Why the namespace could not be entered. All are input or environment errors (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `--netns` was not a plain name.
    #[error("--netns {0:?} is not a namespace name (a name as `ip netns list` shows, without `/`)")]
    InvalidName(String),
    /// No `/run/netns/NAME`.
    #[error("no network namespace named {name} ({path} does not exist; see `ip netns list`)")]
    NoSuchNamespace {
        /// The name given.
        name: String,
        /// The path looked up.
        path: String,
    },
    /// No process with that pid.
    #[error("no process with pid {pid} (/proc/{pid} does not exist)")]
    NoSuchPid {
        /// The pid given.
        pid: u32,
    },
    /// The namespace file exists but cannot be opened (permissions, a process that just exited).
    #[error("cannot open {path}: {source}")]
    Open {
        /// The namespace file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `setns(2)` refused: not a network namespace file (EINVAL), or no `CAP_SYS_ADMIN` (EPERM).
    #[error("cannot enter {path} (setns): {source}")]
    Setns {
        /// The namespace file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The collector thread could not start, or panicked.
    #[error("collector thread: {0}")]
    Thread(String),
}

/// Opens the namespace file of `target` (`None` for the current namespace), with a clear error
/// when it does not exist.
fn open(target: &NetnsTarget) -> Result<Option<(File, String)>, NetnsError> {
    if let NetnsTarget::Named { name } = target
        && (name.is_empty() || name.contains('/') || name == "." || name == "..")
    {
        return Err(NetnsError::InvalidName(name.clone()));
    }
    if let NetnsTarget::Pid { pid } = target
        && !Path::new(&format!("/proc/{pid}")).exists()
    {
        return Err(NetnsError::NoSuchPid { pid: *pid });
    }
    let Some(path) = target.path() else {
        return Ok(None);
    };
    let shown = path.display().to_string();
    match File::open(&path) {
        Ok(f) => Ok(Some((f, shown))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match target {
            NetnsTarget::Named { name } => Err(NetnsError::NoSuchNamespace {
                name: name.clone(),
                path: shown,
            }),
            NetnsTarget::Pid { pid } => Err(NetnsError::NoSuchPid { pid: *pid }),
            NetnsTarget::Current => Err(NetnsError::Open {
                path: shown,
                source: e,
            }),
        },
        Err(source) => Err(NetnsError::Open {
            path: shown,
            source,
        }),
    }
}

/// Runs `f` on a new OS thread that has first entered `target`'s network namespace, and returns
/// its result. The thread exits afterwards. Errors: see [`NetnsError`].
pub fn run_in<F, R>(target: &NetnsTarget, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let ns = open(target)?;
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("netns-collect".into())
            .spawn_scoped(s, move || {
                if let Some((file, path)) = ns {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                        |e| NetnsError::Setns {
                            path,
                            source: e.into(),
                        },
                    )?;
                }
                Ok(f())
            })
            .map_err(|e| NetnsError::Thread(format!("cannot start: {e}")))?;
        handle
            .join()
            .unwrap_or_else(|_| Err(NetnsError::Thread("panicked".into())))
    })
}
