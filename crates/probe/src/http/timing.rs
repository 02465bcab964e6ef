//! Phase bookkeeping shared by the HTTP and TCP probers, and an IO adapter that stamps the first byte
//! read from the peer.
//!
//! A probe runs inside one `tokio::time::timeout`; when that fires, the probe future is dropped and only
//! this bookkeeping survives, so it is kept outside the future (borrowed mutably by it) and records
//! which phase was running when the deadline hit.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{Phase, PhaseTiming};

/// Phase timings of one probe. A phase that runs several times (once per redirect hop) is summed into
/// one entry, as blackbox_exporter sums `probe_http_duration_seconds{phase}` over redirects.
#[derive(Debug)]
pub(crate) struct Clock {
    started: Instant,
    current: Option<(Phase, Instant)>,
    phases: Vec<PhaseTiming>,
}

impl Clock {
    /// Starts the probe's wall clock.
    pub(crate) fn new() -> Self {
        Clock {
            started: Instant::now(),
            current: None,
            phases: Vec::new(),
        }
    }

    /// Ends the running phase (if any) and starts `phase` now.
    pub(crate) fn begin(&mut self, phase: Phase) {
        self.begin_at(phase, Instant::now());
    }

    /// Ends the running phase at `at` and starts `phase` at `at` (for phases whose boundary is a
    /// timestamp taken elsewhere, like the first response byte).
    pub(crate) fn begin_at(&mut self, phase: Phase, at: Instant) {
        self.end_at(at);
        self.current = Some((phase, at));
    }

    /// Ends the running phase now.
    pub(crate) fn end(&mut self) {
        self.end_at(Instant::now());
    }

    fn end_at(&mut self, at: Instant) {
        if let Some((phase, start)) = self.current.take() {
            self.add(phase, at.saturating_duration_since(start));
        }
    }

    /// The phase running now, if any.
    pub(crate) fn current(&self) -> Option<Phase> {
        self.current.map(|(p, _)| p)
    }

    /// Wall time since the probe started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn add(&mut self, phase: Phase, d: Duration) {
        match self.phases.iter_mut().find(|p| p.phase == phase) {
            Some(p) => p.duration += d,
            None => self.phases.push(PhaseTiming { phase, duration: d }),
        }
    }

    /// Closes the running phase (a timed-out phase keeps the time it ran) and returns the timings in the
    /// order the phases first ran.
    pub(crate) fn finish(&mut self) -> Vec<PhaseTiming> {
        self.end();
        std::mem::take(&mut self.phases)
    }
}

/// The instant of the first byte read from the peer, shared between the IO adapter (inside hyper's
/// connection) and the prober.
pub(crate) type FirstByte = Arc<OnceLock<Instant>>;

/// Wraps a stream and records when the first non-empty read completes. This is the closest user-space
/// equivalent of Go's `httptrace.GotFirstResponseByte`: the time the bytes were handed to the process,
/// which trails their arrival in the kernel by one scheduler wake-up.
#[derive(Debug)]
pub(crate) struct TimedIo<T> {
    inner: T,
    first_byte: FirstByte,
}

impl<T> TimedIo<T> {
    /// Wraps `inner`; `first_byte` is set on the first read that returns data.
    pub(crate) fn new(inner: T, first_byte: FirstByte) -> Self {
        TimedIo { inner, first_byte }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // Only the first stamp counts; later reads are part of the transfer.
            let _ = self.first_byte.set(Instant::now());
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Formats a duration for messages: `250ms`, `1.5s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}", d.as_secs_f64())
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_phases_are_summed_in_first_seen_order() {
        let mut c = Clock::new();
        let t0 = Instant::now();
        c.begin_at(Phase::Connect, t0);
        c.begin_at(Phase::Processing, t0 + Duration::from_millis(10));
        c.begin_at(Phase::Connect, t0 + Duration::from_millis(30));
        c.begin_at(Phase::Transfer, t0 + Duration::from_millis(35));
        c.current = None;
        let phases = c.finish();
        let names: Vec<_> = phases.iter().map(|p| p.phase).collect();
        assert_eq!(names, [Phase::Connect, Phase::Processing]);
        assert_eq!(phases[0].duration, Duration::from_millis(15));
        assert_eq!(phases[1].duration, Duration::from_millis(20));
    }

    #[test]
    fn durations_format_for_humans() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
    }
}
