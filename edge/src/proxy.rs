//! The request pipeline: guards → route → forward → respond → observe.
//!
//! This is the part every socket backend shares. It takes an
//! `http::Request` with any streaming body and returns an `http::Response`
//! with a [`ProxyBody`]; it knows nothing of sockets, hyper connections or
//! runtimes, so a different backend (the io_uring HTTP/1 codec planned in
//! DESIGN.md) plugs in by calling [`Proxy::handle`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use edge_config::Config;
use edge_lb::{EndpointSpec, Epoch, PickRequest, WyRand};
use edge_shield::hop::{HopResult, Reply};
use std::cell::RefCell;
use std::net::SocketAddr as EndpointAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use hyper::body::Incoming;

use crate::body::{self, BoxError, ProxyBody};
use crate::cache::{self, CacheableRequest, Fetch, HttpCache, Purged, SitePolicy};
use crate::faults::{Abort, FaultRule, SiteFaults};
use crate::forward::{self, ViaValues};
use crate::guard::{RateLimits, Verdict};
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::RequestMetrics;
use crate::observe::{Observation, Observer, RequestNotes};
use crate::origin_pool::OriginPool;
use crate::route::SiteTable;
use crate::upstream::{UpstreamClient, UpstreamError};
use edge_cache::counters::Outcome;

const CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");
/// RFC 9209: how a proxy says what happened to a request it forwarded.
const PROXY_STATUS: HeaderName = HeaderName::from_static("proxy-status");

/// Where a request came from, as the socket backend saw it.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// Peer address of the downstream connection.
    pub addr: SocketAddr,
    /// `"http"` or `"https"`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
}

/// Request extension set by a socket backend that saw `Content-Length` and
/// `Transfer-Encoding` on the wire even if its parser dropped one of them.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousFraming;

/// Everything the pipeline derives from one configuration, shared by all workers.
#[derive(Debug)]
pub struct Pipeline {
    node_id: String,
    sites: SiteTable,
    /// Pool index of each site.
    site_pools: Vec<usize>,
    /// Pool index of each site's shield tier, when it has one.
    site_shields: Vec<Option<usize>>,
    /// Shared with the pipeline before a reload when unchanged.
    pools: Vec<Arc<OriginPool>>,
    via: ViaValues,
    cdn_loop_id: HeaderValue,
    cache: Arc<HttpCache>,
    /// Cache policy of each site.
    site_policies: Vec<Arc<SitePolicy>>,
    /// Fault injection rules, by site.
    faults: Vec<SiteFaults>,
    /// Networks allowed to send `PURGE` (`[cache] purge_from`).
    purge_from: Vec<ipnet::IpNet>,
    /// Each site's first host: its name in metrics and the admin API.
    site_names: Vec<String>,
    /// Request ids and the access log.
    observer: Observer,
    /// Per-site rate limits, and who the client is behind trusted proxies.
    rate_limits: RateLimits,
}

impl Pipeline {
    /// Builds the routing tables of a validated configuration; `endpoints`
    /// holds each pool's resolved endpoints, in config order; records of
    /// finished requests go to `access_log` when given. Pools that
    /// `previous` (the pipeline a reload replaces) has with the same name
    /// and definition carry over with their health, ejection, breaker and
    /// load-shedding state, still serving `previous` too: their endpoints
    /// follow `endpoints` only when the reload commits
    /// ([`Pipeline::follow_endpoints`]).
    pub fn new(
        config: &Config,
        endpoints: &[Vec<EndpointSpec>],
        access_log: Option<AccessLog>,
        cache: Arc<HttpCache>,
        previous: Option<&Pipeline>,
    ) -> anyhow::Result<Self> {
        let pool_names: Vec<&String> = config.pools.keys().collect();
        let epoch = Epoch::new(Instant::now());
        let pools = config
            .pools
            .iter()
            .zip(endpoints)
            .map(|((name, pool), specs)| {
                let kept = previous
                    .into_iter()
                    .flat_map(|p| &p.pools)
                    .find(|old| old.name == *name && old.definition == *pool);
                match kept {
                    Some(kept) => {
                        tracing::debug!(pool = %name, "pool unchanged by the reload; its state carries over");
                        Ok(kept.clone())
                    }
                    None => OriginPool::new(name, pool, specs, epoch).map(Arc::new),
                }
            })
            .collect::<anyhow::Result<_>>()?;
        let pool_index = |name: &str| {
            pool_names
                .iter()
                .position(|known| *known == name)
                .ok_or_else(|| anyhow::anyhow!("site names unknown pool {name:?}"))
        };
        let site_pools = config
            .sites
            .iter()
            .map(|site| pool_index(&site.pool))
            .collect::<anyhow::Result<_>>()?;
        let site_shields = config
            .sites
            .iter()
            .map(|site| site.shield.as_deref().map(pool_index).transpose())
            .collect::<anyhow::Result<_>>()?;
        for (name, pool) in &config.pools {
            let shields = config.sites.iter().any(|s| s.shield.as_ref() == Some(name));
            if shields && pool.balance != edge_config::Balance::Hash {
                tracing::warn!(
                    pool = %name,
                    "pools.{name} is a shield tier but not balance = \"hash\": an object may be fetched through several shields, and the origin asked once per shield"
                );
            }
        }
        Ok(Pipeline {
            node_id: config.node.id.clone(),
            sites: SiteTable::new(config.sites.iter().map(|s| s.hosts.as_slice())),
            site_pools,
            site_shields,
            pools,
            via: ViaValues::new(&config.node.id)?,
            cdn_loop_id: HeaderValue::from_str(&config.node.id)?,
            cache,
            site_policies: config
                .sites
                .iter()
                .map(|site| SitePolicy::new(&site.cache, &config.cache).map(Arc::new))
                .collect::<anyhow::Result<_>>()?,
            faults: config
                .sites
                .iter()
                .map(|site| {
                    let rule = site
                        .faults
                        .as_ref()
                        .map(FaultRule::from_config)
                        .transpose()?;
                    Ok(SiteFaults::new(rule))
                })
                .collect::<anyhow::Result<_>>()?,
            site_names: config.sites.iter().map(|s| s.hosts[0].clone()).collect(),
            purge_from: config.cache.purge_from.clone(),
            observer: Observer::new(
                &config.log,
                access_log,
                RequestMetrics::new(config.sites.iter().map(|s| s.hosts[0].as_str())),
            ),
            rate_limits: RateLimits::new(config, epoch, previous.map(|p| &p.rate_limits))?,
        })
    }
}

impl Pipeline {
    /// Moves every pool to its freshly resolved `endpoints` (config order):
    /// the carried-over pools' step of a committed reload; a no-op for new
    /// pools, built on them. Endpoints that stay keep their state.
    pub fn follow_endpoints(&self, endpoints: &[Vec<EndpointSpec>]) {
        for (pool, specs) in self.pools.iter().zip(endpoints) {
            pool.lb.update(specs, pool.now());
        }
    }

    /// The origin pools, in config order.
    pub fn pools(&self) -> &[Arc<OriginPool>] {
        &self.pools
    }

    /// The fault rules of the site serving `host`, with its name.
    pub fn site_faults(&self, host: &str) -> Option<(&str, &SiteFaults)> {
        let site = self.sites.lookup(Some(host))?;
        Some((&self.site_names[site], &self.faults[site]))
    }

    /// Every site's name and fault rules.
    pub fn all_faults(&self) -> impl Iterator<Item = (&str, &SiteFaults)> {
        self.site_names.iter().map(String::as_str).zip(&self.faults)
    }

    /// The node's cache.
    pub fn cache(&self) -> &HttpCache {
        &self.cache
    }

    /// Ids, metrics and the access log.
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Purges `host` + `path_and_query` under the cache-key options of the
    /// site serving `host`; `None` when no site does.
    pub fn purge_url(&self, host: &str, path_and_query: &str, soft: bool) -> Option<Purged> {
        let site = self.sites.lookup(Some(host))?;
        let options = self.site_policies[site].key_options();
        let url = edge_cache::key::cache_url("http", host, path_and_query, options);
        Some(self.cache.purge_url(&url, soft))
    }

    /// The `PURGE` method on a data listener (RFC-less, as Varnish and
    /// Fastly use it): off unless `[cache] purge_from` lists the peer's
    /// network (405 when off, 403 from elsewhere). Purges the request's URL
    /// like `POST /purge?url=`; `X-Purge-Soft: 1` marks stale instead. The
    /// socket peer decides, never `X-Forwarded-For`.
    /// `host` is the request's authority or Host, as routing read it.
    fn purge_method(
        &self,
        head: &http::request::Parts,
        host: &str,
        peer: IpAddr,
    ) -> Response<ProxyBody> {
        if self.purge_from.is_empty() {
            let mut response = local(
                StatusCode::METHOD_NOT_ALLOWED,
                "edge: PURGE is not enabled\n",
            );
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
            );
            return response;
        }
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        if !self.purge_from.iter().any(|net| net.contains(&peer)) {
            return local(
                StatusCode::FORBIDDEN,
                "edge: PURGE is not allowed from this address\n",
            );
        }
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let soft = head
            .headers
            .get("x-purge-soft")
            .is_some_and(|v| v.as_bytes() == b"1");
        let Some(purged) = self.purge_url(host, path, soft) else {
            return local(
                StatusCode::MISDIRECTED_REQUEST,
                "edge: no site is configured for this host\n",
            );
        };
        tracing::info!(%host, path, soft, memory = purged.memory, disk = purged.disk, "PURGE");
        let body = format!(
            "{{\"purged\":{},\"memory\":{},\"disk\":{},\"soft\":{soft}}}\n",
            purged.objects(),
            purged.memory,
            purged.disk
        );
        let mut response = Response::new(body::full(Bytes::from(body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    /// Purges every object tagged `tag`.
    pub fn purge_tag(&self, tag: &str, soft: bool) -> Purged {
        self.cache.purge_tag(tag, soft)
    }

    /// The per-site rate limits and their counters.
    pub fn rate_limits(&self) -> &RateLimits {
        &self.rate_limits
    }
}

/// The pipeline in force, swapped as a whole by a config reload: requests
/// load it once when they start and keep that one until they end.
pub type CurrentPipeline = Arc<ArcSwap<Pipeline>>;

/// A worker's handle on the pipeline: the one in force, plus this worker's
/// upstream connection pools for it.
#[derive(Debug)]
pub struct Proxy {
    current: CurrentPipeline,
    /// The pipeline this worker last served and its clients, rebuilt when
    /// a reload swapped the pipeline (one uncontended lock per request:
    /// the worker's tasks all run on its one thread).
    local: Mutex<Generation>,
}

/// One pipeline and this worker's upstream clients for its pools.
#[derive(Debug, Clone)]
struct Generation {
    pipeline: Arc<Pipeline>,
    clients: Arc<[Arc<UpstreamClient>]>,
}

impl Generation {
    /// Clients for `pipeline`'s pools; a pool carried over from
    /// `previous` keeps its client, and so its idle upstream connections.
    fn new(pipeline: Arc<Pipeline>, previous: Option<&Generation>) -> Self {
        let clients = pipeline
            .pools
            .iter()
            .map(|pool| {
                previous
                    .and_then(|previous| {
                        let at = previous
                            .pipeline
                            .pools
                            .iter()
                            .position(|old| Arc::ptr_eq(old, pool))?;
                        Some(previous.clients[at].clone())
                    })
                    .unwrap_or_else(|| Arc::new(UpstreamClient::new(&pool.settings)))
            })
            .collect();
        Generation { pipeline, clients }
    }
}

impl Proxy {
    /// Creates the worker's upstream clients; call on the worker's runtime.
    pub fn new(current: CurrentPipeline) -> Self {
        let local = Mutex::new(Generation::new(current.load_full(), None));
        Proxy { current, local }
    }

    /// The pipeline in force and this worker's clients for it.
    fn generation(&self) -> Generation {
        let current = self.current.load();
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&local.pipeline, &current) {
            // A reload swapped the pipeline: new clients for its changed
            // pools; the old ones close once the requests using them finish.
            *local = Generation::new(Arc::clone(&current), Some(&local));
        }
        local.clone()
    }

    /// Answers one request, and observes it: its `X-Request-Id` goes
    /// upstream and back, and its access-log record completes when the
    /// response body does.
    pub async fn handle<B>(&self, req: Request<B>, client: ClientInfo) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut head, body) = req.into_parts();
        let generation = self.generation();
        let (observation, client_ip) = observe(&generation.pipeline, &mut head, client);
        let response = answer(
            generation,
            head,
            body,
            client,
            client_ip,
            observation.notes(),
        )
        .await;
        observation.finish(response)
    }

    /// Observes a request the socket backend answered itself (an HTTPS
    /// redirect), so it has an id and a log line like any other.
    pub fn answered_by_backend<B>(
        &self,
        req: Request<B>,
        client: ClientInfo,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let (mut head, _body) = req.into_parts();
        let (observation, _) = observe(&self.current.load(), &mut head, client);
        observation.finish(response)
    }
}

/// Starts observing a request, and says who its client is: the peer,
/// or the address a trusted proxy forwarded. That address is what the
/// access log shows (with the peer's port) and rate limits count.
fn observe(
    pipeline: &Pipeline,
    head: &mut http::request::Parts,
    client: ClientInfo,
) -> (Observation, IpAddr) {
    let client_ip = pipeline.rate_limits.client(client.addr.ip(), &head.headers);
    let observation = pipeline.observer.begin(
        head,
        SocketAddr::new(client_ip, client.addr.port()),
        client.proto,
    );
    (observation, client_ip)
}

/// The pipeline proper: guards, route, cache or forward. `client_ip`
/// is who rate limits count (the peer, or whom a trusted proxy names);
/// `notes`, when given, hears which endpoint and cache outcome served
/// the request.
async fn answer<B>(
    generation: Generation,
    mut head: http::request::Parts,
    body: B,
    client: ClientInfo,
    client_ip: IpAddr,
    notes: Option<Arc<RequestNotes>>,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let pipeline = &*generation.pipeline;
    let downstream_version = head.version;

    if head.version < Version::HTTP_2 {
        if head.extensions.get::<AmbiguousFraming>().is_some()
            || forward::has_ambiguous_framing(&head.headers)
        {
            return refuse(
                StatusCode::BAD_REQUEST,
                "edge: request has both Content-Length and Transfer-Encoding\n",
            );
        }
        if head.version == Version::HTTP_11
            && head.uri.authority().is_none()
            && !head.headers.contains_key(header::HOST)
        {
            return refuse(
                StatusCode::BAD_REQUEST,
                "edge: HTTP/1.1 request without Host\n",
            );
        }
    }

    // An absolute-form or HTTP/2 authority wins over Host (RFC 9112 §3.2.2).
    let host = match head.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => head.headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    };
    let Some(site) = pipeline.sites.lookup(host) else {
        return local(
            StatusCode::MISDIRECTED_REQUEST,
            "edge: no site is configured for this host\n",
        );
    };
    if let Some(notes) = &notes {
        notes.site(site);
    }

    // Limits are per site, so they apply once the site is known, and
    // before the cache: a refused request costs no lookup and no fetch.
    if pipeline.rate_limits.limits(site)
        && let Verdict::Limited { retry_after } =
            pipeline
                .rate_limits
                .check(site, client_ip, &head.headers, Instant::now())
    {
        return too_many_requests(retry_after);
    }

    if head.method.as_str() == "PURGE" {
        return pipeline.purge_method(&head, host.unwrap_or_default(), client.addr.ip());
    }

    let loop_lines = head.headers.get_all(CDN_LOOP).iter().map(|v| v.as_bytes());
    if edge_shield::cdn_loop::contains(loop_lines, &pipeline.node_id) {
        return local(
            StatusCode::LOOP_DETECTED,
            "edge: request loop detected (CDN-Loop names this node)\n",
        );
    }

    // The client's Host travels upstream; an HTTP/2 request carries it
    // as :authority, which HTTP/1.1 must send as Host.
    if !head.headers.contains_key(header::HOST)
        && let Some(authority) = head.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        head.headers.insert(header::HOST, value);
    }
    let pool = pipeline.site_pools[site];
    let upstream = Upstream {
        pipeline: generation.pipeline.clone(),
        site,
        pool,
        client: generation.clients[pool].clone(),
        shield: pipeline.site_shields[site]
            .map(|shield| (shield, generation.clients[shield].clone())),
        from: client,
        version: downstream_version,
        notes,
    };
    let path_and_query = head
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let policy = &pipeline.site_policies[site];

    if policy.applies_to(&head.method, path_and_query.path()) {
        let host = head
            .headers
            .get(header::HOST)
            .filter(|h| h.to_str().is_ok())
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(""));
        // A GET or HEAD body has no defined meaning (RFC 9110 §9.3.1); it is dropped.
        drop(body);
        let fetch = Fetch {
            cache: pipeline.cache.clone(),
            policy: policy.clone(),
            upstream,
        };
        return fetch
            .serve(CacheableRequest {
                method: head.method,
                headers: head.headers,
                host,
                path_and_query,
            })
            .await;
    }

    let host = head
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let method = head.method.clone();
    let body = body::with_idle_timeout(body, upstream.body_timeout());
    // Boxed, so the cache path's future does not carry this one's state.
    match Box::pin(upstream.send(head.method, &path_and_query, head.headers, body)).await {
        Ok(response) => {
            let (mut head, body) = response.into_parts();
            cache::invalidate_after(
                &pipeline.cache,
                policy,
                &method,
                head.status,
                &host,
                path_and_query.as_str(),
                &head.headers,
            );
            forward::strip_hop_by_hop(&mut head.headers);
            head.headers
                .append(header::VIA, pipeline.via.for_version(head.version).clone());
            pipeline.cache.mark_bypass(&mut head.headers);
            policy.counters.record(Outcome::Bypass, 0);
            upstream.note_cache(Outcome::Bypass);
            // We answer in the client's protocol, whatever the origin spoke.
            head.version = downstream_version;
            Response::from_parts(head, body::with_idle_timeout(body, upstream.body_timeout()))
        }
        Err(error) => match error {
            // The rest of the body may still be on its way (or never
            // come): nothing after it on this connection can be trusted
            // to be a request head.
            UpstreamError::ClientBody(_) => {
                let (status, text) = error.client_answer();
                refuse(status, text)
            }
            _ => upstream.error_response(&error),
        },
    }
}

/// The way from one request to its site's origin pool: picks the endpoint,
/// applies the proxy rewrites of RFC 9110 §7.6 and sends. Cheap to clone
/// into a background task (a cache refresh).
#[derive(Debug, Clone)]
pub struct Upstream {
    pipeline: Arc<Pipeline>,
    site: usize,
    pool: usize,
    client: Arc<UpstreamClient>,
    /// The site's shield tier: its pool index and this worker's client.
    shield: Option<(usize, Arc<UpstreamClient>)>,
    from: ClientInfo,
    version: Version,
    /// The request's notes, when it is observed.
    notes: Option<Arc<RequestNotes>>,
}

impl Upstream {
    /// The same way upstream for work done on no client's behalf (a
    /// background refresh): it notes nothing in the request that started it.
    pub fn detached(&self) -> Upstream {
        Upstream {
            notes: None,
            ..self.clone()
        }
    }

    /// Notes the cache step's outcome for the request's record.
    pub fn note_cache(&self, outcome: Outcome) {
        if let Some(notes) = &self.notes {
            notes.cache(outcome);
        }
    }

    /// The pool's idle-body timeout.
    pub fn body_timeout(&self) -> Duration {
        self.pipeline.pools[self.pool].settings.body_timeout
    }

    /// The client's protocol version, in which it is answered.
    pub fn client_version(&self) -> Version {
        self.version
    }

    /// The `Via` value for a response received from the origin (HTTP/1.1).
    pub fn response_via(&self) -> &HeaderValue {
        self.pipeline.via.for_version(Version::HTTP_11)
    }

    /// Sends `method path_and_query` with the client's `headers` (rewritten
    /// here for the hop) and `body` to an endpoint of the pool.
    ///
    /// An idempotent request without a body is tried again on another
    /// endpoint after a connect failure, a reset, a timeout or a 502/503/504,
    /// up to the pool's `retries`, while the retry budget allows; nothing has
    /// reached the client yet at that point.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &PathAndQuery,
        mut headers: HeaderMap,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pipeline = &*self.pipeline;
        let pool = &pipeline.pools[self.pool];
        forward::strip_hop_by_hop(&mut headers);
        headers.append(header::VIA, pipeline.via.for_version(self.version).clone());
        forward::add_forwarded_for(&mut headers, self.from.addr.ip(), self.from.proto);
        headers.append(CDN_LOOP, pipeline.cdn_loop_id.clone());

        self.inject_faults(&headers).await?;
        if let Some((shield, client)) = &self.shield
            && edge_shield::hop::takes_shield_hop(method.as_str(), !body.is_end_stream())
        {
            let shield = &pipeline.pools[*shield];
            let target = Target {
                hop: Hop::Shield,
                pool: shield,
                client,
            };
            let answer = self
                .send_to(
                    target,
                    method.clone(),
                    path_and_query,
                    headers.clone(),
                    body::empty(),
                )
                .await;
            let reply = answer.as_ref().map_or_else(error_reply, response_reply);
            match (edge_shield::hop::judge(reply), answer) {
                // Shedding is the shield tier protecting itself and the
                // origin: fetching around it would defeat that.
                (_, Err(UpstreamError::Shed)) => return Err(UpstreamError::Shed),
                (HopResult::Answered, answer) => return answer,
                (HopResult::FallBack(reason), answer) => {
                    let site = &pipeline.site_names[self.site];
                    match answer {
                        Ok(response) => {
                            tracing::warn!(%site, shield = %shield.name, status = %response.status(), "the shield tier could not reach the origin; fetching directly")
                        }
                        Err(error) => {
                            tracing::warn!(%site, shield = %shield.name, %error, "the shield tier is unreachable; fetching from the origin directly")
                        }
                    }
                    metrics::counter!("edge_shield_fallbacks_total", "site" => site.clone(), "reason" => reason.label())
                        .increment(1);
                }
            }
        }
        let target = Target {
            hop: Hop::Origin,
            pool,
            client: &self.client,
        };
        self.send_to(target, method, path_and_query, headers, body)
            .await
    }

    /// The answer the client gets for `error`, with a `Proxy-Status`
    /// naming this node and the error (RFC 9209) when it is a gateway
    /// error: how an edge tells a shield's own 502/504 from an origin's.
    pub fn error_response(&self, error: &UpstreamError) -> Response<ProxyBody> {
        let mut response = error.client_response();
        if let Some(kind) = error.proxy_status_error()
            && let Ok(value) =
                HeaderValue::from_str(&format!("\"{}\"; error={kind}", self.pipeline.node_id))
        {
            response.headers_mut().insert(PROXY_STATUS, value);
        }
        response
    }

    /// Sends to one pool: within its adaptive concurrency limit (load
    /// shedding), with its retries.
    async fn send_to(
        &self,
        target: Target<'_>,
        method: Method,
        path_and_query: &PathAndQuery,
        headers: HeaderMap,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pool = target.pool;
        // Load shedding: over the pool's adaptive limit, fail fast.
        let admitted = match &pool.adaptive {
            Some(limit) => Some(limit.try_acquire(pool.now()).ok_or(UpstreamError::Shed)?),
            None => None,
        };
        let result = self
            .send_attempts(target, method, path_and_query, headers, body)
            .await;
        if let (Some(limit), Some(admitted)) = (&pool.adaptive, admitted) {
            match &result {
                // The client's slow body says nothing about the origin.
                Err(UpstreamError::ClientBody(_)) => limit.release(admitted),
                _ => {
                    let ok = result
                        .as_ref()
                        .is_ok_and(|response| !response.status().is_server_error());
                    limit.complete(admitted, ok, pool.now());
                }
            }
        }
        result
    }

    /// The attempts of [`Upstream::send`]: pick, send, and retry on another
    /// endpoint while allowed.
    async fn send_attempts(
        &self,
        target: Target<'_>,
        method: Method,
        path_and_query: &PathAndQuery,
        headers: HeaderMap,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let Target { hop, pool, client } = target;
        let mut headers = headers;
        let key = pool
            .hashed
            .then(|| placement_key(pool, &headers, path_and_query));
        let first = PickRequest {
            key,
            ..PickRequest::default()
        };
        let retryable =
            body.is_end_stream() && edge_lb::retry_allowed(&method, pool.retry_unsafe_idempotent);
        pool.budget.deposit(pool.now());
        let mut body = Some(body);
        let mut tried: Vec<EndpointAddr> = Vec::new();
        loop {
            let request = if tried.is_empty() {
                first
            } else {
                first.retry(&tried)
            };
            let guard = RNG
                .with_borrow_mut(|rng| pool.lb.pick(&request, pool.now(), rng))
                .map_err(|error| {
                    tracing::warn!(pool = %pool.name, %error, "no endpoint to send to");
                    UpstreamError::NoEndpoint
                })?;
            let endpoint = guard.addr();
            if let Some(notes) = &self.notes {
                notes.upstream(endpoint);
            }
            let mut upstream = Request::new(body.take().unwrap_or_else(body::empty));
            *upstream.method_mut() = method.clone();
            *upstream.uri_mut() = upstream_uri(pool.settings.scheme(), endpoint, path_and_query);
            *upstream.headers_mut() = if retryable {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let sent = Instant::now();
            let result = client.send(upstream).await;
            pool.upstream_durations
                .record(endpoint, sent.elapsed(), || pool.lb.addrs());
            let outcome = match (&result, hop) {
                // The client's body failed: a cancellation, which neither
                // helps nor hurts the endpoint.
                (Err(UpstreamError::ClientBody(_)), _) => None,
                // An origin's answer relayed by a healthy shield is not the
                // shield's failure (edge_shield::hop).
                (result, Hop::Shield)
                    if !result
                        .as_ref()
                        .map_or_else(error_reply, response_reply)
                        .is_shield_failure() =>
                {
                    Some(edge_lb::Outcome::Success)
                }
                (Ok(response), _) => {
                    Some(edge_lb::Outcome::from_status(response.status().as_u16()))
                }
                (Err(UpstreamError::Connect(_)), _) => Some(edge_lb::Outcome::ConnectFailure),
                (Err(UpstreamError::Timeout(_)), _) => Some(edge_lb::Outcome::Timeout),
                (Err(_), _) => Some(edge_lb::Outcome::Reset),
            };
            match outcome {
                Some(outcome) => guard.finish(outcome, pool.now()),
                None => drop(guard),
            }
            let failed = match (&result, hop) {
                (Ok(response), Hop::Origin) => {
                    edge_lb::retryable_status(response.status().as_u16())
                }
                // Another shield is tried only when this one could not be
                // reached: a status is the origin's answer (or a fallback's
                // cue), and a timeout means the origin is slow.
                (Ok(_) | Err(UpstreamError::Timeout(_)), Hop::Shield) => false,
                (Err(_), _) => true,
            };
            // Only onto an endpoint not tried yet: the same one again would
            // double the load on an origin that is already failing.
            let may_retry = retryable
                && failed
                && tried.len() < pool.retries as usize
                && tried.len() + 1 < pool.lb.len()
                && pool.budget.try_withdraw(pool.now());
            match result {
                Err(error @ UpstreamError::ClientBody(_)) => {
                    tracing::debug!(%endpoint, %error, "request body from the client failed");
                    return Err(error);
                }
                Err(error) if !may_retry => {
                    tracing::warn!(%endpoint, %error, "upstream request failed");
                    return Err(error);
                }
                Err(error) => {
                    tracing::info!(%endpoint, %error, "upstream request failed; retrying")
                }
                Ok(response) if !may_retry => return Ok(response),
                Ok(response) => {
                    tracing::info!(%endpoint, status = %response.status(), "retrying on another endpoint");
                }
            }
            tried.push(endpoint);
        }
    }
}

impl Upstream {
    /// Applies the site's fault rule, if one is in force: waits out an
    /// injected delay, or fails with an injected abort.
    async fn inject_faults(&self, headers: &HeaderMap) -> Result<(), UpstreamError> {
        let faults = &self.pipeline.faults[self.site];
        if !faults.any() {
            return Ok(());
        }
        let Some(rule) = faults.current(Instant::now()) else {
            return Ok(());
        };
        let injected = RNG.with_borrow_mut(|rng| rule.decide(headers, rng));
        let site = || self.pipeline.site_names[self.site].clone();
        if let Some(delay) = injected.delay {
            metrics::counter!("edge_faults_injected_total", "site" => site(), "kind" => "delay")
                .increment(1);
            tokio::time::sleep(delay).await;
        }
        if let Some(abort) = injected.abort {
            let kind = match abort {
                Abort::Status(_) => "abort",
                Abort::Reset => "reset",
            };
            metrics::counter!("edge_faults_injected_total", "site" => site(), "kind" => kind)
                .increment(1);
            tracing::debug!(site = %site(), ?abort, "fault injected");
            return Err(UpstreamError::Injected(abort));
        }
        Ok(())
    }
}

/// Where a `hash` pool places a request: by the pool's `hash_header` when
/// the request has it, otherwise by its URL (host + path + query) with the
/// cache key's stable digest, so every worker and every restart sends one
/// object (or one user, session, ...) to the same endpoint.
fn placement_key(pool: &OriginPool, headers: &HeaderMap, path_and_query: &PathAndQuery) -> u64 {
    if let Some(value) = pool.hash_header.as_ref().and_then(|name| headers.get(name)) {
        return edge_cache::key::CacheKey::from_text(&String::from_utf8_lossy(value.as_bytes()))
            .digest64();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let url = edge_cache::key::cache_url(
        "http",
        host,
        path_and_query.as_str(),
        &edge_cache::key::KeyOptions::default(),
    );
    edge_cache::key::CacheKey::from_text(&url).digest64()
}

thread_local! {
    /// Each worker's randomness for balancer choices, seeded per thread.
    static RNG: RefCell<WyRand> = RefCell::new(WyRand::new({
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    }));
}

/// Where one hop's attempts go: a pool and this worker's client for it.
#[derive(Clone, Copy)]
struct Target<'a> {
    hop: Hop,
    pool: &'a OriginPool,
    client: &'a UpstreamClient,
}

/// Which hop a request is sent on: they judge answers differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// To the site's origin pool.
    Origin,
    /// To the site's shield tier.
    Shield,
}

/// A shield's response, as the shield hop's rules see it.
fn response_reply(response: &Response<Incoming>) -> Reply {
    let values = response.headers().get_all(PROXY_STATUS);
    Reply::Response {
        status: response.status().as_u16(),
        proxy_error: edge_shield::hop::names_an_error(values.iter().map(HeaderValue::as_bytes)),
    }
}

/// A failed exchange with the shield tier, as its rules see it.
fn error_reply(error: &UpstreamError) -> Reply {
    match error {
        UpstreamError::Timeout(_) => Reply::TimedOut,
        _ => Reply::Unreachable,
    }
}

/// `http://<endpoint><path?query>`; an authority-only target becomes `/`.
fn upstream_uri(scheme: http::uri::Scheme, endpoint: EndpointAddr, path: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority =
        Some(Authority::try_from(endpoint.to_string()).expect("a socket address is an authority"));
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).expect("scheme, authority and path are all set")
}

/// A response generated by edge itself, with a one-line text body.
pub fn local(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 429 (RFC 6585 §4) with `Retry-After` in seconds. The connection stays
/// open: the client is only asked to slow down.
fn too_many_requests(retry_after: u64) -> Response<ProxyBody> {
    let mut response = local(
        StatusCode::TOO_MANY_REQUESTS,
        "edge: too many requests; retry after the time in Retry-After\n",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// A local answer after which the HTTP/1 connection closes: the request's
/// framing cannot be trusted, so neither can anything after it.
fn refuse(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = local(status, text);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_keeps_path_and_query() {
        let endpoint: EndpointAddr = "127.0.0.1:9000".parse().unwrap();
        let pq: PathAndQuery = "/a/b?x=1&y".parse().unwrap();
        assert_eq!(
            upstream_uri(http::uri::Scheme::HTTP, endpoint, &pq).to_string(),
            "http://127.0.0.1:9000/a/b?x=1&y"
        );
        let v6: EndpointAddr = "[::1]:443".parse().unwrap();
        assert_eq!(
            upstream_uri(
                http::uri::Scheme::HTTPS,
                v6,
                &PathAndQuery::from_static("/")
            )
            .to_string(),
            "https://[::1]:443/"
        );
    }
}
