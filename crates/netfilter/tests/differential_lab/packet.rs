//! Hand-built test packets: a TCP SYN, a UDP datagram or an ICMP/ICMPv6 echo request.

use std::net::IpAddr;

use netfilter::Family;
use netfilter::eval::Flow;
use netfilter::generate::cases::packet_len;

/// Internet checksum (RFC 1071) of `data` with `init` folded in.
pub(crate) fn checksum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IP packet of `flow`: a SYN without options, a UDP datagram or an echo request with 8
/// payload bytes (the lengths of [`packet_len`]), with correct checksums.
pub(crate) fn packet(flow: &Flow, id: u16) -> (Vec<u8>, IpAddr) {
    let v6 = flow.family == Family::Ipv6;
    let payload = *b"netprobe";
    let mut l4: Vec<u8> = match flow.protocol {
        6 => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&flow.sport.unwrap().to_be_bytes());
            t[2..4].copy_from_slice(&flow.dport.unwrap().to_be_bytes());
            t[4..8].copy_from_slice(&0x1000_0000u32.wrapping_add(u32::from(id)).to_be_bytes());
            t[12] = 5 << 4;
            t[13] = 0x02; // SYN
            t[14..16].copy_from_slice(&1024u16.to_be_bytes());
            t
        }
        17 => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&flow.sport.unwrap().to_be_bytes());
            u[2..4].copy_from_slice(&flow.dport.unwrap().to_be_bytes());
            u[4..6].copy_from_slice(&16u16.to_be_bytes());
            u.extend_from_slice(&payload);
            u
        }
        1 | 58 => {
            let mut i = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
            i.extend_from_slice(&id.to_be_bytes());
            i.extend_from_slice(&1u16.to_be_bytes());
            i.extend_from_slice(&payload);
            i
        }
        p => panic!("protocol {p} not sent by the lab"),
    };
    let sum_at = match flow.protocol {
        6 => 16,
        17 => 6,
        _ => 2,
    };
    let (src, dst) = (ip_bytes(flow.src), ip_bytes(flow.dst));
    // The pseudo-header (RFC 793/768 for IPv4, RFC 8200 §8.1 for IPv6, which ICMPv6 uses too);
    // ICMP over IPv4 has none.
    let mut pseudo = Vec::new();
    if flow.protocol != 1 {
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        if v6 {
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, flow.protocol]);
        } else {
            pseudo.extend_from_slice(&[0, flow.protocol]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        }
    }
    let init = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let cs = checksum(&l4, init);
    l4[sum_at..sum_at + 2].copy_from_slice(&cs.to_be_bytes());
    let mut ip = if v6 {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        h[6] = flow.protocol;
        h[7] = 64;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
        h
    } else {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&id.to_be_bytes());
        h[8] = 64;
        h[9] = flow.protocol;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let cs = checksum(&h, 0);
        h[10..12].copy_from_slice(&cs.to_be_bytes());
        h
    };
    ip.extend_from_slice(&l4);
    assert_eq!(
        ip.len(),
        usize::from(packet_len(flow.family, flow.protocol))
    );
    (ip, flow.dst)
}

pub(crate) fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}
