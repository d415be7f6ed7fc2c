//! One `/metrics` render shared by every scrape that reads it, streamed as it is produced.
//!
//! The render thread appends chunks of about [`CHUNK_BYTES`] (reference-counted, never copied
//! per scraper) and wakes the readers; each scraper's [`ScrapeBody`] walks the same list from the
//! start, so the first bytes leave while later tables are still being rendered and a scraper
//! joining late still gets the whole body. The chunks live as long as the render is referenced:
//! by the scrapes still sending it and, for a short while, by the share slot in `http`.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use axum::body::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http_body::{Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use crate::export::prometheus::{ChunkSink, Format};

/// Chunk size (complete lines, so a chunk can be a little larger). Small enough that the first
/// one is ready within a fraction of a millisecond; below glibc's mmap threshold, so chunk
/// buffers are recycled by the allocator instead of being mapped (and faulted in) afresh for
/// every render (docs/performance.md).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Room for the line that crosses a chunk's size.
const LINE_SLACK: usize = 16 * 1024;
/// The first compressed chunk leaves early, so that a gzip scrape starts as soon as possible.
const FIRST_GZIP_CHUNK_BYTES: usize = 8 * 1024;
/// gzip level. Level 1 compresses the 100k-series body ~18× in ≈ 10 ms (docs/performance.md);
/// level 2 takes 2.5× as long for 0.7 % less, the default (6) 6× for 4 %.
const GZIP_LEVEL: u32 = 1;

/// What a render produces: one per format and encoding, each shared separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// Exposition format.
    pub format: Format,
    /// gzip-compressed.
    pub gzip: bool,
}

impl Variant {
    /// Every variant, in [`Variant::index`] order.
    pub const ALL: [Variant; 4] = [
        Variant {
            format: Format::Text,
            gzip: false,
        },
        Variant {
            format: Format::Text,
            gzip: true,
        },
        Variant {
            format: Format::OpenMetrics,
            gzip: false,
        },
        Variant {
            format: Format::OpenMetrics,
            gzip: true,
        },
    ];

    /// Position in [`Variant::ALL`].
    pub fn index(self) -> usize {
        usize::from(self.format == Format::OpenMetrics) * 2 + usize::from(self.gzip)
    }

    /// `format` label value of the served-responses counter.
    pub fn format_label(self) -> &'static str {
        match self.format {
            Format::Text => "text",
            Format::OpenMetrics => "openmetrics",
        }
    }

    /// `encoding` label value of the served-responses counter.
    pub fn encoding_label(self) -> &'static str {
        if self.gzip {
            "gzip"
        } else {
            "identity"
        }
    }
}

/// How a render ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every chunk is there; when the last one was added.
    Complete(Instant),
    /// The render failed (panicked or could not compress): readers get an error, not a
    /// truncated page.
    Failed,
}

/// The next thing a reader gets.
pub enum Next {
    /// The chunk at the position asked for.
    Chunk(Bytes),
    /// No chunk at that position, and none will come.
    End(Ended),
}

#[derive(Default)]
struct Progress {
    chunks: Vec<Bytes>,
    end: Option<Ended>,
    /// Readers waiting for the next chunk.
    wakers: Vec<Waker>,
    /// `max_requests` permits of the scrapes waiting for this render, released when it ends.
    permits: Vec<OwnedSemaphorePermit>,
}

/// One render: its chunks so far and how it ended.
#[derive(Default)]
pub struct Render {
    progress: Mutex<Progress>,
    /// [`ScrapeBody`]s reading it now.
    readers: AtomicUsize,
}

impl Render {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a scrape is reading (sending) it now.
    pub fn has_readers(&self) -> bool {
        self.readers.load(Ordering::Acquire) > 0
    }

    /// How the render ended; `None` while it runs.
    pub fn ended(&self) -> Option<Ended> {
        self.progress().end
    }

    /// Keep a scrape's `max_requests` permit until the render ends (the scrape waits for it
    /// until then); an ended render drops it at once.
    pub fn hold_permit(&self, permit: Option<OwnedSemaphorePermit>) {
        let mut p = self.progress();
        if let (None, Some(permit)) = (p.end, permit) {
            p.permits.push(permit);
        }
    }

    fn publish(&self, chunk: Bytes) {
        let wakers = {
            let mut p = self.progress();
            p.chunks.push(chunk);
            std::mem::take(&mut p.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Mark the render ended (a second call changes nothing), wake the readers, release the
    /// permits.
    pub fn end(&self, how: Ended) {
        self.end_with(Vec::new(), how);
    }

    /// Add the `last` chunks and end, in one step: a reader never sees the last chunk of a
    /// complete render without seeing that it is complete (which gives it a Content-Length).
    fn end_with(&self, last: Vec<Bytes>, how: Ended) {
        let (wakers, permits) = {
            let mut p = self.progress();
            if p.end.is_some() {
                return;
            }
            p.chunks.extend(last);
            p.end = Some(how);
            (
                std::mem::take(&mut p.wakers),
                std::mem::take(&mut p.permits),
            )
        };
        drop(permits);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Chunk `i`, or the end, or `Pending` (woken when either arrives).
    pub fn poll_chunk(&self, i: usize, cx: &mut Context<'_>) -> Poll<Next> {
        let mut p = self.progress();
        if let Some(c) = p.chunks.get(i) {
            return Poll::Ready(Next::Chunk(c.clone()));
        }
        if let Some(end) = p.end {
            return Poll::Ready(Next::End(end));
        }
        if !p.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            p.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Bytes from chunk `from` on, if the render is complete.
    fn remaining(&self, from: usize) -> Option<u64> {
        let p = self.progress();
        matches!(p.end, Some(Ended::Complete(_)))
            .then(|| p.chunks.iter().skip(from).map(|c| c.len() as u64).sum())
    }
}

/// The render thread's [`ChunkSink`]: publishes text chunks as they come; with gzip, compresses
/// them once no table is locked and publishes the compressed output in chunks.
pub struct Publisher<'a> {
    render: &'a Render,
    gzip: Option<GzEncoder<Vec<u8>>>,
    /// Text chunks waiting for compression.
    pending: Vec<String>,
    /// Emptied text buffers, reused.
    spare: Vec<String>,
    /// A compression error, reported by [`Publisher::finish`].
    error: Option<io::Error>,
    /// Compressed chunks published so far.
    published: usize,
}

impl<'a> Publisher<'a> {
    /// Publisher into `render`.
    pub fn new(render: &'a Render, gzip: bool) -> Self {
        Publisher {
            render,
            gzip: gzip.then(|| {
                GzEncoder::new(
                    Vec::with_capacity(CHUNK_BYTES + LINE_SLACK),
                    Compression::new(GZIP_LEVEL),
                )
            }),
            pending: Vec::new(),
            spare: Vec::new(),
            error: None,
            published: 0,
        }
    }

    /// A buffer for the render to write into.
    pub fn buffer() -> String {
        String::with_capacity(CHUNK_BYTES + LINE_SLACK)
    }

    fn compress_pending(&mut self) -> io::Result<()> {
        let Some(enc) = self.gzip.as_mut() else {
            return Ok(());
        };
        for mut text in self.pending.drain(..) {
            enc.write_all(text.as_bytes())?;
            text.clear();
            self.spare.push(text);
            let threshold = if self.published == 0 {
                FIRST_GZIP_CHUNK_BYTES
            } else {
                CHUNK_BYTES
            };
            if enc.get_ref().len() >= threshold {
                self.published += 1;
                // The encoder only appends to its output, so taking what it wrote is safe.
                let next = Vec::with_capacity(CHUNK_BYTES + LINE_SLACK);
                let out = std::mem::replace(enc.get_mut(), next);
                self.render.publish(Bytes::from(out));
            }
        }
        Ok(())
    }

    /// Publish `rest` (the end of the page) and complete the render. On error the render is
    /// left running: the caller ends it as failed.
    pub fn finish(mut self, rest: String) -> io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if !rest.is_empty() {
            self.pending.push(rest);
        }
        let mut last = Vec::new();
        if self.gzip.is_none() {
            last.extend(self.pending.drain(..).map(Bytes::from));
        } else {
            self.compress_pending()?;
            if let Some(enc) = self.gzip.take() {
                let out = enc.finish()?;
                if !out.is_empty() {
                    last.push(Bytes::from(out));
                }
            }
        }
        self.render.end_with(last, Ended::Complete(Instant::now()));
        Ok(())
    }
}

impl ChunkSink for Publisher<'_> {
    fn chunk_bytes(&self) -> usize {
        CHUNK_BYTES
    }

    fn chunk(&mut self, buf: &mut String) {
        let next = self.spare.pop().unwrap_or_else(Self::buffer);
        let full = std::mem::replace(buf, next);
        if self.gzip.is_some() {
            // Compressing takes longer than rendering: not while the table is locked.
            self.pending.push(full);
        } else {
            self.render.publish(Bytes::from(full));
        }
    }

    fn unlocked(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.compress_pending() {
                self.error = Some(e);
            }
        }
    }
}

/// A scrape's response body: the chunks of one render, from the first, as they arrive.
pub struct ScrapeBody {
    render: std::sync::Arc<Render>,
    next: usize,
    /// Called once the last chunk has been handed over, with the time the render completed.
    /// Taken (`None`) once called, or once an error was returned.
    on_complete: Option<Box<dyn FnOnce(Instant) + Send>>,
}

impl ScrapeBody {
    /// Body reading `render`.
    pub fn new(
        render: std::sync::Arc<Render>,
        on_complete: impl FnOnce(Instant) + Send + 'static,
    ) -> Self {
        render.readers.fetch_add(1, Ordering::AcqRel);
        ScrapeBody {
            render,
            next: 0,
            on_complete: Some(Box::new(on_complete)),
        }
    }
}

impl Drop for ScrapeBody {
    fn drop(&mut self) {
        self.render.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl http_body::Body for ScrapeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match this.render.poll_chunk(this.next, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Next::Chunk(c)) => {
                this.next += 1;
                // hyper stops polling a body of known length after its last byte.
                if this.render.remaining(this.next) == Some(0) {
                    if let (Some(Ended::Complete(at)), Some(f)) =
                        (this.render.ended(), this.on_complete.take())
                    {
                        f(at);
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(c))))
            }
            Poll::Ready(Next::End(Ended::Complete(at))) => {
                if let Some(f) = this.on_complete.take() {
                    f(at);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Next::End(Ended::Failed)) => {
                if this.on_complete.take().is_some() {
                    Poll::Ready(Some(Err(io::Error::other("/metrics render failed"))))
                } else {
                    Poll::Ready(None)
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.render.remaining(self.next) == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        // A complete render has a known length: a plain `Content-Length` response.
        self.render
            .remaining(self.next)
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn text(n: usize, c: char) -> String {
        std::iter::repeat_n(c, n).collect()
    }

    #[test]
    fn readers_wait_for_chunks_and_see_the_end() {
        let render = Render::default();
        let woken = Arc::new(Count(Default::default()));
        let waker = Waker::from(Arc::clone(&woken));
        let cx = &mut Context::from_waker(&waker);
        assert!(render.poll_chunk(0, cx).is_pending());
        assert!(render.poll_chunk(0, cx).is_pending());
        let mut p = Publisher::new(&render, false);
        let mut buf = text(CHUNK_BYTES, 'a');
        p.chunk(&mut buf);
        assert!(buf.is_empty());
        assert_eq!(woken.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(
            matches!(render.poll_chunk(0, cx), Poll::Ready(Next::Chunk(c)) if c.len() == CHUNK_BYTES)
        );
        assert_eq!(render.remaining(0), None);
        p.finish("tail\n".into()).unwrap();
        assert!(
            matches!(render.poll_chunk(1, cx), Poll::Ready(Next::Chunk(c)) if &c[..] == b"tail\n")
        );
        assert!(matches!(
            render.poll_chunk(2, cx),
            Poll::Ready(Next::End(Ended::Complete(_)))
        ));
        assert_eq!(render.remaining(1), Some(5));
    }

    #[test]
    fn gzip_chunks_decompress_to_the_text() {
        let render = Render::default();
        let mut p = Publisher::new(&render, true);
        let mut whole = String::new();
        for i in 0..40 {
            let mut buf: String = (0..2000)
                .map(|j| format!("m{{k=\"{i}_{j}\"}} {j}\n"))
                .collect();
            whole.push_str(&buf);
            p.chunk(&mut buf);
            p.unlocked();
        }
        whole.push_str("# EOF\n");
        p.finish("# EOF\n".into()).unwrap();
        let chunks = render.progress().chunks.clone();
        assert!(chunks.len() > 1, "compressed output is published in pieces");
        let gz: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, whole);
    }

    #[test]
    fn permits_are_held_until_the_end() {
        let sem = Arc::new(tokio::sync::Semaphore::new(1));
        let render = Render::default();
        render.hold_permit(Some(Arc::clone(&sem).try_acquire_owned().unwrap()));
        assert_eq!(sem.available_permits(), 0);
        render.end(Ended::Failed);
        assert_eq!(sem.available_permits(), 1);
        render.hold_permit(Some(Arc::clone(&sem).try_acquire_owned().unwrap()));
        assert_eq!(
            sem.available_permits(),
            1,
            "an ended render keeps no permit"
        );
    }
}
