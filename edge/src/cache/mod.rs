//! The cache step of the request path: look up, decide, and on a miss fetch
//! once for everyone while storing the response as it streams.
//!
//! The rules are edge-cache's pure policy functions; this module only asks
//! them and acts:
//!
//! - **hit** (fresh, or stale the request accepts): answered from memory,
//!   or after a memory miss from the disk tier (`disk_tier`), with `Age`;
//!   a matching client conditional gets 304.
//! - **stale within `stale-while-revalidate`**: answered from memory at
//!   once; one background refresh per key (the refresh is a coalescing
//!   flight, so concurrent stale hits start no second one).
//! - **stale otherwise**: revalidated with a conditional request; 304
//!   refreshes the stored headers, 200 replaces the entry, an origin error
//!   within `stale-if-error` serves the stale copy.
//! - **miss**: the first request leads a coalescing flight; its fetch runs in
//!   its own task, publishing the head and each body chunk to every client
//!   of the flight (the leader's own client included) and storing the
//!   object when the body completed in full. Followers stream as chunks
//!   arrive. A response that turns out not storable releases every follower
//!   at once to fetch on its own. A stored object is written through to
//!   the disk tier after its clients are served.
//! - **range** (GET with `Range`, RFC 9110 §14): looked up like any GET.
//!   A stored 200 answers with a 206 cut from its chunks, a 416, or the
//!   full 200 when the range is ignored (rules in `edge_cache::range`). On a
//!   miss the fill drops `Range` / `If-Range` and fetches the whole object
//!   once for everyone; the ranged client streams the flight through
//!   `range_body` and is answered as soon as its bytes arrive. If the
//!   answer turns out not storable (no `Content-Length`, over the
//!   per-object limit, `no-store`, …) the request is sent again with the
//!   client's `Range`, so the origin cuts the range: one extra request head
//!   instead of streaming a whole object to serve part of it.
//!
//! Trade-offs, on purpose for now: only responses with a `Content-Length`
//! within the per-object limit are coalesced and stored (a chunked or
//! larger response streams straight through, so memory stays bounded);
//! HEAD misses bypass the cache (without `Range`, which HEAD ignores).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edge_cache::age;
use edge_cache::cache_control::{self, RequestDirectives};
use edge_cache::coalesce::{Coalescer, Follower, Joined, Leader};
use edge_cache::counters::Outcome;
use edge_cache::disk::DiskStore;
use edge_cache::entry::StoredResponse;
use edge_cache::key::CacheKey;
use edge_cache::memory::{Lookup, MemoryOptions, MemoryTier};
use edge_cache::reuse::{self, Reuse, StoredFreshness};
use edge_cache::vary::{self, SecondaryKey, VarySpec};
use edge_cache::{invalidation, range, validation};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::forward;
use crate::proxy::Upstream;
use crate::upstream::UpstreamError;

mod bodies;
mod disk_tier;
mod fill;
mod partial;
mod policy;
mod purge;
mod range_body;
mod store;

pub use policy::SitePolicy;
pub use purge::Purged;

use bodies::{FlightBody, StoredBody};
use disk_tier::{DISK_HIT, FromDisk, MEMORY_HIT, Tier};
use fill::fill;

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Request headers that would turn a cache fill into a partial or 304
/// answer; a fill always asks for the full representation.
const CLIENT_CONDITIONALS: [HeaderName; 4] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// The client's range fields: a fill fetches the whole object and the
/// cache cuts each client's range from it.
const CLIENT_RANGE: [HeaderName; 2] = [header::RANGE, header::IF_RANGE];

/// The node's cache: the memory tier and the in-flight fetches, shared by
/// every worker.
pub struct HttpCache {
    memory: MemoryTier,
    /// The disk tier, when `[cache] disk` is configured.
    disk: Option<DiskStore>,
    /// Disk-tier index lookups after a memory miss: found, not found.
    disk_lookups: [AtomicU64; 2],
    flights: Coalescer<CacheKey, Arc<SharedHead>>,
    targeted: Vec<HeaderName>,
    lock_timeout: Duration,
    node_id: String,
    /// `<node>; hit; ttl=`, the start of every hit's `Cache-Status` member.
    hit_prefix: String,
    /// `Age` values 0 ..= [`AGE_TABLE`] - 1, built once so a hit clones one.
    ages: Vec<HeaderValue>,
}

/// How many `Age` values are kept ready-made.
const AGE_TABLE: u64 = 4096;

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("memory", &self.memory.options())
            .field("targeted", &self.targeted)
            .finish_non_exhaustive()
    }
}

impl HttpCache {
    /// The cache described by `[cache]`.
    pub fn new(config: &edge_config::Config) -> anyhow::Result<Self> {
        let cache = &config.cache;
        let mut memory = MemoryOptions::for_capacity(cache.memory);
        if let Some(max) = cache.max_object_size {
            memory.max_object_bytes = max.min(cache.memory);
        }
        let mut targeted = Vec::new();
        if let Some(name) = &cache.targeted_field {
            targeted.push(HeaderName::from_bytes(
                name.to_ascii_lowercase().as_bytes(),
            )?);
        }
        targeted.push(cache_control::CDN_CACHE_CONTROL);
        let max_buffer = usize::try_from(memory.max_object_bytes).unwrap_or(usize::MAX);
        let disk = cache.disk.as_ref().map(disk_tier::open).transpose()?;
        Ok(HttpCache {
            memory: MemoryTier::new(memory),
            disk,
            disk_lookups: Default::default(),
            flights: Coalescer::with_max_buffer(max_buffer),
            targeted,
            lock_timeout: cache.lock_timeout,
            node_id: config.node.id.clone(),
            hit_prefix: format!("{}; hit; ttl=", config.node.id),
            ages: (0..AGE_TABLE).map(HeaderValue::from).collect(),
        })
    }

    /// Marks a response that went around the cache (`fwd=bypass`).
    pub fn mark_bypass(&self, headers: &mut HeaderMap) {
        append_cache_status(headers, &self.status("fwd=bypass"));
    }

    fn max_object(&self) -> u64 {
        self.memory.options().max_object_bytes
    }

    /// A `Cache-Status` member of this node (RFC 9211 §2).
    fn status(&self, params: &str) -> String {
        format!("{}; {params}", self.node_id)
    }

    /// The member of a hit: `<node>; hit; ttl=<ttl>; detail=<tier>`.
    fn hit_status(&self, ttl: i64, tier: Tier) -> String {
        let mut digits = [0u8; 21];
        let mut at = digits.len();
        let mut n = ttl.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if ttl < 0 {
            at -= 1;
            digits[at] = b'-';
        }
        let digits = std::str::from_utf8(&digits[at..]).expect("ASCII");
        let detail = tier.detail();
        let mut member = String::with_capacity(self.hit_prefix.len() + digits.len() + detail.len());
        member.push_str(&self.hit_prefix);
        member.push_str(digits);
        member.push_str(detail);
        member
    }

    /// The `Age` field value for `age`.
    fn age_value(&self, age: Duration) -> HeaderValue {
        let secs = age::age_header_value(age);
        match usize::try_from(secs).ok().and_then(|i| self.ages.get(i)) {
            Some(value) => value.clone(),
            None => HeaderValue::from(secs),
        }
    }
}

/// The head of a stored object, whichever tier holds it.
pub(super) struct StoredParts<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
    length: u64,
}

/// The response head shared with every client of a flight.
#[derive(Debug, Clone)]
pub struct SharedHead {
    status: StatusCode,
    headers: HeaderMap,
    /// The body length (`Content-Length`; flights only carry known lengths).
    length: u64,
    vary: VarySpec,
    secondary: Option<SecondaryKey>,
}

/// What the cache step needs: cheap to clone into a background task.
#[derive(Clone)]
pub struct Fetch {
    /// The node's cache.
    pub cache: Arc<HttpCache>,
    /// The site's policy.
    pub policy: Arc<SitePolicy>,
    /// The way to the site's origin pool.
    pub upstream: Upstream,
}

/// A cacheable request, as the client sent it (Host ensured).
pub struct CacheableRequest {
    /// GET or HEAD.
    pub method: Method,
    /// The client's request headers.
    pub headers: HeaderMap,
    /// Host used in the cache key: a `Host` value that is visible ASCII
    /// (an empty value stands for none).
    pub host: HeaderValue,
    /// Path and query, for the key and the upstream request.
    pub path_and_query: PathAndQuery,
}

impl Fetch {
    /// Answers a cacheable request.
    pub async fn serve(self, req: CacheableRequest) -> Response<ProxyBody> {
        let key = edge_cache::key::cache_key(
            "http",
            req.host.to_str().unwrap_or_default(),
            req.path_and_query.as_str(),
            &req.headers,
            &self.policy.key,
        );
        let directives = cache_control::parse_request(req.headers.get_all(header::CACHE_CONTROL));
        if directives.no_store {
            return Box::pin(self.passthrough(&req, "fwd=bypass", Outcome::Bypass)).await;
        }
        let now = SystemTime::now();
        let (entry, tier) = match self.cache.memory.lookup(&key, &req.headers) {
            Lookup::Hit(entry) => (entry, Tier::Memory),
            miss => {
                let fwd = match miss {
                    Lookup::VaryMiss => "vary-miss",
                    _ => "uri-miss",
                };
                let Some(found) = self.cache.disk_lookup(&key, &req.headers) else {
                    return Box::pin(self.miss(req, key, directives, fwd)).await;
                };
                match Box::pin(self.look_on_disk(&req, &key, &directives, found, now)).await {
                    FromDisk::Loaded(entry) => (entry, Tier::Disk),
                    FromDisk::Answered(response) => return response,
                    FromDisk::Miss => return Box::pin(self.miss(req, key, directives, fwd)).await,
                }
            }
        };
        let current_age = age::current_age(&entry.times, now);
        let stored = StoredFreshness {
            freshness_lifetime: entry.lifetime.ttl,
            current_age,
            directives: &entry.directives,
        };
        let hit = tier.hit_member();
        let (fwd, stale) = match reuse::decide(&stored, &directives, &self.policy.reuse) {
            Reuse::Fresh | Reuse::StaleAccepted { .. } => {
                return self.answer_from_store(&req, &entry, current_age, hit, Outcome::Hit);
            }
            Reuse::StaleWhileRevalidate { .. } => {
                self.refresh_in_background(&req, key, entry.clone());
                return self.answer_from_store(&req, &entry, current_age, hit, Outcome::Hit);
            }
            Reuse::GatewayTimeout => return self.only_if_cached_miss(),
            Reuse::MustValidate { reason } => (reason.cache_status_fwd(), Some(entry)),
        };
        if stale.is_none() && reuse::only_if_cached(&directives) {
            return self.only_if_cached_miss();
        }
        // Boxed: the fetch's state stays out of the hit path's future, which
        // is then small to build and move.
        Box::pin(self.fetch(req, key, directives, stale, fwd)).await
    }

    /// Nothing stored for the request: fetch, unless `only-if-cached`.
    async fn miss(
        &self,
        req: CacheableRequest,
        key: CacheKey,
        directives: RequestDirectives,
        fwd: &str,
    ) -> Response<ProxyBody> {
        if reuse::only_if_cached(&directives) {
            return self.only_if_cached_miss();
        }
        self.fetch(req, key, directives, None, fwd).await
    }

    /// The part of [`Fetch::serve`] that goes to the origin.
    async fn fetch(
        &self,
        req: CacheableRequest,
        key: CacheKey,
        directives: RequestDirectives,
        stale: Option<Arc<StoredResponse>>,
        fwd: &str,
    ) -> Response<ProxyBody> {
        if req.method == Method::HEAD {
            return self
                .passthrough(&req, &format!("fwd={fwd}"), Outcome::Miss)
                .await;
        }
        match self.cache.flights.join(key.clone()) {
            Joined::Leader(leader) => self.lead(leader, key, &req, &directives, stale, fwd).await,
            Joined::Follower(follower) => match follower.head(self.cache.lock_timeout).await {
                Ok(head) if head_fits(&head, &req.headers) => {
                    let status = self.cache.status(&format!("fwd={fwd}; collapsed"));
                    self.record(Outcome::Miss, 0);
                    self.answer_from_flight(&req, &head, follower, &status)
                }
                _ => {
                    self.passthrough(&req, &format!("fwd={fwd}"), Outcome::Miss)
                        .await
                }
            },
            Joined::Bypass => {
                self.passthrough(&req, &format!("fwd={fwd}"), Outcome::Miss)
                    .await
            }
        }
    }

    /// Fetches for a flight (conditionally when `stale` is given) and answers
    /// the leading client.
    async fn lead(
        &self,
        mut leader: Leader<CacheKey, Arc<SharedHead>>,
        key: CacheKey,
        req: &CacheableRequest,
        directives: &RequestDirectives,
        stale: Option<Arc<StoredResponse>>,
        fwd: &str,
    ) -> Response<ProxyBody> {
        let mut headers = req.headers.clone();
        for name in CLIENT_CONDITIONALS.into_iter().chain(CLIENT_RANGE) {
            headers.remove(name);
        }
        if let Some(stale) = &stale {
            for (name, value) in &validation::conditional_headers(&stale.headers) {
                headers.insert(name, value.clone());
            }
        }
        let request_time = SystemTime::now();
        let result = self.send(Method::GET, &req.path_and_query, headers).await;
        let response_time = SystemTime::now();
        let stale_allowed = |stale: &StoredResponse| {
            let stored = StoredFreshness {
                freshness_lifetime: stale.lifetime.ttl,
                current_age: age::current_age(&stale.times, response_time),
                directives: &stale.directives,
            };
            reuse::may_serve_stale_on_error(&stored, directives)
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                drop(leader);
                if let Some(stale) = stale.filter(|s| stale_allowed(s)) {
                    tracing::warn!(%error, "origin unreachable; serving stale");
                    let age = age::current_age(&stale.times, response_time);
                    return self.answer_from_store(
                        req,
                        &stale,
                        age,
                        "fwd=stale; detail=origin-unreachable",
                        Outcome::StaleOnError,
                    );
                }
                return self.upstream.error_response(&error);
            }
        };
        let status = response.status();
        if let Some(stale) = &stale {
            if status == StatusCode::NOT_MODIFIED {
                let fresh =
                    self.revalidated(stale, response.headers(), request_time, response_time);
                self.cache
                    .memory
                    .replace_variant(&key, stale, fresh.clone());
                tokio::spawn({
                    let (cache, key, fresh) = (self.cache.clone(), key.clone(), fresh.clone());
                    async move { cache.write_through(&key, &fresh).await }
                });
                leader.publish_head(Arc::new(head_of(&fresh)));
                for chunk in &fresh.body {
                    leader.push_chunk(chunk.clone());
                }
                leader.finish();
                let age = age::current_age(&fresh.times, SystemTime::now());
                return self.answer_from_store(
                    req,
                    &fresh,
                    age,
                    "fwd=stale; fwd-status=304",
                    Outcome::Revalidated,
                );
            }
            if status.is_server_error() && stale_allowed(stale) {
                leader.release_uncacheable();
                let age = age::current_age(&stale.times, response_time);
                let member = format!("fwd=stale; fwd-status={}", status.as_u16());
                return self.answer_from_store(req, stale, age, &member, Outcome::StaleOnError);
            }
        }
        let fwd = match &stale {
            Some(_) => format!("fwd={fwd}; fwd-status={}", status.as_u16()),
            None => format!("fwd={fwd}"),
        };
        let outcome = match &stale {
            Some(_) => Outcome::Revalidated,
            None => Outcome::Miss,
        };
        self.record(outcome, 0);
        let (head, body) = response.into_parts();
        let Some(plan) = self.store_plan(req, directives, &head, request_time, response_time)
        else {
            leader.release_uncacheable();
            if stale.is_some() {
                // The entry was replaced by an answer we may not keep.
                self.cache.forget(&key);
            }
            return self
                .relay_unstored(req, Response::from_parts(head, body), &fwd)
                .await;
        };
        let shared = Arc::new(plan.head.clone());
        leader.publish_head(shared.clone());
        let follower = leader.follower();
        let body = body::with_idle_timeout(body, self.upstream.body_timeout());
        tokio::spawn(fill(leader, body, plan, key, self.cache.clone()));
        self.answer_from_flight(
            req,
            &shared,
            follower,
            &self.cache.status(&format!("{fwd}; stored")),
        )
    }

    /// Starts one background refresh for `key` unless one is running.
    fn refresh_in_background(
        &self,
        req: &CacheableRequest,
        key: CacheKey,
        stale: Arc<StoredResponse>,
    ) {
        let Joined::Leader(leader) = self.cache.flights.join(key.clone()) else {
            return;
        };
        // The refresh is not this request's doing: it must not overwrite
        // the request's own outcome (a hit) or name an endpoint it never used.
        let fetch = Fetch {
            upstream: self.upstream.detached(),
            ..self.clone()
        };
        let req = CacheableRequest {
            method: Method::GET,
            headers: req.headers.clone(),
            host: req.host.clone(),
            path_and_query: req.path_and_query.clone(),
        };
        tokio::spawn(async move {
            let directives = RequestDirectives::default();
            let response = fetch
                .lead(leader, key, &req, &directives, Some(stale), "stale")
                .await;
            // Nobody reads this answer; a stored 200 keeps filling in its
            // own task.
            drop(response);
        });
    }

    /// A response built from a stored entry.
    fn answer_from_store(
        &self,
        req: &CacheableRequest,
        entry: &Arc<StoredResponse>,
        current_age: Duration,
        member: &str,
        outcome: Outcome,
    ) -> Response<ProxyBody> {
        let ttl = entry.lifetime.remaining_secs(current_age);
        let cache_status = match member {
            MEMORY_HIT => self.cache.hit_status(ttl, Tier::Memory),
            DISK_HIT => self.cache.hit_status(ttl, Tier::Disk),
            other => self.cache.status(other),
        };
        let parts = StoredParts {
            status: entry.status,
            headers: &entry.headers,
            length: entry.body_len(),
        };
        let body = || {
            StoredBody {
                entry: entry.clone(),
                next: 0,
            }
            .boxed_unsync()
        };
        self.answer_stored(req, parts, body, current_age, &cache_status, outcome)
    }

    /// The answer from a stored object, whichever tier holds its body: a
    /// 304 for a matching client conditional, else the full object or the
    /// requested range of it (`body` makes the full body, from offset 0).
    fn answer_stored(
        &self,
        req: &CacheableRequest,
        parts: StoredParts<'_>,
        body: impl FnOnce() -> ProxyBody,
        current_age: Duration,
        cache_status: &str,
        outcome: Outcome,
    ) -> Response<ProxyBody> {
        let age_value = self.cache.age_value(current_age);
        if validation::client_conditional_matches(&req.method, &req.headers, parts.headers) {
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = validation::not_modified_headers(parts.headers);
            self.record(outcome, 0);
            return self.finish_headers(response, Some(age_value), cache_status);
        }
        let length = parts.length;
        let range = range::answer(
            &req.method,
            &req.headers,
            parts.status,
            parts.headers,
            length,
        );
        let body = if req.method == Method::HEAD {
            self.record(outcome, 0);
            body::empty()
        } else {
            let served = partial::served_bytes(range, length);
            self.record(outcome, served);
            body()
        };
        let response = partial::respond(range, parts.status, parts.headers.clone(), body, length);
        self.finish_headers(response, Some(age_value), cache_status)
    }

    /// A response streaming a flight's body (the part of it `req` asks for).
    fn answer_from_flight(
        &self,
        req: &CacheableRequest,
        head: &SharedHead,
        follower: Follower<Arc<SharedHead>>,
        cache_status: &str,
    ) -> Response<ProxyBody> {
        let range = range::answer(
            &req.method,
            &req.headers,
            head.status,
            &head.headers,
            head.length,
        );
        let body = FlightBody {
            follower: Some(follower),
            pending: None,
        }
        .boxed_unsync();
        let response =
            partial::respond(range, head.status, head.headers.clone(), body, head.length);
        self.finish_headers(response, None, cache_status)
    }

    /// Forwards the request without the cache's help.
    async fn passthrough(
        &self,
        req: &CacheableRequest,
        member: &str,
        outcome: Outcome,
    ) -> Response<ProxyBody> {
        self.record(outcome, 0);
        let mut headers = req.headers.clone();
        if req.method == Method::HEAD {
            // Range is defined for GET only (RFC 9110 §14.2): a HEAD is
            // answered as for the full object, whatever the origin would do.
            for name in CLIENT_RANGE {
                headers.remove(name);
            }
        }
        match self
            .send(req.method.clone(), &req.path_and_query, headers)
            .await
        {
            Ok(response) => self.relay(response, &self.cache.status(member)),
            Err(error) => self.upstream.error_response(&error),
        }
    }

    /// Relays a fill's answer that will not be stored. For a ranged GET
    /// whose answer is a 200 the request is sent again with the client's
    /// `Range` (the fill dropped it), so the origin cuts the range instead
    /// of a whole object streaming through to serve part of it.
    async fn relay_unstored(
        &self,
        req: &CacheableRequest,
        response: Response<Incoming>,
        fwd: &str,
    ) -> Response<ProxyBody> {
        let member = self.cache.status(fwd);
        if response.status() != StatusCode::OK || !range::requests_range(&req.method, &req.headers)
        {
            return self.relay(response, &member);
        }
        drop(response);
        tracing::debug!("not storable; sending the client's range to origin");
        match self
            .send(req.method.clone(), &req.path_and_query, req.headers.clone())
            .await
        {
            Ok(response) => self.relay(response, &member),
            Err(error) => self.upstream.error_response(&error),
        }
    }

    /// Relays an upstream response to the client.
    fn relay(&self, response: Response<Incoming>, cache_status: &str) -> Response<ProxyBody> {
        let (mut head, body) = response.into_parts();
        forward::strip_hop_by_hop(&mut head.headers);
        let response = Response::from_parts(
            head,
            body::with_idle_timeout(body, self.upstream.body_timeout()),
        );
        self.finish_headers(response, None, cache_status)
    }

    /// Adds the per-hop fields every answer of this step carries.
    fn finish_headers(
        &self,
        mut response: Response<ProxyBody>,
        age_value: Option<HeaderValue>,
        cache_status: &str,
    ) -> Response<ProxyBody> {
        *response.version_mut() = self.upstream.client_version();
        let headers = response.headers_mut();
        headers.append(header::VIA, self.upstream.response_via().clone());
        if let Some(age_value) = age_value {
            headers.insert(header::AGE, age_value);
        }
        append_cache_status(headers, cache_status);
        response
    }

    fn only_if_cached_miss(&self) -> Response<ProxyBody> {
        let mut response = Response::new(body::full(Bytes::from_static(
            b"edge: only-if-cached and nothing usable is cached\n",
        )));
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        self.finish_headers(response, None, &self.cache.status("fwd=miss"))
    }

    /// Counts `outcome` for the site and notes it for the request's record.
    fn record(&self, outcome: Outcome, bytes: u64) {
        self.policy.counters.record(outcome, bytes);
        self.upstream.note_cache(outcome);
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &PathAndQuery,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.upstream
            .send(method, path_and_query, headers, body::empty())
            .await
    }
}

/// After a successful unsafe request, drops the cached entries of its
/// target URI and of same-origin `Location` / `Content-Location` (RFC 9111 §4.4).
pub fn invalidate_after(
    cache: &HttpCache,
    policy: &SitePolicy,
    method: &Method,
    status: StatusCode,
    host: &str,
    path_and_query: &str,
    response_headers: &HeaderMap,
) {
    let targets = invalidation::invalidation_targets(
        method,
        status,
        "http",
        host,
        path_and_query,
        response_headers,
    );
    for target in targets {
        cache.forget_url(&target.cache_url(&policy.key));
    }
}

/// Appends this hop's member to `Cache-Status` (RFC 9211 §2: the last
/// member is the cache closest to the client).
fn append_cache_status(headers: &mut HeaderMap, member: &str) {
    let value = match headers.get(&CACHE_STATUS).and_then(|v| v.to_str().ok()) {
        Some(upstream) => HeaderValue::from_str(&format!("{upstream}, {member}")),
        None => HeaderValue::from_str(member),
    };
    if let Ok(value) = value {
        headers.insert(CACHE_STATUS, value);
    }
}

/// Whether a flight's response may answer this request (its Vary matches).
fn head_fits(head: &SharedHead, request: &HeaderMap) -> bool {
    match &head.secondary {
        Some(stored) => vary::matches(&head.vary, stored, request),
        None => false,
    }
}

fn head_of(entry: &StoredResponse) -> SharedHead {
    SharedHead {
        status: entry.status,
        headers: entry.headers.clone(),
        length: entry.body_len(),
        vary: entry.vary.clone(),
        secondary: entry.secondary.clone(),
    }
}
