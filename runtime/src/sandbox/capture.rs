//! Guest stdout and stderr: kept up to a cap for the log, the rest counted and discarded. The
//! guest's writes always succeed, so a flood cannot make a tool panic, and nothing it writes can
//! reach the protocol stream.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
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

/// A capped capture of one guest output stream.
#[derive(Debug, Clone)]
pub struct Capture(Arc<Mutex<Buffer>>);

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture(Arc::new(Mutex::new(Buffer {
            kept: Vec::new(),
            cap,
            discarded: 0,
        })))
    }

    fn push(&self, bytes: &[u8]) {
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
        let c = Capture::new(4);
        c.push(b"abc");
        c.push(b"defg");
        assert_eq!(c.take(), (b"abcd".to_vec(), 3));
    }
}
