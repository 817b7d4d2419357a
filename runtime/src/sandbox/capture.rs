//! Guest stdout and stderr: kept up to a cap for the log, the rest counted and discarded. The
//! guest's writes always succeed, so a flood cannot make a tool panic, and nothing it writes can
//! reach the protocol stream. What the host does for these writes, and for the guest's random
//! bytes, is metered against the call's fuel (`HostMeter`): wasmtime-wasi serves both imports
//! without a handle to the call, so the meter travels with the streams.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much a guest may write in one go; it bounds the host buffer WASI allocates per write.
const WRITE_PERMIT: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    cap: usize,
    discarded: u64,
}

/// Fuel charged per byte the host moves for a call (its stdout and stderr, its random bytes).
const FUEL_PER_BYTE: u64 = 4;
/// Fuel charged per transfer the host makes on a guest stream, whatever its size.
const FUEL_PER_WRITE: u64 = 2_000;

/// Host work done for one call through imports that wasmtime-wasi serves itself, in fuel: a
/// tool with no grants that loops on stdout or `wasi:random` spends its budget, as one looping
/// on its own code does, instead of running on the host's CPU until its wall-clock limit.
#[derive(Debug, Clone, Default)]
pub struct HostMeter(Arc<AtomicU64>);

impl HostMeter {
    fn charge(&self, fuel: u64) {
        // Saturating: a charge near u64::MAX must not wrap the meter back towards zero.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |spent| {
                Some(spent.saturating_add(fuel))
            });
    }

    /// Charge one transfer of `bytes` the host makes for the guest (a stream read or write).
    pub fn charge_transfer(&self, bytes: usize) {
        self.charge(FUEL_PER_WRITE.saturating_add((bytes as u64).saturating_mul(FUEL_PER_BYTE)));
    }

    /// The fuel charged so far.
    pub fn fuel(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// `rng` with every value it hands the guest charged to this meter.
    pub fn random<R: rand_core::Rng>(&self, rng: R) -> MeteredRandom<R> {
        MeteredRandom {
            rng,
            meter: self.clone(),
        }
    }
}

/// A random generator whose output is charged to a call (`HostMeter::random`). wasmtime-wasi
/// fills a request byte by byte, one `u32` each, so the charge follows the work.
pub struct MeteredRandom<R> {
    rng: R,
    meter: HostMeter,
}

impl<R: rand_core::Rng> rand_core::TryRng for MeteredRandom<R> {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, std::convert::Infallible> {
        self.meter.charge(4 * FUEL_PER_BYTE);
        self.rng.try_next_u32()
    }
    fn try_next_u64(&mut self) -> Result<u64, std::convert::Infallible> {
        self.meter.charge(8 * FUEL_PER_BYTE);
        self.rng.try_next_u64()
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), std::convert::Infallible> {
        self.meter
            .charge((dst.len() as u64).saturating_mul(FUEL_PER_BYTE));
        self.rng.try_fill_bytes(dst)
    }
}

/// A capped capture of one guest output stream.
#[derive(Debug, Clone)]
pub struct Capture(Arc<Mutex<Buffer>>, HostMeter);

impl Capture {
    /// A capture keeping `cap` bytes, whose writes are charged to `meter`.
    pub fn new(cap: usize, meter: HostMeter) -> Self {
        Capture(
            Arc::new(Mutex::new(Buffer {
                kept: Vec::new(),
                cap,
                discarded: 0,
            })),
            meter,
        )
    }

    /// The meter this capture's writes are charged to.
    pub fn meter(&self) -> &HostMeter {
        &self.1
    }

    fn push(&self, bytes: &[u8]) {
        self.1.charge_transfer(bytes.len());
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = b.cap.saturating_sub(b.kept.len());
        let take = room.min(bytes.len());
        b.kept.extend_from_slice(&bytes[..take]);
        b.discarded += (bytes.len() - take) as u64;
    }

    /// What was kept, and how many bytes were discarded past the cap.
    pub fn take(&self) -> (Vec<u8>, u64) {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut b.kept), b.discarded)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let c = Capture::new(4, HostMeter::default());
        c.push(b"abc");
        c.push(b"defg");
        assert_eq!(c.take(), (b"abcd".to_vec(), 3));
        // Two writes of 7 bytes in all, charged whether kept or not.
        assert_eq!(c.meter().fuel(), 2 * FUEL_PER_WRITE + 7 * FUEL_PER_BYTE);
    }
}
