//! ICMP and ICMPv6 echo packets: building requests and parsing what a socket delivers.
//!
//! Pure byte handling, no I/O. Every parser takes arbitrary bytes and returns `None` for anything that
//! is not a well-formed packet of interest (truncated, foreign protocol, wrong type); none of them
//! panics or indexes out of bounds. Multi-byte fields are network byte order (big-endian) on the wire.
//!
//! Echo layout (RFC 792 for ICMP, RFC 4443 §4 for ICMPv6): type (1 byte), code (1), checksum (2),
//! identifier (2), sequence (2), then the payload. netprobe's payload starts with the probe's 64-bit
//! token (big-endian), followed by a filler pattern up to the configured size, so a reply can be tied
//! to the probe that sent it even when the kernel rewrites the identifier (datagram sockets).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the ICMP/ICMPv6 header (type, code, checksum, identifier, sequence).
pub const HEADER_LEN: usize = 8;
/// Length of the probe token at the start of the payload.
pub const TOKEN_LEN: usize = 8;

/// ICMP echo reply (RFC 792).
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP destination unreachable (RFC 792).
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP echo request (RFC 792).
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP time exceeded (RFC 792).
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP parameter problem (RFC 792).
pub const ICMP_PARAM_PROBLEM: u8 = 12;
/// ICMPv6 destination unreachable (RFC 4443 §3.1).
pub const ICMPV6_DEST_UNREACH: u8 = 1;
/// ICMPv6 packet too big (RFC 4443 §3.2).
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 time exceeded (RFC 4443 §3.3).
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
/// ICMPv6 parameter problem (RFC 4443 §3.4).
pub const ICMPV6_PARAM_PROBLEM: u8 = 4;
/// ICMPv6 echo request (RFC 4443 §4.1).
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply (RFC 4443 §4.2).
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// IP protocol number of ICMP; IPv6 next-header value of ICMPv6.
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const IPV6_HEADER_LEN: usize = 40;

/// What a socket's receive path hands over, which decides where the ICMP header starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Raw IPv4 socket: the IPv4 header comes first (`raw(7)`).
    Ipv4WithHeader,
    /// Datagram IPv4 socket: the ICMP header comes first.
    Ipv4,
    /// Any IPv6 socket: the ICMPv6 header comes first (`ipv6(7)` never passes the IPv6 header up).
    Ipv6,
}

impl Wire {
    fn is_v6(self) -> bool {
        matches!(self, Wire::Ipv6)
    }
}

/// An ICMP message that may concern one of our echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// An echo reply.
    EchoReply {
        /// Identifier (the socket's "port" on datagram sockets).
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Payload after the 8-byte header.
        payload: &'a [u8],
    },
    /// An ICMP error quoting one of our echo requests.
    Error(QuotedError<'a>),
}

/// An ICMP error message and the echo request it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedError<'a> {
    /// ICMP type of the error (e.g. 3 = destination unreachable, or 1 for ICMPv6).
    pub icmp_type: u8,
    /// ICMP code of the error.
    pub code: u8,
    /// Destination of the quoted request.
    pub dst: IpAddr,
    /// Identifier of the quoted request.
    pub ident: u16,
    /// Sequence number of the quoted request.
    pub seq: u16,
    /// Whatever part of the request's payload the error quoted (RFC 792 only guarantees 8 bytes of the
    /// original datagram, i.e. none of the payload; Linux quotes up to 576 bytes in total).
    pub payload: &'a [u8],
}

/// Writes an echo request into `buf` (cleared first): header, token, then a filler pattern up to
/// `size` payload bytes (at least [`TOKEN_LEN`]). For IPv4 the checksum is computed (RFC 1071); for
/// ICMPv6 it is left zero because the kernel computes it over the pseudo-header (RFC 4443 §2.3).
pub fn build_echo_request(
    buf: &mut Vec<u8>,
    v6: bool,
    ident: u16,
    seq: u16,
    token: u64,
    size: usize,
) {
    buf.clear();
    let ty = if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    };
    buf.extend_from_slice(&[ty, 0, 0, 0]);
    buf.extend_from_slice(&ident.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&token.to_be_bytes());
    // Same filler as iputils ping (0x08, 0x09, …) after its timestamp, so captures look familiar.
    let filler = size.saturating_sub(TOKEN_LEN);
    buf.extend((0..filler).map(|i| (i.wrapping_add(TOKEN_LEN) & 0xff) as u8));
    if !v6 {
        set_checksum(buf);
    }
}

/// Rewrites the sequence number (and, for IPv4, the checksum) of a request built by
/// [`build_echo_request`], so one buffer serves all echoes of a probe.
pub fn set_sequence(buf: &mut [u8], v6: bool, seq: u16) {
    if let Some(field) = buf.get_mut(6..8) {
        field.copy_from_slice(&seq.to_be_bytes());
    }
    if !v6 {
        set_checksum(buf);
    }
}

fn set_checksum(buf: &mut [u8]) {
    if buf.len() < HEADER_LEN {
        return;
    }
    buf[2] = 0;
    buf[3] = 0;
    let sum = internet_checksum(buf);
    buf[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// The Internet checksum of RFC 1071: one's complement of the one's-complement sum of 16-bit words
/// (an odd trailing byte is padded with zero). A packet that includes its own correct checksum sums
/// to 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The probe token at the start of an echo payload, if the payload is long enough.
pub fn token(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; TOKEN_LEN] = payload.get(..TOKEN_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Strips the IPv4 header of a raw-socket packet; returns the ICMP message it carries, or `None` when
/// the header is malformed or the protocol is not ICMP. The IPv4 total length bounds the message.
fn strip_ipv4(pkt: &[u8]) -> Option<(&[u8], Ipv4Addr, Ipv4Addr)> {
    let first = *pkt.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl {
        return None;
    }
    if pkt[9] != PROTO_ICMP {
        return None;
    }
    let total = usize::from(be16(pkt, 2)?);
    // A quoted header may have been truncated by the router, so the stated length only caps.
    let end = if total >= ihl {
        total.min(pkt.len())
    } else {
        pkt.len()
    };
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    Some((&pkt[ihl..end], src, dst))
}

/// Parses one packet from a socket's normal receive queue. Our own echo requests (which a raw socket
/// on loopback also sees), other ICMP types, bad IPv4 checksums and truncated packets give `None`.
pub fn parse(wire: Wire, pkt: &[u8]) -> Option<Parsed<'_>> {
    let icmp = match wire {
        Wire::Ipv4WithHeader => {
            let (icmp, _, _) = strip_ipv4(pkt)?;
            // The kernel hands raw sockets the packet before ICMP's own checksum check.
            if internet_checksum(icmp) != 0 {
                return None;
            }
            icmp
        }
        Wire::Ipv4 | Wire::Ipv6 => pkt,
    };
    if icmp.len() < HEADER_LEN {
        return None;
    }
    let (ty, code) = (icmp[0], icmp[1]);
    let reply = if wire.is_v6() {
        ICMPV6_ECHO_REPLY
    } else {
        ICMP_ECHO_REPLY
    };
    if ty == reply {
        return (code == 0).then(|| Parsed::EchoReply {
            ident: u16::from_be_bytes([icmp[4], icmp[5]]),
            seq: u16::from_be_bytes([icmp[6], icmp[7]]),
            payload: &icmp[HEADER_LEN..],
        });
    }
    if !is_error_type(wire.is_v6(), ty) {
        return None;
    }
    let quoted = &icmp[HEADER_LEN..];
    let (dst, inner) = if wire.is_v6() {
        strip_quoted_ipv6(quoted)?
    } else {
        strip_quoted_ipv4(quoted)?
    };
    let (ident, seq, payload) = parse_quoted_echo(wire.is_v6(), inner)?;
    Some(Parsed::Error(QuotedError {
        icmp_type: ty,
        code,
        dst,
        ident,
        seq,
        payload,
    }))
}

/// Whether `ty` is an ICMP error type that quotes the offending packet and concerns reachability.
pub fn is_error_type(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(
            ty,
            ICMPV6_DEST_UNREACH
                | ICMPV6_PACKET_TOO_BIG
                | ICMPV6_TIME_EXCEEDED
                | ICMPV6_PARAM_PROBLEM
        )
    } else {
        matches!(
            ty,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM
        )
    }
}

fn strip_quoted_ipv4(quoted: &[u8]) -> Option<(IpAddr, &[u8])> {
    let (inner, _, dst) = strip_ipv4(quoted)?;
    Some((IpAddr::V4(dst), inner))
}

fn strip_quoted_ipv6(quoted: &[u8]) -> Option<(IpAddr, &[u8])> {
    let hdr = quoted.get(..IPV6_HEADER_LEN)?;
    if hdr[0] >> 4 != 6 || hdr[6] != PROTO_ICMPV6 {
        // Our echoes carry no extension headers, so anything else is not ours.
        return None;
    }
    let dst: [u8; 16] = hdr[24..40].try_into().ok()?;
    Some((IpAddr::V6(Ipv6Addr::from(dst)), &quoted[IPV6_HEADER_LEN..]))
}

/// Parses the echo request quoted in an ICMP error (the bytes after the inner IP header, or what a
/// datagram socket's error queue returns): `(identifier, sequence, quoted payload)`.
pub fn parse_quoted_echo(v6: bool, inner: &[u8]) -> Option<(u16, u16, &[u8])> {
    let request = if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    };
    if inner.len() < HEADER_LEN || inner[0] != request {
        return None;
    }
    Some((be16(inner, 4)?, be16(inner, 6)?, &inner[HEADER_LEN..]))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ipv4_header(proto: u8, src: [u8; 4], dst: [u8; 4], payload_len: usize) -> Vec<u8> {
        let total = (20 + payload_len) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h
    }

    fn reply_from_request(req: &[u8], v6: bool) -> Vec<u8> {
        let mut r = req.to_vec();
        r[0] = if v6 {
            ICMPV6_ECHO_REPLY
        } else {
            ICMP_ECHO_REPLY
        };
        if !v6 {
            set_checksum(&mut r);
        }
        r
    }

    #[test]
    fn request_layout_and_checksum() {
        let mut buf = Vec::new();
        build_echo_request(&mut buf, false, 0x1234, 7, 0xdead_beef_0102_0304, 56);
        assert_eq!(buf.len(), HEADER_LEN + 56);
        assert_eq!(&buf[..2], &[ICMP_ECHO_REQUEST, 0]);
        assert_eq!(&buf[4..8], &[0x12, 0x34, 0, 7]);
        assert_eq!(token(&buf[HEADER_LEN..]), Some(0xdead_beef_0102_0304));
        assert_eq!(
            buf[HEADER_LEN + TOKEN_LEN],
            8,
            "filler continues where the token ends"
        );
        assert_eq!(
            internet_checksum(&buf),
            0,
            "a packet with its checksum sums to zero"
        );
        set_sequence(&mut buf, false, 0xfffe);
        assert_eq!(&buf[6..8], &[0xff, 0xfe]);
        assert_eq!(internet_checksum(&buf), 0);

        build_echo_request(&mut buf, true, 1, 2, 3, 8);
        assert_eq!(buf.len(), 16);
        assert_eq!(buf[0], ICMPV6_ECHO_REQUEST);
        assert_eq!(&buf[2..4], &[0, 0], "the kernel fills the ICMPv6 checksum");
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement 220d).
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(internet_checksum(&[0xff]), 0x00ff);
        assert_eq!(internet_checksum(&[]), 0xffff);
    }

    #[test]
    fn parses_replies_on_every_wire() {
        let mut req = Vec::new();
        build_echo_request(&mut req, false, 42, 9, 77, 56);
        let reply = reply_from_request(&req, false);
        let want = Parsed::EchoReply {
            ident: 42,
            seq: 9,
            payload: &reply[HEADER_LEN..],
        };
        assert_eq!(parse(Wire::Ipv4, &reply), Some(want));

        let mut raw = ipv4_header(PROTO_ICMP, [127, 0, 0, 1], [127, 0, 0, 1], reply.len());
        raw.extend_from_slice(&reply);
        match parse(Wire::Ipv4WithHeader, &raw) {
            Some(Parsed::EchoReply {
                ident: 42,
                seq: 9,
                payload,
            }) => assert_eq!(token(payload), Some(77)),
            other => panic!("unexpected {other:?}"),
        }

        build_echo_request(&mut req, true, 5, 6, 88, 8);
        let reply6 = reply_from_request(&req, true);
        match parse(Wire::Ipv6, &reply6) {
            Some(Parsed::EchoReply {
                ident: 5,
                seq: 6,
                payload,
            }) => assert_eq!(token(payload), Some(88)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ignores_own_requests_foreign_and_broken_packets() {
        let mut req = Vec::new();
        build_echo_request(&mut req, false, 42, 9, 77, 56);
        assert_eq!(
            parse(Wire::Ipv4, &req),
            None,
            "our own echo request (raw socket on loopback)"
        );
        let mut raw = ipv4_header(PROTO_ICMP, [127, 0, 0, 1], [127, 0, 0, 1], req.len());
        raw.extend_from_slice(&req);
        assert_eq!(parse(Wire::Ipv4WithHeader, &raw), None);

        let mut reply = reply_from_request(&req, false);
        let mut tcp = ipv4_header(6, [127, 0, 0, 1], [127, 0, 0, 1], reply.len());
        tcp.extend_from_slice(&reply);
        assert_eq!(parse(Wire::Ipv4WithHeader, &tcp), None, "not ICMP");

        reply[20] ^= 0xff;
        let mut bad = ipv4_header(PROTO_ICMP, [127, 0, 0, 1], [127, 0, 0, 1], reply.len());
        bad.extend_from_slice(&reply);
        assert_eq!(parse(Wire::Ipv4WithHeader, &bad), None, "bad checksum");

        assert_eq!(
            parse(Wire::Ipv4, &[0, 0, 0, 0, 0, 0, 0]),
            None,
            "truncated header"
        );
        assert_eq!(
            parse(Wire::Ipv4WithHeader, &[0x45; 19]),
            None,
            "truncated IP header"
        );
        assert_eq!(
            parse(Wire::Ipv4WithHeader, &[0x4f; 30]),
            None,
            "IHL beyond the packet"
        );
        assert_eq!(
            parse(Wire::Ipv6, &[ICMPV6_ECHO_REPLY, 1, 0, 0, 0, 0, 0, 0]),
            None,
            "nonzero code"
        );
        assert_eq!(
            parse(Wire::Ipv6, &[135, 0, 0, 0, 0, 0, 0, 0, 1]),
            None,
            "neighbour solicitation"
        );
        assert_eq!(token(&[1, 2, 3]), None);
    }

    #[test]
    fn parses_ipv4_errors_quoting_our_request() {
        let mut req = Vec::new();
        build_echo_request(&mut req, false, 42, 9, 77, 56);
        let mut inner = ipv4_header(PROTO_ICMP, [198, 51, 100, 1], [198, 51, 100, 2], req.len());
        inner.extend_from_slice(&req);
        let mut err = vec![ICMP_DEST_UNREACH, 1, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&inner);
        set_checksum(&mut err);
        let mut outer = ipv4_header(PROTO_ICMP, [198, 51, 100, 2], [198, 51, 100, 1], err.len());
        outer.extend_from_slice(&err);
        match parse(Wire::Ipv4WithHeader, &outer) {
            Some(Parsed::Error(e)) => {
                assert_eq!((e.icmp_type, e.code, e.ident, e.seq), (3, 1, 42, 9));
                assert_eq!(e.dst, "198.51.100.2".parse::<IpAddr>().unwrap());
                assert_eq!(token(e.payload), Some(77));
            }
            other => panic!("unexpected {other:?}"),
        }
        // RFC 792 minimum quote: inner IP header + 8 bytes, no token.
        let mut short = vec![ICMP_TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0];
        short.extend_from_slice(&inner[..28]);
        match parse(Wire::Ipv4, &short) {
            Some(Parsed::Error(e)) => assert_eq!((e.seq, token(e.payload)), (9, None)),
            other => panic!("unexpected {other:?}"),
        }
        // An error quoting someone's TCP segment is not ours.
        let mut tcp_inner = ipv4_header(6, [1, 1, 1, 1], [2, 2, 2, 2], 8);
        tcp_inner.extend_from_slice(&[0; 8]);
        let mut foreign = vec![ICMP_DEST_UNREACH, 3, 0, 0, 0, 0, 0, 0];
        foreign.extend_from_slice(&tcp_inner);
        assert_eq!(parse(Wire::Ipv4, &foreign), None);
    }

    #[test]
    fn parses_ipv6_errors_quoting_our_request() {
        let mut req = Vec::new();
        build_echo_request(&mut req, true, 3, 4, 99, 56);
        let mut inner = vec![0x60, 0, 0, 0, 0, 64, PROTO_ICMPV6, 64];
        inner.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        inner.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        inner.extend_from_slice(&req);
        let mut err = vec![ICMPV6_DEST_UNREACH, 3, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&inner);
        match parse(Wire::Ipv6, &err) {
            Some(Parsed::Error(e)) => {
                assert_eq!((e.icmp_type, e.code, e.ident, e.seq), (1, 3, 3, 4));
                assert_eq!(e.dst, "fd00::2".parse::<IpAddr>().unwrap());
                assert_eq!(token(e.payload), Some(99));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            parse_quoted_echo(true, &req).map(|(i, s, _)| (i, s)),
            Some((3, 4))
        );
        assert_eq!(
            parse_quoted_echo(false, &req),
            None,
            "an ICMPv6 request is not an ICMP one"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for wire in [Wire::Ipv4WithHeader, Wire::Ipv4, Wire::Ipv6] {
                let _ = parse(wire, &bytes);
            }
            let _ = parse_quoted_echo(false, &bytes);
            let _ = parse_quoted_echo(true, &bytes);
            let _ = token(&bytes);
            let _ = internet_checksum(&bytes);
        }

        #[test]
        fn mutated_replies_never_panic(seq in any::<u16>(), at in 0usize..92, byte in any::<u8>(), cut in 0usize..92) {
            let mut req = Vec::new();
            build_echo_request(&mut req, false, 1, seq, 2, 56);
            let reply = reply_from_request(&req, false);
            let mut raw = ipv4_header(PROTO_ICMP, [127, 0, 0, 1], [127, 0, 0, 1], reply.len());
            raw.extend_from_slice(&reply);
            if let Some(b) = raw.get_mut(at) { *b = byte; }
            raw.truncate(cut.max(1));
            let _ = parse(Wire::Ipv4WithHeader, &raw);
        }
    }
}
