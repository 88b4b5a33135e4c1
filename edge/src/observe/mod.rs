//! Observe: the last step of the request path. Each request gets an id
//! ([`request_id`]) and a [`RequestRecord`] that the pipeline fills while
//! it answers and that is completed exactly once: when the response body
//! ends, or when it (or the request before any response) is dropped, then
//! marked `aborted`.
//!
//! That completion ([`InFlight::complete`]) is the one place where a
//! finished request is known in full: the request metrics
//! ([`metrics::RequestMetrics`]) and, when it is on, the access log hang
//! off it.
//!
//! The cost: a request costs one small shared allocation (its notes) and
//! one body box; the metrics a few atomic adds. With the access log on, the
//! record also copies host, path and id, and costs one `try_send`;
//! formatting and writing happen on the writer thread.

pub mod access_log;
mod body;
pub mod metrics;
pub mod record;
pub mod request_id;
pub mod scrape;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use edge_cache::counters::Outcome;
use http::header::{self, HeaderValue};
use http::{Response, request};
use http_body_util::BodyExt;

use crate::body::ProxyBody;
use access_log::AccessLog;
use body::ObservedBody;
use metrics::{Finished, RequestMetrics};
use record::{RequestRecord, RequestText};

/// What the node does with each request: ids and the access log.
#[derive(Debug)]
pub struct Observer {
    /// Shared by the requests in flight: one reference count per request,
    /// where a channel sender clone would be two.
    access_log: Option<Arc<AccessLog>>,
    metrics: Arc<RequestMetrics>,
    request_ids: bool,
}

impl Observer {
    /// Observes per `[log]` into `metrics`, submitting records to
    /// `access_log` when given.
    pub fn new(
        log: &edge_config::Log,
        access_log: Option<AccessLog>,
        metrics: RequestMetrics,
    ) -> Self {
        Observer {
            access_log: access_log.map(Arc::new),
            metrics: Arc::new(metrics),
            request_ids: log.request_id,
        }
    }

    /// The access log, when it is on (for its drop counter).
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_deref()
    }

    /// Starts observing a request: assigns its id (setting it on `head`,
    /// so it travels upstream) and opens its record.
    pub fn begin(
        &self,
        head: &mut request::Parts,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Observation {
        let request_id = self
            .request_ids
            .then(|| request_id::assign(&mut head.headers));
        let log = self.access_log.clone();
        // Host, path and id are copied only for the access log.
        let text = match &log {
            None => RequestText::default(),
            Some(_) => {
                let host = match head.uri.authority() {
                    Some(authority) => Some(authority.as_str().as_bytes()),
                    None => head.headers.get(header::HOST).map(HeaderValue::as_bytes),
                };
                let client_id;
                let id = match &request_id {
                    Some(id) => Some(id.as_bytes()),
                    None => {
                        client_id = request_id::client_id(&head.headers);
                        client_id.as_ref().map(HeaderValue::as_bytes)
                    }
                };
                let path = head.uri.path_and_query().map(|p| p.as_str());
                RequestText::new(host, path, id)
            }
        };
        let flight = Some(InFlight(Some(Pending {
            record: RequestRecord {
                started_at: SystemTime::now(),
                client,
                scheme,
                method: head.method.clone(),
                text,
                version: head.version,
                status: None,
                bytes: 0,
                duration: std::time::Duration::ZERO,
                upstream: None,
                cache: None,
                aborted: false,
            },
            started: Instant::now(),
            notes: Arc::default(),
            log,
            metrics: self.metrics.clone(),
        })));
        Observation { request_id, flight }
    }
}

/// One request under observation, from [`Observer::begin`] to its response.
#[derive(Debug)]
pub struct Observation {
    /// The id to echo to the client (`None` with `request_id = false`).
    request_id: Option<HeaderValue>,
    /// The record.
    flight: Option<InFlight>,
}

impl Observation {
    /// Where the pipeline notes what it did for this request, when anyone
    /// listens.
    pub fn notes(&self) -> Option<Arc<RequestNotes>> {
        let pending = self.flight.as_ref()?.0.as_ref()?;
        Some(pending.notes.clone())
    }

    /// Echoes the request id on `response` and hands the record to its
    /// body, which completes it when the body ends or is dropped.
    pub fn finish(self, mut response: Response<ProxyBody>) -> Response<ProxyBody> {
        if let Some(id) = self.request_id {
            response.headers_mut().insert(request_id::X_REQUEST_ID, id);
        }
        let Some(mut flight) = self.flight else {
            return response;
        };
        if let Some(pending) = &mut flight.0 {
            pending.record.status = Some(response.status());
        }
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        response.map(|body| ObservedBody::new(body, declared, flight).boxed_unsync())
    }
}

/// What the pipeline learns while answering, written from wherever it
/// learns it (the upstream send, the cache step), read at completion.
#[derive(Debug, Default)]
pub struct RequestNotes(Mutex<Noted>);

#[derive(Debug, Default, Clone, Copy)]
struct Noted {
    site: Option<usize>,
    upstream: Option<SocketAddr>,
    cache: Option<Outcome>,
}

impl RequestNotes {
    /// The request was routed to site number `site`.
    pub fn site(&self, site: usize) {
        self.lock().site = Some(site);
    }

    /// The request was sent to `endpoint` (a retry overwrites the earlier one).
    pub fn upstream(&self, endpoint: SocketAddr) {
        self.lock().upstream = Some(endpoint);
    }

    /// The cache step answered with `outcome`.
    pub fn cache(&self, outcome: Outcome) {
        self.lock().cache = Some(outcome);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Noted> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A record waiting for its request to finish; completes it as aborted if
/// dropped before [`InFlight::complete`] (the client left before any
/// response existed).
#[derive(Debug)]
pub struct InFlight(Option<Pending>);

#[derive(Debug)]
struct Pending {
    record: RequestRecord,
    started: Instant,
    notes: Arc<RequestNotes>,
    log: Option<Arc<AccessLog>>,
    metrics: Arc<RequestMetrics>,
}

impl InFlight {
    /// Whether the request is a HEAD, whose response body is never sent.
    fn answers_head(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|p| p.record.method == http::Method::HEAD)
    }

    /// The request is over: `bytes` of body went out, and it ended normally
    /// unless `aborted`. Hands the record to the log; later calls do nothing.
    pub fn complete(&mut self, bytes: u64, aborted: bool) {
        let Some(Pending {
            mut record,
            started,
            notes,
            log,
            metrics,
        }) = self.0.take()
        else {
            return;
        };
        let noted = *notes.lock();
        let duration = started.elapsed();
        metrics.record(&Finished {
            site: noted.site,
            status: record.status,
            cache: noted.cache,
            version: record.version,
            duration,
            bytes,
        });
        let Some(log) = log else { return };
        record.bytes = bytes;
        record.duration = duration;
        record.upstream = noted.upstream;
        record.cache = noted.cache;
        record.aborted = aborted;
        log.submit(record);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.complete(0, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// An observer logging into a queue the test reads directly.
    fn observer(request_ids: bool) -> (Observer, access_log::tests_support::Queue) {
        let (log, queue) = access_log::tests_support::queue(16);
        let config = edge_config::Log {
            request_id: request_ids,
            ..edge_config::Log::default()
        };
        let metrics = RequestMetrics::new(["example.com"]);
        (Observer::new(&config, Some(log), metrics), queue)
    }

    fn head(uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = http::Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    const CLIENT: &str = "192.0.2.1:5000";

    #[tokio::test]
    async fn a_record_completes_when_the_body_ends() {
        let (observer, queue) = observer(true);
        let mut req = head("/p?q=1", &[("host", "example.com")]);
        let observation = observer.begin(&mut req, CLIENT.parse().unwrap(), "http");
        let id = req.headers[request_id::X_REQUEST_ID].clone();
        let notes = observation.notes().unwrap();
        notes.upstream("10.0.0.1:80".parse().unwrap());
        notes.cache(Outcome::Miss);
        let response = observation.finish(Response::new(crate::body::full("hello")));
        assert_eq!(response.headers()[request_id::X_REQUEST_ID], id);
        assert!(queue.try_recv().is_none(), "nothing before the body ends");

        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        let record = queue.try_recv().expect("completed at the end of the body");
        assert_eq!(record.status, Some(http::StatusCode::OK));
        assert_eq!(record.bytes, 5);
        assert!(!record.aborted);
        assert_eq!(record.upstream, Some("10.0.0.1:80".parse().unwrap()));
        assert_eq!(record.cache, Some(Outcome::Miss));
        assert_eq!(record.text.request_id(), Some(id.to_str().unwrap()));
        assert_eq!(record.text.host(), Some("example.com"));
        assert_eq!(record.text.path(), Some("/p?q=1"));
        assert!(queue.try_recv().is_none(), "exactly one record");
    }

    #[tokio::test]
    async fn a_body_dropped_early_is_aborted_and_an_unanswered_request_too() {
        let (observer, queue) = observer(false);
        let mut req = head("/big", &[("x-request-id", "from-client")]);
        let observation = observer.begin(&mut req, CLIENT.parse().unwrap(), "http");
        let body = Frames(2).boxed_unsync();
        let mut body = observation.finish(Response::new(body)).into_body();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap().len(), 3);
        drop(body);
        let record = queue.try_recv().unwrap();
        assert!(record.aborted);
        assert_eq!(record.bytes, 3);
        assert_eq!(record.text.request_id(), Some("from-client"));

        // No response at all: the request's future was dropped.
        let mut req = head("/gone", &[]);
        let observation = observer.begin(&mut req, CLIENT.parse().unwrap(), "http");
        assert!(!req.headers.contains_key(request_id::X_REQUEST_ID));
        drop(observation);
        let record = queue.try_recv().unwrap();
        assert!(record.aborted);
        assert_eq!(record.status, None);
    }

    #[tokio::test]
    async fn a_body_dropped_once_its_content_length_went_out_has_ended() {
        let (observer, queue) = observer(true);
        for (frames_read, aborted) in [(2, false), (1, true)] {
            let mut req = head("/sized", &[]);
            let observation = observer.begin(&mut req, CLIENT.parse().unwrap(), "http");
            let mut response = Response::new(Frames(2).boxed_unsync());
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
            // As hyper's HTTP/1.1 encoder does: stop polling once the
            // declared length is out, then drop the body.
            let mut body = observation.finish(response).into_body();
            for _ in 0..frames_read {
                body.frame().await.unwrap().unwrap();
            }
            drop(body);
            let record = queue.try_recv().unwrap();
            assert_eq!(record.aborted, aborted, "after {frames_read} frames");
            assert_eq!(record.bytes, 3 * frames_read);
        }
    }

    /// A body of `n` three-byte frames that never says it has ended early.
    struct Frames(u8);

    impl http_body::Body for Frames {
        type Data = bytes::Bytes;
        type Error = crate::body::BoxError;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(None);
            }
            self.0 -= 1;
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
                b"abc",
            )))))
        }
    }
}
