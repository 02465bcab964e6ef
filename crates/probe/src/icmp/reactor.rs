//! Registering an ICMP socket with tokio's reactor: the only `unsafe` in the ICMP engine.
//!
//! tokio 1.54 made `AsyncFd` registration `unsafe` (tokio-rs/tokio#8587): the caller must guarantee
//! that the file descriptor stays open and unchanged while registered. socket2 and nix have no safe
//! wrapper for registering a raw or ping socket, and tokio's safe `UdpSocket::from_std` always adds
//! writable interest, which makes the kernel wake the reactor for every sent packet
//! (`sock_def_write_space()` on each freed send buffer) — so we register readable interest ourselves.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::socket::IcmpSocket;

/// A shared handle to an [`IcmpSocket`] that tokio can poll.
#[derive(Debug, Clone)]
pub(crate) struct SocketFd(Arc<IcmpSocket>);

impl AsRawFd for SocketFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Registers `sock` for readable (and error) readiness with the reactor of the current runtime.
/// Panics outside a runtime context (callers check `Handle::try_current` and enter it first).
pub(crate) fn register_readable(sock: Arc<IcmpSocket>) -> io::Result<AsyncFd<SocketFd>> {
    // SAFETY: the descriptor belongs to the `socket2::Socket` inside `IcmpSocket`, which is closed only
    // when that socket is dropped. The `SocketFd` we hand over holds an `Arc` to it, so the socket
    // lives at least as long as the `AsyncFd`. `IcmpSocket` offers no way to replace or close its
    // socket through a shared reference, so `as_raw_fd` returns the same descriptor throughout.
    unsafe { AsyncFd::register_with_interest(SocketFd(sock), Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}
