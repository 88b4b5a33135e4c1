//! The typed shape of `edge.toml`, with the documented defaults.
//!
//! Field names are public contract (DESIGN.md): extend, never rename.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's identity and process settings.
    #[serde(default)]
    pub node: Node,
    /// The admin listener (health, metrics, purge, reload).
    #[serde(default)]
    pub admin: Admin,
    /// Data-plane listeners; at least one.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Cache tiers.
    #[serde(default)]
    pub cache: Cache,
    /// Limits applied to downstream requests.
    #[serde(default)]
    pub limits: Limits,
    /// Sites, matched by the request's Host.
    #[serde(default)]
    pub sites: Vec<Site>,
    /// Upstream pools by name.
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    /// Access log and request ids.
    #[serde(default)]
    pub log: Log,
    /// How endpoint names are resolved and re-resolved.
    #[serde(default)]
    pub dns: Dns,
}

/// `[dns]`: how pool endpoints given as `name:port` are resolved. Names are
/// looked up at start (a name that does not resolve fails start-up) and
/// again when their records' TTL runs out, clamped to `min_ttl..=max_ttl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Name servers as `ip` or `ip:port`; empty uses `/etc/resolv.conf`.
    pub servers: Vec<String>,
    /// Shortest time between two lookups of a name (floor on the TTL).
    #[serde(with = "duration")]
    pub min_ttl: Duration,
    /// Longest time an answer is trusted before asking again (ceiling on the TTL).
    #[serde(with = "duration")]
    pub max_ttl: Duration,
    /// One lookup attempt's timeout.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Look names up in `/etc/hosts` before asking DNS.
    pub hosts_file: bool,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            servers: Vec::new(),
            // 5 s floor: Envoy's default dns_refresh_rate; a TTL of 0 must
            // not turn into a lookup per request.
            min_ttl: Duration::from_secs(5),
            // 5 min ceiling: a long TTL still gets re-checked, so a moved
            // origin is followed within minutes even if its zone says a day.
            max_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(2),
            hosts_file: true,
        }
    }
}

impl Dns {
    /// The configured name servers as socket addresses (port 53 when absent).
    /// Validation has already checked each entry parses.
    pub fn server_addrs(&self) -> Vec<SocketAddr> {
        self.servers
            .iter()
            .filter_map(|s| parse_dns_server(s))
            .collect()
    }
}

/// `ip`, `ip:port` or `[v6]:port`; port 53 when absent.
pub(crate) fn parse_dns_server(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// `[node]`: identity and process settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Node {
    /// Appears in `Via`, `Cache-Status` and `CDN-Loop`.
    pub id: String,
    /// Whether this node is an edge or a shield.
    pub role: Role,
    /// Worker threads, each with its own runtime and listener sockets; default one per core.
    pub workers: Option<usize>,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            id: "edge".to_owned(),
            role: Role::Edge,
            workers: None,
            // 30 s: long enough for typical object downloads to finish, short
            // enough for an orchestrator's stop timeout (systemd's default is 90 s).
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A node's place in the hop chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Serves clients.
    Edge,
    /// Serves other edge nodes, in front of the origin.
    Shield,
}

/// `[admin]`: the admin API listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Loopback by default: the admin API is not for the public.
    #[serde(with = "socket_addr")]
    pub listen: SocketAddr,
    /// Bearer token required by mutating endpoints, when set.
    pub token: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token: None,
        }
    }
}

/// `[[listeners]]`: one data-plane address.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Address to bind; port 0 picks a free port (printed at start).
    #[serde(with = "socket_addr")]
    pub addr: SocketAddr,
    /// TLS termination on this listener.
    pub tls: Option<ListenerTls>,
}

/// `tls = { certs = [...], ... }` on a listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates, chosen by SNI against the names in each certificate.
    pub certs: Vec<CertPair>,
    /// Secret from which session-ticket keys are derived, shared by every
    /// node that should resume the others' sessions; without it each
    /// process makes its own random, rotating keys.
    pub ticket_key_file: Option<PathBuf>,
    /// Server-side TLS session cache, in entries (0 disables it).
    #[serde(default = "defaults::session_cache")]
    pub session_cache: usize,
    /// Longest time from accept to a finished TLS handshake.
    #[serde(default = "defaults::handshake_timeout", with = "duration")]
    pub handshake_timeout: Duration,
}

/// One certificate chain and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Served when no SNI name matches.
    #[serde(default)]
    pub default: bool,
}

/// `[cache]`: cache tiers and node-wide cache policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Memory tier capacity in bytes.
    #[serde(with = "size")]
    pub memory: u64,
    /// Largest object kept in memory; default memory/8, at most 64 MiB.
    #[serde(default, with = "opt_size")]
    pub max_object_size: Option<u64>,
    /// How long a request waits for another request's fetch of the same
    /// object before fetching on its own.
    #[serde(with = "duration")]
    pub lock_timeout: Duration,
    /// Cap on heuristic freshness (10% of the time since Last-Modified).
    #[serde(with = "duration")]
    pub heuristic_max: Duration,
    /// An extra targeted cache-control field (RFC 9213) honoured before
    /// `CDN-Cache-Control`, like `"Edge-Cache-Control"`.
    pub targeted_field: Option<String>,
    /// Optional disk tier below memory.
    pub disk: Option<DiskCache>,
    /// Client networks allowed to send `PURGE` on data listeners; empty
    /// (the default) leaves the method off.
    #[serde(deserialize_with = "cidr::deserialize_list")]
    pub purge_from: Vec<ipnet::IpNet>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            memory: 256 * 1024 * 1024,
            max_object_size: None,
            // 5 s: long enough to cover a typical origin's time to first
            // byte, short enough that a wedged fetch does not hold a queue.
            lock_timeout: Duration::from_secs(5),
            // 1 day, as Traffic Server: a guess should not outlive a day.
            heuristic_max: Duration::from_secs(86_400),
            targeted_field: None,
            disk: None,
            purge_from: Vec::new(),
        }
    }
}

/// `[cache] disk = { path, size }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskCache {
    /// Directory holding the store.
    pub path: PathBuf,
    /// Capacity in bytes.
    #[serde(with = "size")]
    pub size: u64,
    /// File I/O backend: io_uring when the kernel allows it, or the blocking pool.
    #[serde(default)]
    pub backend: DiskBackend,
}

/// `[cache] disk.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBackend {
    /// io_uring if available (logged), else the blocking pool.
    #[default]
    Auto,
    /// io_uring, or a start-up error.
    #[serde(rename = "io_uring")]
    IoUring,
    /// `pread`/`pwrite` on tokio's blocking pool.
    Blocking,
}

/// `[limits]`: bounds on what a downstream client may send, how slowly it
/// may send it, and how many connections it may hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request header section (request line + headers); larger gets 431.
    #[serde(with = "size")]
    pub max_header_size: u64,
    /// Clients tracked at once by the rate-limit table that every site's
    /// `rate_limit` shares; its memory is fixed at start.
    pub rate_limit_clients: usize,
    /// Peers (CIDR ranges, or single addresses) whose `X-Forwarded-For`
    /// names the client, for rate limiting and the access log.
    #[serde(deserialize_with = "cidr::deserialize_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Longest time for a whole HTTP/1 request head to arrive, from the
    /// connection's start (first request) or the request's first byte
    /// (later ones); a connection that overruns it is closed.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// How long a connection may sit with no request in flight (HTTP/1.1
    /// keep-alive between requests, HTTP/2 with no open stream) before it
    /// is closed.
    #[serde(with = "duration")]
    pub keepalive_timeout: Duration,
    /// Slowest request body accepted, in bytes per second; 0 turns the
    /// check off.
    #[serde(with = "size")]
    pub body_min_rate: u64,
    /// Time spent waiting on the client over which `body_min_rate` is
    /// judged; also the grace before the first judgement.
    #[serde(with = "duration")]
    pub body_rate_window: Duration,
    /// Longest a write to a client may wait because the client is not
    /// reading (its receive window is full); the connection is closed then.
    #[serde(with = "duration")]
    pub send_timeout: Duration,
    /// HTTP/2 streams a client may have open at once on one connection
    /// (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of each stream (SETTINGS_INITIAL_WINDOW_SIZE).
    #[serde(with = "size")]
    pub h2_stream_window: u64,
    /// HTTP/2 flow-control window of a whole connection.
    #[serde(with = "size")]
    pub h2_connection_window: u64,
    /// Largest HTTP/2 frame payload edge accepts (SETTINGS_MAX_FRAME_SIZE).
    #[serde(with = "size")]
    pub h2_max_frame_size: u64,
    /// Connections open at once on each listener; beyond it new ones are
    /// closed at once. Lowered at start to what the open-file limit allows.
    pub max_connections: u64,
    /// Connections open at once from one client address (an IPv6 client's
    /// /64), over all listeners; 0 turns the cap off.
    pub max_connections_per_ip: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 32 KiB: above nginx's default large_client_header_buffers (4 × 8 KiB)
            // so real browsers with big cookies pass, small enough to bound memory.
            max_header_size: 32 * 1024,
            // 65,536 clients: ~1.1 MiB, allocated once; enough to hold every
            // client active within a burst window on a busy node, and a flood
            // of distinct addresses cannot grow it.
            // 10 s: a head is one or two packets, so even a lossy mobile link
            // (retransmits after 1 s, 2 s, 4 s) delivers it well within; the
            // value HAProxy's docs use for `timeout http-request`. nginx's
            // client_header_timeout (60 s) lets a slowloris hold a socket 6×
            // longer.
            header_timeout: Duration::from_secs(10),
            // 60 s: a visitor's next page view within a minute reuses its
            // connection (no new TCP and TLS handshake); below nginx's 75 s
            // keepalive_timeout, and an idle connection costs memory and a
            // file descriptor for as long as it is kept.
            keepalive_timeout: Duration::from_secs(60),
            // 1 KiB/s: twice Apache mod_reqtimeout's default MinRate (500 B/s)
            // and far below any real uplink (2G EDGE uploads ~10 KiB/s), so
            // only a client that is stalling on purpose, or is dead, trips it.
            body_min_rate: 1024,
            // 10 s of waiting: tolerates a pause of several seconds mid-upload
            // (a phone switching cells) before the rate is judged.
            body_rate_window: Duration::from_secs(10),
            // 60 s: nginx's send_timeout; a client whose window stays shut
            // that long is gone or stalling on purpose, and each one holds
            // a connection, its buffers and often an upstream fetch.
            send_timeout: Duration::from_secs(60),
            // 100 streams, 64 KiB stream window, 1 MiB connection window:
            // Envoy's "configuring Envoy as an edge proxy" recommendations;
            // RFC 9113 §6.5.2 recommends at least 100 streams. The connection
            // window bounds what one client can make us buffer.
            h2_max_concurrent_streams: 100,
            h2_stream_window: 64 * 1024,
            h2_connection_window: 1024 * 1024,
            // 16 KiB: the protocol's initial value (RFC 9113 §6.5.2); larger
            // frames save little and make a peer buffer more per frame.
            h2_max_frame_size: 16 * 1024,
            // 100,000 per listener: at roughly 10–40 KiB per connection
            // (buffers, TLS state) that is 1–4 GiB, the most a typical edge
            // host should commit to open sockets; the open-file limit may
            // lower it at start.
            max_connections: 100_000,
            // 1,000 per address: a browser opens at most 6 HTTP/1.1
            // connections per host (one for h2), so ~160 busy browsers
            // behind one NAT still fit, while one host cannot take more than
            // 1% of a listener's connections.
            max_connections_per_ip: 1_000,
            rate_limit_clients: 65_536,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `rate_limit = { rate, burst, key }` on a site: GCRA per client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per unit of time, like `"100/s"` or `"6000/m"`.
    pub rate: Rate,
    /// Requests a client that has been idle may send at once.
    pub burst: u32,
    /// What identifies a client: `"ip"` (default) or `"header:NAME"`.
    #[serde(default)]
    pub key: RateKey,
}

/// A request rate: `count` requests per `per`, written `"100/s"`,
/// `"6000/m"` or `"1000/h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per `per`; at least 1.
    pub count: u32,
    /// The unit of time: one second, minute or hour.
    pub per: Duration,
}

impl Rate {
    /// Time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(RateVisitor)
    }
}

struct RateVisitor;

impl serde::de::Visitor<'_> for RateVisitor {
    type Value = Rate;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#"a rate like "100/s", "6000/m" or "1000/h""#)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Rate, E> {
        parse_rate(text).map_err(|why| {
            E::custom(format!(
                "invalid rate {text:?} ({why}); expected requests per unit, like \"100/s\", \"6000/m\" or \"1000/h\""
            ))
        })
    }
}

/// `N/s`, `N/m` or `N/h` with `N` at least 1.
fn parse_rate(text: &str) -> Result<Rate, &'static str> {
    let (count, unit) = text.split_once('/').ok_or("missing \"/unit\"")?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| "the count is not a whole number")?;
    if count == 0 {
        return Err("a rate of 0 refuses every request");
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err("the unit must be s, m or h"),
    };
    Ok(Rate { count, per })
}

/// `key` of a site's `rate_limit`: what one client is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RateKey {
    /// The client's IP address (IPv6 by its /64), `"ip"`.
    #[default]
    Ip,
    /// The value of this request header, `"header:X-Api-Key"`; requests
    /// without it are keyed by IP.
    Header(String),
}

impl<'de> Deserialize<'de> for RateKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(RateKeyVisitor)
    }
}

struct RateKeyVisitor;

impl serde::de::Visitor<'_> for RateKeyVisitor {
    type Value = RateKey;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#""ip" or "header:NAME", like "header:X-Api-Key""#)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RateKey, E> {
        match text.split_once(':') {
            None if text == "ip" => Ok(RateKey::Ip),
            Some(("header", name)) => Ok(RateKey::Header(name.to_owned())),
            _ => Err(E::custom(format!(
                "invalid rate-limit key {text:?}; expected \"ip\" or \"header:NAME\", like \"header:X-Api-Key\""
            ))),
        }
    }
}

/// `[log]`: the access log and request ids.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Where the JSON access log goes: `"off"`, `"stdout"` or a file path.
    pub access: AccessLogTarget,
    /// Log lines queued for the writer thread; beyond it lines are dropped and counted.
    pub access_buffer: usize,
    /// Accept a client's `X-Request-Id` (or generate one), send it upstream and echo it.
    pub request_id: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            access: AccessLogTarget::Off,
            // 8192 queued lines (about 250 bytes each, ~2 MiB allocated up
            // front) absorb a one-second stall of the disk at 8000
            // requests/s before anything is dropped.
            access_buffer: 8192,
            request_id: true,
        }
    }
}

/// `[log] access`: the access log's destination.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogTarget {
    /// No access log (`"off"`).
    #[default]
    Off,
    /// One line per request on standard output (`"stdout"`).
    Stdout,
    /// Appended to this file, reopened on SIGUSR1; any other string.
    File(PathBuf),
}

impl<'de> Deserialize<'de> for AccessLogTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(AccessLogVisitor)
    }
}

struct AccessLogVisitor;

impl serde::de::Visitor<'_> for AccessLogVisitor {
    type Value = AccessLogTarget;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#""off", "stdout" or a file path, like "/var/log/edge/access.log""#)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<AccessLogTarget, E> {
        Ok(match text {
            "off" => AccessLogTarget::Off,
            "stdout" => AccessLogTarget::Stdout,
            path => AccessLogTarget::File(PathBuf::from(path)),
        })
    }
}

/// `[[sites]]`: requests for these hosts go to this pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Exact names, `*.suffix` wildcards, or `*` for the default site.
    pub hosts: Vec<String>,
    /// Name of the origin pool.
    pub pool: String,
    /// Name of a pool of shield nodes to fetch through.
    pub shield: Option<String>,
    /// How this site uses the cache.
    #[serde(default)]
    pub cache: SiteCache,
    /// Answer plain-HTTP requests with this redirect (301 or 308) to https.
    pub redirect_https: Option<u16>,
    /// `Strict-Transport-Security` value added to HTTPS responses.
    pub hsts: Option<String>,
    /// Fault injection on this site's upstream requests (off when absent).
    pub faults: Option<Faults>,
    /// Per-client request rate limit; none by default.
    pub rate_limit: Option<RateLimit>,
}

/// `faults = { ... }` on a site: delay or abort a share of upstream requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Delay added before sending.
    #[serde(with = "opt_duration")]
    pub delay: Option<Duration>,
    /// Share of requests delayed, 0..=100.
    pub delay_percent: f64,
    /// Share of requests aborted, 0..=100.
    pub abort_percent: f64,
    /// Status of an aborted request (with `abort = "status"`).
    pub abort_status: u16,
    /// `"status"` (default) or `"reset"` (close the client connection).
    pub abort: Option<String>,
    /// Only requests carrying this header, `"name: value"`.
    pub header: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            delay: None,
            delay_percent: 0.0,
            abort_percent: 0.0,
            abort_status: 503,
            abort: None,
            header: None,
        }
    }
}

/// `cache = { ... }` on a site.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteCache {
    /// Whether responses of this site are cached at all.
    pub enabled: bool,
    /// Leave the query string out of the cache key.
    pub ignore_query: bool,
    /// Keep only these query parameters in the cache key.
    pub keep_params: Option<Vec<String>>,
    /// Sort query parameters in the cache key.
    pub sort_params: bool,
    /// Request headers whose values join the cache key.
    pub key_headers: Vec<String>,
    /// Freshness for cacheable responses that carry none.
    #[serde(default, with = "opt_duration")]
    pub default_ttl: Option<Duration>,
    /// Upper bound on any freshness lifetime.
    #[serde(default, with = "opt_duration")]
    pub max_ttl: Option<Duration>,
    /// Requests whose path starts with one of these skip the cache.
    pub bypass_paths: Vec<String>,
    /// Requests with these methods skip the cache.
    pub bypass_methods: Vec<String>,
    /// Ignore a client's `no-cache` and `max-age=0`, as CDNs commonly do.
    pub ignore_client_no_cache: bool,
}

impl Default for SiteCache {
    fn default() -> Self {
        SiteCache {
            enabled: true,
            ignore_query: false,
            keep_params: None,
            sort_params: false,
            key_headers: Vec::new(),
            default_ttl: None,
            max_ttl: None,
            bypass_paths: Vec::new(),
            bypass_methods: Vec::new(),
            ignore_client_no_cache: false,
        }
    }
}

/// `[pools.NAME]`: a set of upstream endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// `host:port`; names resolve via DNS.
    pub endpoints: Vec<Endpoint>,
    /// Endpoint selection.
    #[serde(default)]
    pub balance: Balance,
    /// Active health check.
    pub health: Option<HealthCheck>,
    /// TCP connect timeout; a failure answers 502.
    #[serde(default = "defaults::connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Time from sending the request to the response head; exceeded answers 504.
    #[serde(default = "defaults::response_timeout", with = "duration")]
    pub response_timeout: Duration,
    /// Longest pause between two chunks of a body, either direction.
    #[serde(default = "defaults::body_timeout", with = "duration")]
    pub body_timeout: Duration,
    /// Idle keepalive connections kept per endpoint, per worker.
    #[serde(default = "defaults::max_idle_per_endpoint")]
    pub max_idle_per_endpoint: usize,
    /// How long an idle keepalive connection is kept.
    #[serde(default = "defaults::idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Connect to the endpoints with TLS.
    #[serde(default)]
    pub tls: bool,
    /// Name sent as SNI and verified in the origin's certificate; default:
    /// the endpoint's host name.
    pub sni: Option<String>,
    /// PEM bundle of the CAs that sign the origins' certificates; default:
    /// the system roots.
    pub ca: Option<PathBuf>,
    /// Accept any origin certificate. Only for tests; logged loudly.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Client certificate presented to the origin (mTLS).
    pub client_cert: Option<ClientCert>,
    /// Offer HTTP/2 to TLS origins via ALPN.
    #[serde(default)]
    pub h2: bool,
    /// Extra attempts on another endpoint for idempotent requests without a
    /// body, after a connect failure, a reset or a 502/503/504.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Requests in flight to the pool at once; beyond it, 503 at once.
    pub max_requests: Option<usize>,
    /// Below this percentage of available endpoints, spread over all.
    #[serde(default = "defaults::panic_threshold")]
    pub panic_threshold: u8,
    /// Passive outlier detection; defaults follow Envoy's.
    pub outlier: Option<Outlier>,
    /// Per-endpoint circuit breaker; defaults follow linkerd2's.
    pub breaker: Option<Breaker>,
    /// Bound on retries as a share of recent requests; defaults follow tower's.
    pub retry_budget: Option<RetryBudget>,
    /// Also retry PUT and DELETE (idempotent but not safe, RFC 9110 §9.2.2)
    /// when they carry no body.
    #[serde(default)]
    pub retry_unsafe_idempotent: bool,
    /// `hash` pools: place requests by this request header's value instead
    /// of the URL; requests without it fall back to the URL.
    pub hash_header: Option<String>,
    /// Load shedding: an adaptive limit on requests waiting on the origin.
    pub adaptive_concurrency: Option<AdaptiveConcurrency>,
}

/// `adaptive_concurrency = { initial, min, max, tolerance, window }` on a pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConcurrency {
    /// Starting limit.
    pub initial: u32,
    /// Never below this.
    pub min: u32,
    /// Never above this.
    pub max: u32,
    /// A response slower than this multiple of the baseline counts as queueing.
    pub tolerance: f64,
    /// How long one baseline (minimum latency) window lasts.
    #[serde(with = "duration")]
    pub window: Duration,
}

impl Default for AdaptiveConcurrency {
    fn default() -> Self {
        // Netflix concurrency-limits' defaults (initial 20), a 2x latency
        // tolerance and a 10 s baseline window.
        AdaptiveConcurrency {
            initial: 20,
            min: 1,
            max: 1000,
            tolerance: 2.0,
            window: Duration::from_secs(10),
        }
    }
}

/// `breaker = { failures, open, max_open, probes }` on a pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Consecutive failures that open an endpoint's breaker; 0 turns it off.
    pub failures: Option<u32>,
    /// How long a first opening lasts before half-open probes.
    #[serde(default, with = "opt_duration")]
    pub open: Option<Duration>,
    /// Ceiling of the open time, which doubles on each failed probe.
    #[serde(default, with = "opt_duration")]
    pub max_open: Option<Duration>,
    /// Requests let through at once while half-open.
    pub probes: Option<u32>,
}

/// `retry_budget = { ratio, min_per_sec }` on a pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries allowed per original request over the last 10 s (0.2 = 20%).
    pub ratio: Option<f64>,
    /// Retries allowed per second regardless of traffic.
    pub min_per_sec: Option<u32>,
}

/// `outlier = { failures, base_ejection, max_ejection_percent }` on a pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// Consecutive failures (5xx, connect failures, timeouts) that eject an
    /// endpoint; 0 turns detection off.
    pub failures: Option<u32>,
    /// Length of a first ejection; the n-th recent one lasts n times this.
    #[serde(default, with = "opt_duration")]
    pub base_ejection: Option<Duration>,
    /// Most endpoints of the pool ejected at once, in percent.
    pub max_ejection_percent: Option<u8>,
}

/// One entry of a pool's `endpoints`: `"host:port"` (weight 1) or
/// `{ addr = "host:port", weight = 3 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`; a name resolves via DNS.
    pub addr: String,
    /// Relative share of traffic, 1..=256.
    pub weight: u32,
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EndpointVisitor)
    }
}

struct EndpointVisitor;

impl<'de> serde::de::Visitor<'de> for EndpointVisitor {
    type Value = Endpoint;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#""host:port" or { addr = "host:port", weight = 3 }"#)
    }

    fn visit_str<E: serde::de::Error>(self, addr: &str) -> Result<Endpoint, E> {
        Ok(Endpoint {
            addr: addr.to_owned(),
            weight: 1,
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Endpoint, A::Error> {
        use serde::de::Error;
        let (mut addr, mut weight) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "addr" => addr = Some(map.next_value::<String>()?),
                "weight" => weight = Some(map.next_value::<u32>()?),
                other => return Err(A::Error::unknown_field(other, &["addr", "weight"])),
            }
        }
        Ok(Endpoint {
            addr: addr.ok_or_else(|| A::Error::missing_field("addr"))?,
            weight: weight.unwrap_or(1),
        })
    }
}

/// `client_cert = { cert, key }` on a pool: PEM chain and private key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCert {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Endpoint selection strategy of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Power of two choices on least in-flight requests.
    #[default]
    P2c,
    /// Power of two choices on peak-EWMA latency.
    Ewma,
    /// Smooth weighted round-robin.
    RoundRobin,
    /// Consistent hashing on the cache key.
    Hash,
}

/// `health = { path, interval }` on a pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path requested with GET.
    pub path: String,
    /// Time between checks.
    #[serde(default = "defaults::health_interval", with = "duration")]
    pub interval: Duration,
    /// A check without a complete answer by then fails.
    #[serde(default = "defaults::health_timeout", with = "duration")]
    pub timeout: Duration,
    /// Consecutive passes that bring an unhealthy endpoint back.
    #[serde(default = "defaults::health_rise")]
    pub rise: u32,
    /// Consecutive failures that take a healthy endpoint out.
    #[serde(default = "defaults::health_fall")]
    pub fall: u32,
    /// Lowest and highest status that pass, inclusive.
    #[serde(default = "defaults::health_status")]
    pub status: [u16; 2],
}

mod defaults {
    use std::time::Duration;

    // 3 s: a connect on a healthy network takes well under one RTT-bound
    // second; a SYN retransmit (1 s, then 3 s on Linux) means trouble.
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(3)
    }
    // 30 s to the first response byte, as nginx's proxy_read_timeout (60 s)
    // halved: an origin that slow is better reported than waited on.
    pub fn response_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn body_timeout() -> Duration {
        Duration::from_secs(30)
    }
    // 64 idle connections per endpoint per worker keeps reuse high under
    // bursts without holding thousands of sockets on the origin.
    pub fn max_idle_per_endpoint() -> usize {
        64
    }
    // 60 s, below the common 75 s+ keepalive of origin servers so we close
    // first and never send on a connection the origin is closing.
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(2)
    }
    // 1 s: a health endpoint that needs longer is itself a warning sign.
    pub fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }
    // HAProxy's defaults: rise 2, fall 3.
    pub fn health_rise() -> u32 {
        2
    }
    pub fn health_fall() -> u32 {
        3
    }
    // 2xx and 3xx pass, as HAProxy's http-check.
    pub fn health_status() -> [u16; 2] {
        [200, 399]
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn panic_threshold() -> u8 {
        50
    }
    // 1024 sessions of roughly 1 KiB each (chain-free TLS 1.2 state plus
    // bookkeeping): resumption for clients without ticket support, bounded
    // memory. Most clients use tickets and never touch it.
    pub fn session_cache() -> usize {
        1024
    }
    // 10 s: a TLS 1.3 handshake is one round trip plus key exchange, so a
    // client still unfinished after 10 s on any real network is stuck or
    // hostile; nginx's ssl_handshake_timeout is 60 s, HAProxy's
    // `timeout client` typically 30 s, both generous for slowloris.
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

/// Durations written as `500ms`, `2s`, `1m` (humantime syntax).
///
/// A visitor rather than `String::deserialize` so a wrong type reads
/// "invalid type: integer `2`, expected a duration like ..." instead of
/// "expected a string".
mod duration {
    use serde::Deserializer;
    use serde::de::{Error, Visitor};
    use std::fmt;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(r#"a duration with a unit, like "500ms", "2s" or "1m""#)
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text).map_err(|e| {
                E::custom(format!(
                    "invalid duration {text:?} ({e}); expected a number with a unit, like \"500ms\", \"2s\" or \"1m\""
                ))
            })
        }
    }
}

/// Sizes written as `32KiB`, `512MiB`, `20GiB` (or a plain number of bytes).
///
/// A visitor rather than an untagged enum: untagged enums buffer the value
/// and report "did not match any variant", which tells the user nothing.
mod size {
    use serde::Deserializer;
    use serde::de::{Error, Unexpected, Visitor};
    use std::fmt;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(r#"a size like "32KiB", "512MiB" or "20GiB", or a number of bytes"#)
        }

        fn visit_u64<E: Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }

        fn visit_i64<E: Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<u64, E> {
            text.parse::<bytesize::ByteSize>()
                .map(|s| s.as_u64())
                .map_err(|e| {
                    E::custom(format!(
                        "invalid size {text:?} ({e}); expected a number with a unit, like \"32KiB\", \"512MiB\" or \"20GiB\""
                    ))
                })
        }
    }
}

/// Socket addresses written as `IP:port`; names are not allowed here because
/// a listener binds before any resolver runs.
mod socket_addr {
    use serde::Deserializer;
    use serde::de::{Error, Visitor};
    use std::fmt;
    use std::net::SocketAddr;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        d.deserialize_str(SocketAddrVisitor)
    }

    struct SocketAddrVisitor;

    impl Visitor<'_> for SocketAddrVisitor {
        type Value = SocketAddr;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(r#"an IP address and port, like "0.0.0.0:8080" or "[::]:8443""#)
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<SocketAddr, E> {
            text.parse().map_err(|_| {
                E::custom(format!(
                    "invalid socket address {text:?}; expected an IP address and port, like \"0.0.0.0:8080\" or \"[::]:8443\" (host names are not allowed)"
                ))
            })
        }
    }
}

/// CIDR ranges written `"10.0.0.0/8"` or `"2001:db8::/32"`; a bare address
/// is a range of one. Host bits must be zero: `"10.0.0.1/8"` is more
/// likely a typo than a wish to trust all of 10/8, and a trust list is
/// the wrong place to guess.
mod cidr {
    use serde::Deserializer;
    use serde::de::{Error, SeqAccess, Visitor};
    use std::fmt;

    pub fn deserialize_list<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<ipnet::IpNet>, D::Error> {
        d.deserialize_seq(ListVisitor)
    }

    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<ipnet::IpNet>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(r#"a list of CIDR ranges, like ["127.0.0.1/32", "10.0.0.0/8"]"#)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut nets = Vec::new();
            while let Some(net) = seq.next_element::<Cidr>()? {
                nets.push(net.0);
            }
            Ok(nets)
        }
    }

    /// One range; its own type so an error points at the element.
    struct Cidr(ipnet::IpNet);

    impl<'de> serde::Deserialize<'de> for Cidr {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(CidrVisitor)
        }
    }

    struct CidrVisitor;

    impl Visitor<'_> for CidrVisitor {
        type Value = Cidr;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(r#"a CIDR range like "10.0.0.0/8" or "2001:db8::/32""#)
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Cidr, E> {
            super::parse_cidr(text).map(Cidr).map_err(E::custom)
        }
    }
}

/// `a.b.c.d/len`, `v6/len`, or a bare address (a range of one).
pub(crate) fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let net = match text.parse::<ipnet::IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(ip) => ipnet::IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "invalid CIDR range {text:?}; expected an address and prefix length, like \"10.0.0.0/8\" or \"2001:db8::/32\""
                ));
            }
        },
    };
    if net.addr() != net.network() {
        return Err(format!(
            "{text:?} has host bits set; write the network, like \"{}\"",
            net.trunc()
        ));
    }
    Ok(net)
}

/// An optional duration: absent keys take the field's default (`None`).
mod opt_duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// An optional size: absent keys take the field's default (`None`).
mod opt_size {
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::size::deserialize(d).map(Some)
    }
}
