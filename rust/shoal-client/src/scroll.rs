//! A scroll on the client side: the server stream of batches, reopened from the last resume token on
//! another node when the serving node goes away mid-scroll (a resumed scroll never repeats a point).

use std::sync::Arc;
use std::time::Duration;

use shoal_api::v1;

use crate::client::{Client, from_transport};
use crate::{Error, Result};

/// How many times one scroll reopens its stream after transport failures.
const MAX_REOPENS: u32 = 3;
/// Slack on top of the per-batch timeout before the client gives up on a batch itself.
const CLIENT_SLACK: Duration = Duration::from_secs(1);

/// The batches of a scroll. `next` returns them in order, then `None`.
#[derive(Debug)]
pub struct ScrollStream {
    /// The client the stream was opened with (for reopening).
    client: Arc<Client>,
    /// The request; its `resume_token` follows the batches received.
    req: v1::ScrollRequest,
    /// The open stream (`None` after a transport failure, until reopened).
    stream: Option<tonic::Streaming<v1::ScrollResponse>>,
    /// Deadline of opening the stream and of each batch.
    timeout: Duration,
    /// Reopens so far.
    reopens: u32,
    /// Set once the server ended the stream.
    done: bool,
}

impl ScrollStream {
    pub(crate) fn new(
        client: Arc<Client>,
        req: v1::ScrollRequest,
        stream: tonic::Streaming<v1::ScrollResponse>,
        timeout: Duration,
    ) -> Self {
        ScrollStream { client, req, stream: Some(stream), timeout, reopens: 0, done: false }
    }

    /// The resume token of the last batch returned (empty before the first).
    pub fn resume_token(&self) -> &[u8] {
        &self.req.resume_token
    }

    /// The next batch, or `None` at the end of the scroll.
    pub async fn next(&mut self) -> Result<Option<v1::ScrollResponse>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let stream = match &mut self.stream {
                Some(s) => s,
                None => self.stream.insert(self.client.open_scroll(&self.req, self.timeout).await?),
            };
            let status = match tokio::time::timeout(self.timeout + CLIENT_SLACK, stream.message()).await {
                Err(_) => {
                    self.stream = None;
                    return Err(Error::Timeout(format!("no scroll batch within {:?}", self.timeout).into()));
                }
                Ok(Ok(Some(batch))) => {
                    self.req.resume_token.clone_from(&batch.resume_token);
                    return Ok(Some(batch));
                }
                Ok(Ok(None)) => {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Err(status)) => status,
            };
            self.stream = None;
            if !from_transport(&status) || self.reopens >= MAX_REOPENS {
                return Err(Error::from_status(&status));
            }
            self.reopens += 1;
            tracing::debug!(reopens = self.reopens, "scroll stream lost ({}); resuming elsewhere", status.message());
        }
    }
}
