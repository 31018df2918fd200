//! Response bodies of the OSS simulator and the socket wrapper that lets a body cut the
//! connection: `SimBody` streams an in-memory or spilled-to-disk object in slices and
//! applies the download faults (cut, stall, flipped byte); `CuttableStream` turns hyper's next
//! flush into an error once a cut is armed, so exactly the promised bytes reach the client.
//!
//! Spilled objects are read with plain `std::fs` calls inside `poll_frame`: 64 KiB reads from
//! the page cache, kept synchronous on purpose so that paused-time tests never see the
//! simulator waiting on a blocking-pool thread (tokio would auto-advance the clock then).

use std::fs::File;
use std::io::{self, Read as _};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Size of the slices a body is streamed in.
pub(super) const BODY_CHUNK: usize = 64 * 1024;

/// Where a body stops early, and how.
#[derive(Debug, Clone, Copy)]
pub(super) enum BodyStop {
    Cut(u64),
    Stall(u64),
}

/// Where the bytes come from.
#[derive(Debug)]
enum Source {
    Memory(Bytes),
    /// An open file positioned at the first byte to send, and how many bytes to send.
    File {
        file: File,
        left: u64,
    },
}

/// A response body: empty, a small XML document, or an object (range) streamed in slices.
#[derive(Debug)]
pub(super) struct SimBody {
    source: Source,
    /// Bytes read from the source but not sent yet.
    pending: Bytes,
    total: u64,
    sent: u64,
    /// Offset inside the response body of the byte to XOR with 0xFF.
    pub(super) flip_at: Option<u64>,
    pub(super) stop: Option<BodyStop>,
    cut: Arc<AtomicBool>,
}

impl SimBody {
    pub(super) fn full(data: Bytes, cut: &Arc<AtomicBool>) -> Self {
        Self {
            total: data.len() as u64,
            source: Source::Memory(data),
            pending: Bytes::new(),
            sent: 0,
            flip_at: None,
            stop: None,
            cut: Arc::clone(cut),
        }
    }

    pub(super) fn empty(cut: &Arc<AtomicBool>) -> Self {
        Self::full(Bytes::new(), cut)
    }

    /// `len` bytes of `file` from its current position.
    pub(super) fn file(file: File, len: u64, cut: &Arc<AtomicBool>) -> Self {
        Self {
            source: Source::File { file, left: len },
            total: len,
            ..Self::empty(cut)
        }
    }

    /// The whole body when it is in memory and untouched (error documents).
    pub(super) fn memory_bytes(&self) -> Option<Bytes> {
        match &self.source {
            Source::Memory(data) if self.sent == 0 && self.pending.is_empty() => Some(data.clone()),
            _ => None,
        }
    }

    fn remaining(&self) -> u64 {
        self.total - self.sent
    }

    /// Refills `pending` with the next slice of the source.
    fn refill(&mut self) -> io::Result<()> {
        match &mut self.source {
            Source::Memory(data) => {
                let len = data.len().min(BODY_CHUNK);
                self.pending = data.split_to(len);
            }
            Source::File { file, left } => {
                let len = usize::try_from(*left).unwrap_or(usize::MAX).min(BODY_CHUNK);
                let mut buf = vec![0; len];
                file.read_exact(&mut buf)?;
                *left -= len as u64;
                self.pending = Bytes::from(buf);
            }
        }
        Ok(())
    }
}

impl http_body::Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining() == 0 {
            return Poll::Ready(None);
        }
        if let Some(BodyStop::Cut(at) | BodyStop::Stall(at)) = this.stop
            && this.sent >= at
        {
            if let Some(BodyStop::Cut(_)) = this.stop {
                this.cut.store(true, Ordering::Release);
            }
            // Never woken: a stall lasts until the client gives up or the server stops, and
            // a cut ends at hyper's next flush.
            return Poll::Pending;
        }
        if this.pending.is_empty()
            && let Err(error) = this.refill()
        {
            return Poll::Ready(Some(Err(error)));
        }
        let mut len = this.pending.len();
        if let Some(BodyStop::Cut(at) | BodyStop::Stall(at)) = this.stop {
            len = len.min(usize::try_from(at - this.sent).unwrap_or(usize::MAX));
        }
        let mut chunk = this.pending.split_to(len);
        if let Some(flip) = this.flip_at
            && (this.sent..this.sent + len as u64).contains(&flip)
        {
            let mut owned = chunk.to_vec();
            owned[(flip - this.sent) as usize] ^= 0xFF;
            chunk = Bytes::from(owned);
        }
        this.sent += len as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

/// A TCP stream whose next flush fails once `cut` is set.
///
/// hyper calls `poll_flush` on the socket only after its own write buffer is empty, so when
/// the body has armed `cut` and hyper flushes, every byte promised to the client is in the
/// kernel; the error then makes hyper drop the connection.
#[derive(Debug)]
pub(super) struct CuttableStream {
    pub(super) inner: TcpStream,
    pub(super) cut: Arc<AtomicBool>,
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        if self.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "simulated connection cut",
            )));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
