//! The kernel-facing part of the ICMP engine: opening an ICMP socket, its options, `sendto` and
//! `recvmsg` with timestamp and error-queue control messages. Everything goes through the safe
//! wrappers of socket2 and nix; no `unsafe` here.
//!
//! Socket choice (DESIGN.md, "ICMP permission in containers"): a datagram ("ping") socket first, which
//! needs no privilege when `net.ipv4.ping_group_range` admits one of our gids; else a raw socket, which
//! needs `CAP_NET_RAW`; else an [`IcmpPermissionError`] explaining both refusals.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};

use super::packet::{ICMP_ECHO_REPLY, ICMPV6_ECHO_REPLY, Wire};
use super::permission::IcmpPermissionError;
use crate::outcome::IcmpSocketMode;
use crate::resolve::Family;

/// Receive buffer we ask for (`SO_RCVBUF`; the kernel caps it at `net.core.rmem_max`). Bursts of
/// replies from thousands of targets must not overflow the 208 KiB default while the receive task
/// waits for a CPU.
const RCVBUF_BYTES: usize = 4 << 20;

/// An open ICMP socket of one family, non-blocking, with kernel receive timestamps enabled.
#[derive(Debug)]
pub(crate) struct IcmpSocket {
    sock: Socket,
    family: Family,
    mode: IcmpSocketMode,
    /// Identifier we write into requests: random on raw sockets, 0 on datagram sockets (the kernel
    /// replaces it with the socket's "port").
    ident: u16,
}

/// One packet from the receive queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// Source address from `msg_name`.
    pub from: Option<IpAddr>,
    /// `SCM_TIMESTAMPNS`: CLOCK_REALTIME nanoseconds since the Unix epoch, when the kernel attached it.
    pub kernel_rx_ns: Option<i64>,
    /// CLOCK_MONOTONIC time right after `recvmsg` returned.
    pub user_rx: Instant,
}

/// One message from the error queue (`MSG_ERRQUEUE`, `ip(7)` `IP_RECVERR`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReceivedError {
    /// Bytes of the quoted packet copied into the buffer (starting at our ICMP header).
    pub len: usize,
    /// The failed request's destination (`msg_name`).
    pub dst: Option<IpAddr>,
    /// ICMP type and code of the error, when `ee_origin` is ICMP/ICMPv6.
    pub icmp: Option<(u8, u8)>,
    /// Who sent the error (`SO_EE_OFFENDER`).
    pub offender: Option<IpAddr>,
}

impl IcmpSocket {
    /// Opens a socket for `family`: datagram first, raw second.
    pub fn open(family: Family) -> Result<Self, IcmpPermissionError> {
        let (domain, proto) = match family {
            Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
            Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
        };
        let datagram_err = match Self::configure(
            Socket::new(domain, Type::DGRAM, Some(proto)),
            family,
            IcmpSocketMode::Datagram,
        ) {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        match Self::configure(
            Socket::new(domain, Type::RAW, Some(proto)),
            family,
            IcmpSocketMode::Raw,
        ) {
            Ok(s) => Ok(s),
            Err(raw_err) => Err(IcmpPermissionError::diagnose(
                family,
                &datagram_err,
                &raw_err,
            )),
        }
    }

    fn configure(
        sock: io::Result<Socket>,
        family: Family,
        mode: IcmpSocketMode,
    ) -> io::Result<Self> {
        let sock = sock?;
        sock.set_nonblocking(true)?;
        // The options below only improve things; the socket works without them.
        if let Err(e) = setsockopt(&sock, sockopt::ReceiveTimestampns, &true) {
            tracing::debug!(error = %e, "SO_TIMESTAMPNS unavailable; RTTs use user-space receive times");
        }
        if let Err(e) = sock.set_recv_buffer_size(RCVBUF_BYTES) {
            tracing::debug!(error = %e, "cannot raise SO_RCVBUF");
        }
        let ident = match mode {
            IcmpSocketMode::Datagram => {
                // Without IP_RECVERR the kernel drops ICMP errors for an unconnected ping socket
                // (`ping_err()` in net/ipv4/ping.c); with it they arrive on the error queue.
                let r = match family {
                    Family::V4 => setsockopt(&sock, sockopt::Ipv4RecvErr, &true),
                    Family::V6 => setsockopt(&sock, sockopt::Ipv6RecvErr, &true),
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "IP_RECVERR unavailable; ICMP errors will show as timeouts");
                }
                0
            }
            IcmpSocketMode::Raw => {
                let ident = rand::random::<u16>();
                // A raw socket sees every ICMP packet of the namespace, including our own requests on
                // loopback and other pingers' replies; drop those in the kernel. The parser ignores
                // them anyway, so a failure here only costs CPU.
                let filter = match family {
                    Family::V4 => raw_filter_v4(ident),
                    Family::V6 => raw_filter_v6(ident),
                };
                if let Err(e) = sock.attach_filter(&filter) {
                    tracing::debug!(error = %e, "cannot attach the ICMP socket filter");
                }
                ident
            }
        };
        Ok(IcmpSocket {
            sock,
            family,
            mode,
            ident,
        })
    }

    /// Datagram or raw.
    pub fn mode(&self) -> IcmpSocketMode {
        self.mode
    }

    /// The identifier to write into requests.
    pub fn ident(&self) -> u16 {
        self.ident
    }

    /// The layout `recvmsg` delivers on this socket.
    pub fn wire(&self) -> Wire {
        match (self.family, self.mode) {
            (Family::V4, IcmpSocketMode::Raw) => Wire::Ipv4WithHeader,
            (Family::V4, IcmpSocketMode::Datagram) => Wire::Ipv4,
            (Family::V6, _) => Wire::Ipv6,
        }
    }

    /// Sends one request to `addr` (non-blocking: `WouldBlock` when the send buffer is full).
    pub fn send_to(&self, pkt: &[u8], addr: IpAddr) -> io::Result<usize> {
        self.sock
            .send_to(pkt, &SockAddr::from(SocketAddr::new(addr, 0)))
    }

    /// Reads one packet from the receive queue into `buf` (truncated to its length). `cmsg` must be
    /// [`cmsg_buffer`]'s. `WouldBlock` when the queue is empty; other errors are usually a pending
    /// ICMP error reported through `sk_err` once, and the caller should just read on.
    pub fn recv(&self, buf: &mut [u8], cmsg: &mut [u8]) -> io::Result<Received> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::empty(),
        )?;
        let user_rx = Instant::now();
        let mut kernel_rx_ns = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    kernel_rx_ns = ts
                        .tv_sec()
                        .checked_mul(1_000_000_000)
                        .and_then(|s| s.checked_add(ts.tv_nsec()));
                }
            }
        }
        Ok(Received {
            len: msg.bytes,
            from: msg.address.as_ref().and_then(storage_ip),
            kernel_rx_ns,
            user_rx,
        })
    }

    /// Reads one message from the error queue. `WouldBlock` when it is empty.
    pub fn recv_error(&self, buf: &mut [u8], cmsg: &mut [u8]) -> io::Result<ReceivedError> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::MSG_ERRQUEUE,
        )?;
        let mut icmp = None;
        let mut offender = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::Ipv4RecvErr(ee, off)
                        if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP =>
                    {
                        icmp = Some((ee.ee_type, ee.ee_code));
                        offender = off
                            .map(|s| IpAddr::V4(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr))));
                    }
                    ControlMessageOwned::Ipv6RecvErr(ee, off)
                        if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6 =>
                    {
                        icmp = Some((ee.ee_type, ee.ee_code));
                        offender = off.map(|s| IpAddr::V6(Ipv6Addr::from(s.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        Ok(ReceivedError {
            len: msg.bytes,
            dst: msg.address.as_ref().and_then(storage_ip),
            icmp,
            offender,
        })
    }
}

impl AsRawFd for IcmpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// A control-message buffer large enough for a timestamp or an extended error with its offender.
pub(crate) fn cmsg_buffer() -> Vec<u8> {
    nix::cmsg_space!(libc::timespec, libc::sock_extended_err, libc::sockaddr_in6)
}

fn storage_ip(s: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

// Classic BPF opcodes (`include/uapi/linux/filter.h`, `Documentation/networking/filter.rst`).
const BPF_LD_B_ABS: u16 = 0x30; // A = pkt[k]
const BPF_LD_H_ABS: u16 = 0x28; // A = be16 pkt[k..k+2]
const BPF_LD_B_IND: u16 = 0x50; // A = pkt[X + k]
const BPF_LD_H_IND: u16 = 0x48; // A = be16 pkt[X + k..]
const BPF_LDX_B_MSH: u16 = 0xb1; // X = 4 * (pkt[k] & 0xf): the IPv4 header length
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGT_K: u16 = 0x25;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const ACCEPT: u32 = u32::MAX;

/// Raw IPv4 sockets see the IPv4 header first: keep echo replies carrying `ident` and the error types
/// that quote a request (3 destination unreachable, 11 time exceeded, 12 parameter problem).
fn raw_filter_v4(ident: u16) -> Vec<SockFilter> {
    vec![
        SockFilter::new(BPF_LDX_B_MSH, 0, 0, 0), // 0: X = IP header length
        SockFilter::new(BPF_LD_B_IND, 0, 0, 0),  // 1: A = ICMP type
        SockFilter::new(BPF_JEQ_K, 3, 0, u32::from(ICMP_ECHO_REPLY)), // 2: reply → 6
        SockFilter::new(BPF_JEQ_K, 4, 0, 3),     // 3: → 8 accept
        SockFilter::new(BPF_JEQ_K, 3, 0, 11),    // 4: → 8 accept
        SockFilter::new(BPF_JEQ_K, 2, 3, 12),    // 5: → 8 accept, else 9 drop
        SockFilter::new(BPF_LD_H_IND, 0, 0, 4),  // 6: A = identifier
        SockFilter::new(BPF_JEQ_K, 0, 1, u32::from(ident)), // 7: ours → 8, else 9
        SockFilter::new(BPF_RET_K, 0, 0, ACCEPT), // 8
        SockFilter::new(BPF_RET_K, 0, 0, 0),     // 9
    ]
}

/// Raw ICMPv6 sockets see the ICMPv6 header first: keep echo replies carrying `ident` and error types
/// 1–4 (RFC 4443 §3).
fn raw_filter_v6(ident: u16) -> Vec<SockFilter> {
    vec![
        SockFilter::new(BPF_LD_B_ABS, 0, 0, 0), // 0: A = type
        SockFilter::new(BPF_JEQ_K, 2, 0, u32::from(ICMPV6_ECHO_REPLY)), // 1: reply → 4
        SockFilter::new(BPF_JGT_K, 4, 0, 4),    // 2: > 4 → 7 drop
        SockFilter::new(BPF_JGE_K, 2, 3, 1),    // 3: ≥ 1 → 6 accept, else 7
        SockFilter::new(BPF_LD_H_ABS, 0, 0, 4), // 4: A = identifier
        SockFilter::new(BPF_JEQ_K, 0, 1, u32::from(ident)), // 5: ours → 6, else 7
        SockFilter::new(BPF_RET_K, 0, 0, ACCEPT), // 6
        SockFilter::new(BPF_RET_K, 0, 0, 0),    // 7
    ]
}
