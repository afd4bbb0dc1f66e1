//! Telling a FastCGI client on the admin listener (a proxy pointed at the wrong port) from an
//! HTTP one: the first two bytes of the connection are kept as hyper reads them, and a FastCGI
//! record header (version 1, a record type of the spec) is reported with the fix.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first two bytes a connection sent (`first()`), recorded by [`Tap`].
#[derive(Debug, Default)]
pub(crate) struct FirstBytes(AtomicU32);

impl FirstBytes {
    /// The bytes recorded so far (at most two).
    pub fn first(&self) -> Vec<u8> {
        let v = self.0.load(Ordering::Relaxed);
        let n = (v >> 16) as usize;
        [(v >> 8) as u8, v as u8][..n.min(2)].to_vec()
    }

    fn record(&self, bytes: &[u8]) {
        let mut have = self.first();
        if have.len() >= 2 {
            return;
        }
        have.extend(bytes.iter().take(2 - have.len()));
        let n = have.len() as u32;
        let b0 = u32::from(have.first().copied().unwrap_or(0));
        let b1 = u32::from(have.get(1).copied().unwrap_or(0));
        self.0.store((n << 16) | (b0 << 8) | b1, Ordering::Relaxed);
    }

    /// Whether they begin a FastCGI record: version 1 and a record type of FastCGI 1.0
    /// (BEGIN_REQUEST 1 to GET_VALUES_RESULT 10, UNKNOWN_TYPE 11). No HTTP request starts with
    /// byte 1.
    pub fn looks_like_fastcgi(&self) -> bool {
        matches!(self.first()[..], [1, t] if (1..=11).contains(&t))
    }
}

/// A stream that records its first bytes into a shared [`FirstBytes`].
pub(crate) struct Tap<S> {
    pub inner: S,
    pub first: Arc<FirstBytes>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if before < 2 {
            let new = &buf.filled()[before..];
            self.first.record(new);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(chunks: &[&[u8]]) -> FirstBytes {
        let f = FirstBytes::default();
        for c in chunks {
            f.record(c);
        }
        f
    }

    #[test]
    fn a_fastcgi_record_header_is_told_from_http() {
        assert!(seen(&[&[1, 1, 0, 1, 0, 8, 0, 0]]).looks_like_fastcgi());
        assert!(
            seen(&[&[1], &[9]]).looks_like_fastcgi(),
            "split over two reads"
        );
        assert!(!seen(&[b"GET /metrics HTTP/1.1\r\n"]).looks_like_fastcgi());
        assert!(
            !seen(&[&[1]]).looks_like_fastcgi(),
            "one byte is not enough"
        );
        assert!(
            !seen(&[&[1, 12]]).looks_like_fastcgi(),
            "no such record type"
        );
        assert!(!seen(&[]).looks_like_fastcgi());
        assert_eq!(seen(&[b"GE", b"T"]).first(), b"GE");
    }
}
