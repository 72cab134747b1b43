//! Injected faults: server errors, latency, hung requests, connections dropped after
//! a write was applied, and per-record 207 failures, drawn from a seeded RNG so that a
//! given seed and request sequence fail the same way every run.
//!
//! A dropped connection needs the socket itself, which axum handlers never see: the
//! sandbox serves through [`KillableListener`], whose streams carry a [`KillSwitch`]
//! that reaches each request as its connect info. Flipping the switch makes the next
//! write fail, so hyper closes the connection without sending a byte of the response.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How often the sandbox misbehaves; all rates are probabilities in `0.0..=1.0`.
/// The default injects nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Seeds the RNG every fault is drawn from (re-seeded whenever faults are set).
    pub seed: u64,
    /// Share of `/crm` requests answered 500, 502 or 503 before anything is applied.
    pub error_rate: f64,
    /// Added to every `/crm` request before it is handled.
    pub latency_ms: u64,
    /// Share of `/crm` requests that hang, unanswered and not applied, for `timeout_ms`
    /// (or until shutdown), after which the connection is closed.
    pub timeout_rate: f64,
    /// How long a hung request hangs.
    pub timeout_ms: u64,
    /// Share of successful writes whose connection is closed, without a response,
    /// after the write was applied.
    pub drop_after_apply_rate: f64,
    /// Share of batch write inputs failed individually (a 207) with a
    /// `VALIDATION_ERROR` or a transient `INTERNAL_ERROR`, and not applied.
    pub partial_failure_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 0,
            error_rate: 0.0,
            latency_ms: 0,
            timeout_rate: 0.0,
            timeout_ms: 60_000,
            drop_after_apply_rate: 0.0,
            partial_failure_rate: 0.0,
        }
    }
}

/// A partial update of [`Faults`], as posted to `/_sandbox/config` under `"faults"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsPatch {
    pub seed: Option<u64>,
    pub error_rate: Option<f64>,
    pub latency_ms: Option<u64>,
    pub timeout_rate: Option<f64>,
    pub timeout_ms: Option<u64>,
    pub drop_after_apply_rate: Option<f64>,
    pub partial_failure_rate: Option<f64>,
}

impl Faults {
    pub(crate) fn apply(&mut self, patch: &FaultsPatch) -> Result<(), String> {
        let mut next = self.clone();
        let rates = [
            ("error_rate", patch.error_rate, &mut next.error_rate),
            ("timeout_rate", patch.timeout_rate, &mut next.timeout_rate),
            (
                "drop_after_apply_rate",
                patch.drop_after_apply_rate,
                &mut next.drop_after_apply_rate,
            ),
            (
                "partial_failure_rate",
                patch.partial_failure_rate,
                &mut next.partial_failure_rate,
            ),
        ];
        for (name, value, slot) in rates {
            if let Some(value) = value {
                if !(0.0..=1.0).contains(&value) {
                    return Err(format!("{name} must be between 0 and 1, got {value}"));
                }
                *slot = value;
            }
        }
        if let Some(seed) = patch.seed {
            next.seed = seed;
        }
        if let Some(latency) = patch.latency_ms {
            next.latency_ms = latency;
        }
        if let Some(timeout) = patch.timeout_ms {
            next.timeout_ms = timeout;
        }
        *self = next;
        Ok(())
    }
}

/// How many faults were injected, in `/_sandbox/stats` under `faults`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultCounts {
    /// Requests answered 500/502/503 by injection.
    pub error: u64,
    /// Requests left hanging.
    pub timeout: u64,
    /// Writes applied whose connection was then closed without a response.
    pub dropped_after_apply: u64,
    /// Batch inputs failed individually by injection.
    pub partial: u64,
}

/// The faults in force and the RNG they are drawn from.
#[derive(Debug)]
pub(crate) struct FaultState {
    pub faults: Faults,
    rng: StdRng,
}

/// What the gate does with one admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass { drop_after_apply: bool },
    Error(u16),
    Hang,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        FaultState {
            rng: StdRng::seed_from_u64(faults.seed),
            faults,
        }
    }

    /// Replaces the faults and re-seeds, so the sequence starts over.
    pub(crate) fn set(&mut self, faults: Faults) {
        *self = FaultState::new(faults);
    }

    fn roll(&mut self, rate: f64) -> bool {
        // No draw for a fault that is off, so turning one on does not shift the others' sequence needlessly.
        rate > 0.0 && self.rng.random::<f64>() < rate
    }

    /// Draws the fate of one admitted request; `write` says whether it may apply a change.
    pub(crate) fn verdict(&mut self, write: bool) -> Verdict {
        if self.roll(self.faults.error_rate) {
            let status = [500, 502, 503][self.rng.random_range(0..3)];
            return Verdict::Error(status);
        }
        if self.roll(self.faults.timeout_rate) {
            return Verdict::Hang;
        }
        Verdict::Pass {
            drop_after_apply: write && self.roll(self.faults.drop_after_apply_rate),
        }
    }

    /// Whether to fail one batch input, and if so with which category.
    pub(crate) fn partial_failure(&mut self) -> Option<&'static str> {
        if self.roll(self.faults.partial_failure_rate) {
            Some(if self.rng.random_bool(0.5) {
                "VALIDATION_ERROR"
            } else {
                "INTERNAL_ERROR"
            })
        } else {
            None
        }
    }
}

/// Closes one connection: once flipped, every write on it fails.
#[derive(Debug, Clone, Default)]
pub(crate) struct KillSwitch(Arc<AtomicBool>);

impl KillSwitch {
    pub(crate) fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn killed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A TCP listener whose connections can be killed from a handler.
pub(crate) struct KillableListener(pub TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        (
            KillableStream {
                inner: stream,
                switch: KillSwitch::default(),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP stream that fails every write once its [`KillSwitch`] is flipped.
pub(crate) struct KillableStream {
    inner: TcpStream,
    switch: KillSwitch,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.switch.killed() {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "sandbox fault: connection dropped",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(error) = self.check() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(error) = self.check() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(error) = self.check() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Each request's connect info: the kill switch of the connection it came on.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub switch: KillSwitch,
}

impl Connected<IncomingStream<'_, KillableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        Connection {
            switch: stream.io().switch.clone(),
        }
    }
}

/// How long a hung request waits before its connection is closed.
pub(crate) fn hang_for(faults: &Faults) -> Duration {
    Duration::from_millis(faults.timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_sequence() {
        let faults = Faults {
            seed: 7,
            error_rate: 0.3,
            timeout_rate: 0.1,
            drop_after_apply_rate: 0.2,
            partial_failure_rate: 0.2,
            ..Faults::default()
        };
        let run = || {
            let mut state = FaultState::new(faults.clone());
            (0..200)
                .map(|_| (state.verdict(true), state.partial_failure()))
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().any(|(v, _)| matches!(v, Verdict::Error(_))));
        assert!(first.iter().any(|(v, _)| *v == Verdict::Hang));
        assert!(first.iter().any(|(_, p)| p.is_some()));
    }

    #[test]
    fn no_faults_by_default() {
        let mut state = FaultState::new(Faults::default());
        for _ in 0..100 {
            assert_eq!(
                state.verdict(true),
                Verdict::Pass {
                    drop_after_apply: false
                }
            );
            assert_eq!(state.partial_failure(), None);
        }
    }

    #[test]
    fn rates_are_checked() {
        let mut faults = Faults::default();
        let patch = FaultsPatch {
            error_rate: Some(1.5),
            ..FaultsPatch::default()
        };
        assert!(faults.apply(&patch).is_err());
        assert_eq!(faults, Faults::default());
    }
}
