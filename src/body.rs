//! [`BufferedBody`]: a body already in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

/// A body held in memory: the request body the inner service receives (the exact bytes
/// WeChat Pay sent) and the body of every answer the layer gives.
#[derive(Debug, Clone, Default)]
pub struct BufferedBody {
    inner: Full<Bytes>,
}

impl BufferedBody {
    /// A body of these bytes.
    pub fn new(bytes: Bytes) -> Self {
        Self {
            inner: Full::new(bytes),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::default()
    }
}

impl From<Bytes> for BufferedBody {
    fn from(bytes: Bytes) -> Self {
        Self::new(bytes)
    }
}

impl Body for BufferedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
