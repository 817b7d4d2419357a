//! The stdio transport's two ends. tokio's own `stdin()` and `stdout()` do every read and every
//! write on a blocking-pool thread and hand the result back: two or three thread wake-ups per
//! message, which on a VM cost more than answering a `ping` (docs/performance.md). When stdin
//! and stdout are pipes or sockets (as an MCP client starts a server), they are read and
//! written through the runtime's reactor instead, without a thread in between: switched to
//! non-blocking while served and put back as they were afterwards. Anything else (a terminal,
//! a file) keeps tokio's blocking ends, which work for every kind of file.

use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Stdin, as the transport reads it.
pub enum Input {
    Reactor(Pipe),
    Blocking(tokio::io::Stdin),
}

/// Stdout, as the transport writes it.
pub enum Output {
    Reactor(Pipe),
    Blocking(tokio::io::Stdout),
}

/// The ends for the stdio transport: through the reactor where both allow it.
pub fn ends() -> (Input, Output) {
    match (
        Pipe::new(0, Interest::READABLE),
        Pipe::new(1, Interest::WRITABLE),
    ) {
        (Some(i), Some(o)) => (Input::Reactor(i), Output::Reactor(o)),
        // One end unsuitable: both stay as they were (a dropped `Pipe` restores its flags).
        _ => (
            Input::Blocking(tokio::io::stdin()),
            Output::Blocking(tokio::io::stdout()),
        ),
    }
}

/// A pipe or socket descriptor of this process (0 or 1), non-blocking while this lives. The
/// descriptor itself stays open: it is the process's own stdin or stdout.
pub struct Pipe {
    fd: AsyncFd<RawFd>,
    /// The file status flags it had, restored on drop.
    flags: libc::c_int,
}

impl Pipe {
    /// `fd` must stay open, naming the same file, for as long as the `Pipe` lives (stdin and
    /// stdout are never closed while served).
    fn new(fd: RawFd, interest: Interest) -> Option<Pipe> {
        // SAFETY: fstat and fcntl on a descriptor number only read or change that
        // descriptor's state; an invalid one fails with EBADF.
        let flags = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) != 0 {
                return None;
            }
            let kind = st.st_mode & libc::S_IFMT;
            if kind != libc::S_IFIFO && kind != libc::S_IFSOCK {
                return None;
            }
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) != 0 {
                return None;
            }
            flags
        };
        // SAFETY: the caller keeps `fd` open and naming the same file for the Pipe's life.
        match unsafe { AsyncFd::register_with_interest(fd, interest) } {
            Ok(fd) => Some(Pipe { fd, flags }),
            Err(_) => {
                // SAFETY: as above.
                unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
                None
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: as in `new`; the descriptor is still open (never closed here).
        unsafe { libc::fcntl(*self.fd.get_ref(), libc::F_SETFL, self.flags) };
    }
}

/// `Ok(n)` of a read(2) or write(2) result.
fn io_result(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // SAFETY: `unfilled` is initialised memory of the length passed.
            let read = ready.try_io(|fd| {
                io_result(unsafe {
                    libc::read(*fd.get_ref(), unfilled.as_mut_ptr().cast(), unfilled.len())
                })
            });
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.fd.poll_write_ready(cx))?;
            // SAFETY: `data` is valid for reads of its length.
            let written = ready.try_io(|fd| {
                io_result(unsafe { libc::write(*fd.get_ref(), data.as_ptr().cast(), data.len()) })
            });
            match written {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Input {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Input::Reactor(p) => Pin::new(p).poll_read(cx, buf),
            Input::Blocking(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::Reactor(p) => Pin::new(p).poll_write(cx, data),
            Output::Blocking(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::Reactor(p) => Pin::new(p).poll_flush(cx),
            Output::Blocking(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::Reactor(p) => Pin::new(p).poll_shutdown(cx),
            Output::Blocking(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Through the reactor: a pipe's bytes arrive whole, across a full pipe buffer, and its
    /// end of file is seen; the flags are put back when the end is dropped.
    #[tokio::test]
    async fn a_pipe_is_read_and_written_through_the_reactor() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let [r, w] = fds;
        let before = unsafe { libc::fcntl(w, libc::F_GETFL) };
        let reader = Pipe::new(r, Interest::READABLE);
        let (mut reader, mut writer) = (reader.unwrap(), Pipe::new(w, Interest::WRITABLE).unwrap());
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let expected = data.clone();
        let send = tokio::spawn(async move {
            writer.write_all(&data).await.unwrap();
            drop(writer);
            // SAFETY: `w` is this test's own descriptor, closed once.
            unsafe { libc::close(w) };
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        send.await.unwrap();
        assert_eq!(got, expected);
        drop(reader);
        // SAFETY: as above.
        unsafe {
            assert_eq!(libc::fcntl(r, libc::F_GETFL) & libc::O_NONBLOCK, 0);
            assert_eq!(before & libc::O_NONBLOCK, 0);
            libc::close(r);
        }
    }

    /// A regular file is not a pipe: it is left alone.
    #[test]
    fn a_file_keeps_its_blocking_end() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        assert!(Pipe::new(fd, Interest::READABLE).is_none());
        // SAFETY: `fd` is `f`'s, still open.
        assert_eq!(
            unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK,
            0
        );
    }
}
