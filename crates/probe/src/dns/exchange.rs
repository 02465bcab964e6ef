//! One DNS query/response exchange over UDP (RFC 1035 §4.2.1) or TCP (RFC 1035 §4.2.2, RFC 7766).
//!
//! Replies are matched on the message id, the QR bit and the question section, as RFC 5452 §9.1 asks of
//! a resolver; anything else that arrives is skipped, so a stray, late or spoofed datagram cannot
//! answer the probe. A reply that does not parse is skipped too, but remembered: if nothing valid
//! arrives before the deadline the probe reports the parse error (`protocol-error`), which says more
//! than `timeout` about a server that is answering with garbage.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use crate::Reason;

/// The largest DNS message either transport can carry (TCP's 2-byte length prefix, a UDP datagram).
const MAX_MESSAGE: usize = 65_535;

/// Why an exchange produced no usable response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The deadline passed with no matching reply and no malformed one.
    #[error("no reply within the timeout")]
    Timeout,
    /// A socket operation failed (`ECONNREFUSED` from an ICMP port unreachable, a TCP RST, …).
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done (`connect`, `send`, `receive`).
        op: &'static str,
        /// The error the kernel returned.
        source: io::Error,
    },
    /// Only replies that do not parse as DNS messages arrived.
    #[error("the server sent a reply that is not a valid DNS message: {0}")]
    Malformed(String),
    /// The server closed the TCP connection without answering.
    #[error("the server closed the TCP connection without answering")]
    Closed,
}

impl ExchangeError {
    /// The outcome reason this error maps to.
    pub(crate) fn reason(&self) -> Reason {
        match self {
            ExchangeError::Timeout => Reason::Timeout,
            ExchangeError::Io { source, .. } => Reason::from_io_error(source),
            ExchangeError::Malformed(_) | ExchangeError::Closed => Reason::ProtocolError,
        }
    }
}

/// A matching response and how it was obtained.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// The response whose id and question match the query.
    pub(crate) response: Message,
    /// Whether a truncated UDP reply made the prober repeat the query over TCP.
    pub(crate) tcp_fallback: bool,
}

/// Sends `query` (already encoded as `wire`) over UDP; a truncated reply (TC bit, RFC 1035 §4.1.1)
/// is retried over TCP as RFC 7766 §5 requires. Bounded by `deadline`.
pub(crate) async fn udp(
    server: SocketAddr,
    query: &Message,
    wire: &[u8],
    deadline: Instant,
) -> Result<Exchange, ExchangeError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let io = |op| move |source| ExchangeError::Io { op, source };
    let socket = UdpSocket::bind(local).await.map_err(io("bind"))?;
    // A connected socket only receives datagrams from `server`, and the kernel reports an ICMP port
    // unreachable to it as ECONNREFUSED (udp(7)), which becomes `connection-refused`.
    socket.connect(server).await.map_err(io("connect"))?;
    let mut malformed = None;
    let received = timeout_at(deadline, async {
        socket.send(wire).await.map_err(io("send"))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let n = socket.recv(&mut buf).await.map_err(io("receive"))?;
            match classify(&buf[..n], query) {
                Verdict::Match(response) => return Ok(response),
                Verdict::Malformed(e) => malformed = Some(e),
                Verdict::Unrelated => {}
            }
        }
    })
    .await;
    let response = match received {
        Ok(result) => result?,
        Err(_) => return Err(malformed.map_or(ExchangeError::Timeout, ExchangeError::Malformed)),
    };
    if response.metadata.truncation {
        let mut exchange = tcp(server, query, wire, deadline).await?;
        exchange.tcp_fallback = true;
        return Ok(exchange);
    }
    Ok(Exchange {
        response,
        tcp_fallback: false,
    })
}

/// Sends `query` over a new TCP connection with the 2-byte length prefix of RFC 1035 §4.2.2 and
/// reads length-prefixed messages until one matches. Bounded by `deadline`.
pub(crate) async fn tcp(
    server: SocketAddr,
    query: &Message,
    wire: &[u8],
    deadline: Instant,
) -> Result<Exchange, ExchangeError> {
    let io = |op| move |source| ExchangeError::Io { op, source };
    let len = u16::try_from(wire.len()).map_err(|_| ExchangeError::Io {
        op: "send",
        source: io::Error::new(io::ErrorKind::InvalidInput, "query longer than 65535 bytes"),
    })?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);

    let mut malformed = None;
    let received = timeout_at(deadline, async {
        let mut stream = TcpStream::connect(server).await.map_err(io("connect"))?;
        stream.write_all(&framed).await.map_err(io("send"))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let mut prefix = [0u8; 2];
            read_frame(&mut stream, &mut prefix).await?;
            let frame = &mut buf[..usize::from(u16::from_be_bytes(prefix))];
            read_frame(&mut stream, frame).await?;
            match classify(frame, query) {
                Verdict::Match(response) => return Ok(response),
                Verdict::Malformed(e) => malformed = Some(e),
                Verdict::Unrelated => {}
            }
        }
    })
    .await;
    match received {
        Ok(Ok(response)) => Ok(Exchange {
            response,
            tcp_fallback: false,
        }),
        Ok(Err(ExchangeError::Closed)) => {
            Err(malformed.map_or(ExchangeError::Closed, ExchangeError::Malformed))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(malformed.map_or(ExchangeError::Timeout, ExchangeError::Malformed)),
    }
}

/// Fills `buf` from the stream; end of stream becomes [`ExchangeError::Closed`].
async fn read_frame(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), ExchangeError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ExchangeError::Closed),
        Err(source) => Err(ExchangeError::Io {
            op: "receive",
            source,
        }),
    }
}

/// What one received message is to the probe.
#[derive(Debug)]
enum Verdict {
    /// The response to our query.
    Match(Message),
    /// A well-formed message that is not our response (other id, not a response, other question).
    Unrelated,
    /// Bytes that do not decode as a DNS message; the text is the decoder's error.
    Malformed(String),
}

fn classify(bytes: &[u8], query: &Message) -> Verdict {
    let message = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => return Verdict::Malformed(e.to_string()),
    };
    if message.metadata.id != query.metadata.id
        || message.metadata.message_type != MessageType::Response
    {
        return Verdict::Unrelated;
    }
    // Some servers leave the question out of FORMERR/NOTIMP/REFUSED replies (RFC 1035 does not
    // require echoing it); with a matching id such a reply is still the answer to this query.
    let bare_error =
        message.queries.is_empty() && message.metadata.response_code != ResponseCode::NoError;
    if message.queries == query.queries || bare_error {
        Verdict::Match(message)
    } else {
        Verdict::Unrelated
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query() -> Message {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("www.example.").unwrap(),
            RecordType::A,
        ));
        m
    }

    #[test]
    fn classify_matches_id_qr_and_question() {
        let q = query();
        let mut reply = Message::response(q.metadata.id, OpCode::Query);
        reply.add_queries(q.queries.clone());
        assert!(matches!(
            classify(&reply.to_vec().unwrap(), &q),
            Verdict::Match(_)
        ));

        let mut other_id = reply.clone();
        other_id.metadata.id = q.metadata.id.wrapping_add(1);
        assert!(matches!(
            classify(&other_id.to_vec().unwrap(), &q),
            Verdict::Unrelated
        ));

        // Our own query reflected back (QR=0) is not an answer.
        assert!(matches!(
            classify(&q.to_vec().unwrap(), &q),
            Verdict::Unrelated
        ));

        let mut other_question = Message::response(q.metadata.id, OpCode::Query);
        other_question.add_query(Query::query(
            Name::from_ascii("www.example.").unwrap(),
            RecordType::MX,
        ));
        assert!(matches!(
            classify(&other_question.to_vec().unwrap(), &q),
            Verdict::Unrelated
        ));

        let bare_formerr = Message::error_msg(q.metadata.id, OpCode::Query, ResponseCode::FormErr);
        assert!(matches!(
            classify(&bare_formerr.to_vec().unwrap(), &q),
            Verdict::Match(_)
        ));
        let bare_noerror = Message::response(q.metadata.id, OpCode::Query);
        assert!(matches!(
            classify(&bare_noerror.to_vec().unwrap(), &q),
            Verdict::Unrelated
        ));
    }

    proptest::proptest! {
        /// Random bytes, and valid replies with bytes flipped or cut short, never panic the decoder
        /// path; whatever they are, they are classified.
        #[test]
        fn classify_never_panics(noise in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
                                 flip in 0usize..64, cut in 0usize..64) {
            let q = query();
            let _ = classify(&noise, &q);
            let mut reply = Message::response(q.metadata.id, OpCode::Query);
            reply.add_queries(q.queries.clone());
            let mut wire = reply.to_vec().unwrap();
            let at = flip % wire.len();
            wire[at] ^= 0xff;
            let _ = classify(&wire, &q);
            wire.truncate(wire.len().saturating_sub(cut));
            let _ = classify(&wire, &q);
        }
    }

    #[test]
    fn short_message_is_malformed() {
        assert!(matches!(classify(b"\x00", &query()), Verdict::Malformed(_)));
    }
}
