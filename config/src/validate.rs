//! Rules a config must follow beyond its types: cross-references between
//! sections, host and endpoint syntax, and sane bounds.
//!
//! Pure: works on the typed [`Config`] and returns the key path at fault;
//! [`ConfigError::invalid`](crate::ConfigError) turns that path into a
//! line and column. The first broken rule wins, checked section by section.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::Duration;

use crate::locate::KeyPath;
use crate::{AccessLogTarget, Balance, Config, ListenerTls, Pool, RateKey, RateLimit, Site};

/// A broken rule: where, and what to do about it.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) path: KeyPath,
    pub(crate) message: String,
}

type Checked = Result<(), Invalid>;

fn invalid(path: KeyPath, message: impl Into<String>) -> Checked {
    Err(Invalid {
        path,
        message: message.into(),
    })
}

/// Smallest accepted `cache.disk.size`: below one object block table and
/// a few objects the tier only churns.
const MIN_DISK_SIZE: u64 = 1024 * 1024;

/// Smallest accepted `limits.max_header_size`: 8 KiB, because hyper bounds
/// a request head by its read buffer and refuses buffers under 8 KiB; it is
/// also nginx's default per-line limit, so real browsers fit.
const MIN_HEADER_SIZE: u64 = 8 * 1024;
/// Largest accepted `limits.max_header_size`: 1 MiB per connection is
/// already 1 GiB for 1000 slow clients; headers beyond it are an attack.
const MAX_HEADER_SIZE: u64 = 1024 * 1024;

/// Checks every rule; the first broken one is returned.
pub(crate) fn validate(config: &Config) -> Checked {
    let root = KeyPath::root();
    node(config, &root.key("node"))?;
    limits(config, &root.key("limits"))?;
    cache(config, &root.key("cache"))?;
    listeners(config, &root.key("listeners"))?;
    for (name, pool) in &config.pools {
        self::pool(pool, &root.key("pools").key(name))?;
    }
    dns(config, &root.key("dns"))?;
    faults(config)?;
    sites(config, &root.key("sites"))?;
    log(config, &root.key("log"))
}

fn node(config: &Config, path: &KeyPath) -> Checked {
    let node = &config.node;
    if node.id.is_empty() {
        return invalid(
            path.key("id"),
            "must not be empty; it names this node in Via, Cache-Status and CDN-Loop, like \"edge-1\"",
        );
    }
    if let Some(bad) = node.id.chars().find(|&c| !is_tchar(c)) {
        return invalid(
            path.key("id"),
            format!(
                "{:?} contains {bad:?}; a node id goes into Via and CDN-Loop headers and must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~), like \"edge-1\"",
                node.id
            ),
        );
    }
    if node.workers == Some(0) {
        return invalid(
            path.key("workers"),
            "must be at least 1; leave it out to run one worker per CPU core",
        );
    }
    nonzero(node.drain_timeout, path.key("drain_timeout"))
}

/// `tchar` of RFC 9110 §5.6.2: what a `token` (Via's pseudonym, RFC 9110
/// §7.6.3; CDN-Loop's cdn-id, RFC 8586 §2) may contain.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn nonzero(duration: Duration, path: KeyPath) -> Checked {
    if duration.is_zero() {
        return invalid(
            path,
            "must be greater than zero; write a duration like \"500ms\", \"2s\" or \"1m\"",
        );
    }
    Ok(())
}

/// Largest accepted `limits.rate_limit_clients`: 16 Mi clients is ~288 MiB
/// of table allocated at start, more than any node has concurrent clients.
const MAX_RATE_LIMIT_CLIENTS: usize = 1 << 24;

/// Largest accepted `burst`: a million requests at once is no limit at all,
/// and it keeps burst × interval (at most an hour) within the limiter's
/// 64-bit nanosecond clock.
const MAX_BURST: u32 = 1_000_000;

/// Shortest accepted interval between requests (the fastest rate is
/// 1,000,000/s): below a microsecond the limiter would be measuring its
/// own clock reads, not clients.
const MIN_RATE_INTERVAL: Duration = Duration::from_micros(1);
/// HTTP/2 flow-control windows: at least the protocol's initial 65,535
/// bytes (as Envoy requires), at most 2^31-1 (RFC 9113 §6.9.1).
const H2_WINDOW: std::ops::RangeInclusive<u64> = 65_535..=(1 << 31) - 1;
/// SETTINGS_MAX_FRAME_SIZE bounds (RFC 9113 §6.5.2).
const H2_FRAME: std::ops::RangeInclusive<u64> = (1 << 14)..=(1 << 24) - 1;
/// Most HTTP/2 streams per connection: far beyond any browser's needs,
/// and within what edge's per-connection clock counts exactly.
const MAX_H2_STREAMS: u32 = 1_000_000;
/// Highest accepted `limits.body_min_rate`: a floor above 1 GiB/s would
/// refuse every real upload.
const MAX_BODY_MIN_RATE: u64 = 1 << 30;

fn limits(config: &Config, path: &KeyPath) -> Checked {
    let limits = &config.limits;
    let size = limits.max_header_size;
    if !(MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&size) {
        return invalid(
            path.key("max_header_size"),
            format!("{size} bytes is out of range; expected between 8KiB and 1MiB, like \"32KiB\""),
        );
    }
    nonzero(limits.header_timeout, path.key("header_timeout"))?;
    nonzero(limits.keepalive_timeout, path.key("keepalive_timeout"))?;
    nonzero(limits.send_timeout, path.key("send_timeout"))?;
    nonzero(limits.body_rate_window, path.key("body_rate_window"))?;
    if limits.body_min_rate > MAX_BODY_MIN_RATE {
        return invalid(
            path.key("body_min_rate"),
            format!(
                "{} bytes per second is out of range; expected at most 1GiB, like \"1KiB\" (0 turns the check off)",
                limits.body_min_rate
            ),
        );
    }
    if limits.h2_max_concurrent_streams == 0 {
        return invalid(
            path.key("h2_max_concurrent_streams"),
            "must be at least 1; 0 would refuse every HTTP/2 request (100 is a common choice)",
        );
    }
    if limits.h2_max_concurrent_streams > MAX_H2_STREAMS {
        return invalid(
            path.key("h2_max_concurrent_streams"),
            format!(
                "{} is out of range; expected at most 1000000 (100 is a common choice)",
                limits.h2_max_concurrent_streams
            ),
        );
    }
    for (key, window) in [
        ("h2_stream_window", limits.h2_stream_window),
        ("h2_connection_window", limits.h2_connection_window),
    ] {
        if !H2_WINDOW.contains(&window) {
            return invalid(
                path.key(key),
                format!(
                    "{window} bytes is out of range; expected 65535 to 2147483647 bytes, like \"64KiB\" or \"1MiB\""
                ),
            );
        }
    }
    if !H2_FRAME.contains(&limits.h2_max_frame_size) {
        return invalid(
            path.key("h2_max_frame_size"),
            format!(
                "{} bytes is out of range; expected 16KiB to 16777215 bytes (RFC 9113 §6.5.2), like \"16KiB\"",
                limits.h2_max_frame_size
            ),
        );
    }
    if limits.max_connections == 0 {
        return invalid(
            path.key("max_connections"),
            "must be at least 1; 0 would refuse every connection",
        );
    }
    let clients = config.limits.rate_limit_clients;
    if !(1..=MAX_RATE_LIMIT_CLIENTS).contains(&clients) {
        return invalid(
            path.key("rate_limit_clients"),
            format!(
                "{clients} is out of range; expected 1 to {MAX_RATE_LIMIT_CLIENTS} clients, like 65536"
            ),
        );
    }
    Ok(())
}

fn rate_limit(limit: &RateLimit, path: &KeyPath) -> Checked {
    if limit.rate.interval() < MIN_RATE_INTERVAL {
        return invalid(
            path.key("rate"),
            format!(
                "{} requests per {:?} is too fast to limit; the highest rate is \"1000000/s\"",
                limit.rate.count, limit.rate.per
            ),
        );
    }
    if !(1..=MAX_BURST).contains(&limit.burst) {
        return invalid(
            path.key("burst"),
            format!(
                "{} is out of range; expected 1 to {MAX_BURST} requests (1 allows no burst at all)",
                limit.burst
            ),
        );
    }
    if let RateKey::Header(name) = &limit.key
        && (name.is_empty() || !name.chars().all(is_tchar))
    {
        return invalid(
            path.key("key"),
            format!("{name:?} is not a header field name; write the key like \"header:X-Api-Key\""),
        );
    }
    Ok(())
}

fn faults(config: &Config) -> Checked {
    for (i, site) in config.sites.iter().enumerate() {
        let Some(faults) = &site.faults else { continue };
        let path = KeyPath::root().key("sites").index(i).key("faults");
        for (key, value) in [
            ("delay_percent", faults.delay_percent),
            ("abort_percent", faults.abort_percent),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return invalid(
                    path.key(key),
                    format!("{value} is out of range; expected 0 to 100"),
                );
            }
        }
        if !(100..=599).contains(&faults.abort_status) {
            return invalid(
                path.key("abort_status"),
                format!(
                    "{} is not an HTTP status; expected 100 to 599",
                    faults.abort_status
                ),
            );
        }
        if let Some(abort) = &faults.abort
            && abort != "status"
            && abort != "reset"
        {
            return invalid(
                path.key("abort"),
                format!("{abort:?}: expected \"status\" or \"reset\""),
            );
        }
        if let Some(header) = &faults.header {
            let valid = header.split_once(':').is_some_and(|(name, value)| {
                !name.trim().is_empty()
                    && name.trim().chars().all(is_tchar)
                    && value
                        .trim()
                        .bytes()
                        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            });
            if !valid {
                return invalid(
                    path.key("header"),
                    format!("{header:?}: expected \"name: value\", like \"x-edge-fault: on\""),
                );
            }
        }
    }
    Ok(())
}

fn dns(config: &Config, path: &KeyPath) -> Checked {
    let dns = &config.dns;
    for (i, server) in dns.servers.iter().enumerate() {
        if crate::schema::parse_dns_server(server).is_none() {
            return invalid(
                path.key("servers").index(i),
                format!(
                    "{server:?} is not an IP address; expected \"10.0.0.2\" or \"127.0.0.1:5353\""
                ),
            );
        }
    }
    nonzero(dns.min_ttl, path.key("min_ttl"))?;
    nonzero(dns.timeout, path.key("timeout"))?;
    if dns.max_ttl < dns.min_ttl {
        return invalid(
            path.key("max_ttl"),
            format!(
                "{:?} is below min_ttl ({:?}); the ceiling must be at least the floor",
                dns.max_ttl, dns.min_ttl
            ),
        );
    }
    Ok(())
}

fn cache(config: &Config, path: &KeyPath) -> Checked {
    let cache = &config.cache;
    if let Some(name) = &cache.targeted_field {
        header_name(name, path.key("targeted_field"))?;
    }
    if cache.max_object_size == Some(0) {
        return invalid(
            path.key("max_object_size"),
            "must be greater than zero; leave it out for memory/8 (at most 64MiB)",
        );
    }
    nonzero(cache.lock_timeout, path.key("lock_timeout"))?;
    if let Some(disk) = &cache.disk {
        if disk.size < MIN_DISK_SIZE {
            return invalid(
                path.key("disk").key("size"),
                format!(
                    "{} bytes is too small; give the disk tier at least 1MiB, like \"20GiB\"",
                    disk.size
                ),
            );
        }
        if disk.path.as_os_str().is_empty() {
            return invalid(
                path.key("disk").key("path"),
                "empty; name a directory like \"/var/cache/edge\"",
            );
        }
    }
    for (i, site) in config.sites.iter().enumerate() {
        let site_path = KeyPath::root().key("sites").index(i).key("cache");
        for (j, name) in site.cache.key_headers.iter().enumerate() {
            header_name(name, site_path.key("key_headers").index(j))?;
        }
        for (j, method) in site.cache.bypass_methods.iter().enumerate() {
            if http_method_invalid(method) {
                return invalid(
                    site_path.key("bypass_methods").index(j),
                    format!("{method:?} is not an HTTP method; write it like \"GET\""),
                );
            }
        }
        for (j, prefix) in site.cache.bypass_paths.iter().enumerate() {
            if !prefix.starts_with('/') {
                return invalid(
                    site_path.key("bypass_paths").index(j),
                    format!("{prefix:?} must start with '/', like \"/api/\""),
                );
            }
        }
    }
    Ok(())
}

fn header_name(name: &str, path: KeyPath) -> Checked {
    if name.is_empty() || !name.chars().all(is_tchar) {
        return invalid(
            path,
            format!("{name:?} is not a header field name; write it like \"X-Device\""),
        );
    }
    Ok(())
}

fn http_method_invalid(method: &str) -> bool {
    method.is_empty() || !method.chars().all(is_tchar)
}

fn listeners(config: &Config, path: &KeyPath) -> Checked {
    if config.listeners.is_empty() {
        return invalid(
            path.clone(),
            "no listeners; add at least one [[listeners]] table with addr = \"0.0.0.0:8080\"",
        );
    }
    for (i, listener) in config.listeners.iter().enumerate() {
        let addr = listener.addr;
        // Port 0 asks the OS for a free port, so several such listeners never clash.
        if addr.port() == 0 {
            continue;
        }
        if let Some(first) = config.listeners[..i].iter().position(|l| l.addr == addr) {
            return invalid(
                path.index(i).key("addr"),
                format!(
                    "{addr} is already used by listeners[{first}]; each listener needs its own address"
                ),
            );
        }
        if addr == config.admin.listen {
            return invalid(
                path.index(i).key("addr"),
                format!(
                    "{addr} is already used by admin.listen; give the admin API its own address"
                ),
            );
        }
    }
    for (i, listener) in config.listeners.iter().enumerate() {
        if let Some(tls) = &listener.tls {
            self::tls(tls, &path.index(i).key("tls"))?;
        }
    }
    Ok(())
}

/// Whether the files exist and hold matching PEM is checked by edge when it
/// loads them (at start and on reload), where it can name the file.
fn tls(tls: &ListenerTls, path: &KeyPath) -> Checked {
    if tls.certs.is_empty() {
        return invalid(
            path.key("certs"),
            "empty; a TLS listener needs at least one certificate, like [{ cert = \"site.pem\", key = \"site.key\" }]",
        );
    }
    let mut default = None;
    for (j, pair) in tls.certs.iter().enumerate() {
        let pair_path = path.key("certs").index(j);
        for (key, file) in [("cert", &pair.cert), ("key", &pair.key)] {
            if file.as_os_str().is_empty() {
                return invalid(
                    pair_path.key(key),
                    format!("empty path; name a PEM file, like \"certs/site.{key}\""),
                );
            }
        }
        if pair.default {
            if let Some(first) = default {
                return invalid(
                    pair_path.key("default"),
                    format!(
                        "certs[{first}] is already the default; mark at most one certificate default = true"
                    ),
                );
            }
            default = Some(j);
        }
    }
    if tls
        .ticket_key_file
        .as_ref()
        .is_some_and(|f| f.as_os_str().is_empty())
    {
        return invalid(
            path.key("ticket_key_file"),
            "empty path; name a file of at least 32 random bytes (`openssl rand 48 > ticket.key`), or leave the key out",
        );
    }
    nonzero(tls.handshake_timeout, path.key("handshake_timeout"))
}

/// Redirect statuses a site may use: both permanent, so browsers and
/// crawlers remember the https URL. 308 (RFC 9110 §15.4.9) keeps the method
/// and body; 301 lets old clients turn a POST into a GET.
const REDIRECT_STATUSES: [u16; 2] = [301, 308];

fn site_https(site: &Site, path: &KeyPath) -> Checked {
    if let Some(status) = site.redirect_https
        && !REDIRECT_STATUSES.contains(&status)
    {
        return invalid(
            path.key("redirect_https"),
            format!(
                "{status} is not a permanent redirect; use 308 (keeps the method and body) or 301"
            ),
        );
    }
    if let Some(hsts) = &site.hsts
        && let Err(why) = check_hsts(hsts)
    {
        return invalid(
            path.key("hsts"),
            format!(
                "invalid Strict-Transport-Security value {hsts:?}: {why}; write it like \"max-age=31536000; includeSubDomains\""
            ),
        );
    }
    Ok(())
}

/// An HSTS header value (RFC 6797 §6.1): `;`-separated directives, of which
/// `max-age` with a number of seconds is required (§6.1.1).
fn check_hsts(value: &str) -> Result<(), &'static str> {
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err("only visible ASCII characters may appear in a header");
    }
    let mut max_age = false;
    for directive in value.split(';').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        let (name, arg) = directive
            .split_once('=')
            .map_or((directive, None), |(n, a)| (n.trim(), Some(a.trim())));
        if !name.chars().all(is_tchar) || name.is_empty() {
            return Err("a directive name is not a token");
        }
        if name.eq_ignore_ascii_case("max-age") {
            if max_age {
                return Err("max-age appears twice");
            }
            let seconds = arg.map(|a| a.trim_matches('"'));
            if !seconds.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) {
                return Err("max-age needs a number of seconds");
            }
            max_age = true;
        }
    }
    if !max_age {
        return Err("the max-age directive is required");
    }
    Ok(())
}

fn pool(pool: &Pool, path: &KeyPath) -> Checked {
    if pool.endpoints.is_empty() {
        return invalid(
            path.key("endpoints"),
            "empty; a pool needs at least one endpoint, like [\"10.0.0.5:8080\"]",
        );
    }
    for (i, endpoint) in pool.endpoints.iter().enumerate() {
        if let Err(why) = check_endpoint(&endpoint.addr) {
            return invalid(
                path.key("endpoints").index(i),
                format!(
                    "invalid endpoint {:?} ({why}); expected host:port, like \"10.0.0.5:8080\", \"origin.internal:80\" or \"[::1]:80\"",
                    endpoint.addr
                ),
            );
        }
        if !(1..=256).contains(&endpoint.weight) {
            return invalid(
                path.key("endpoints").index(i).key("weight"),
                format!("{} is out of range; expected 1 to 256", endpoint.weight),
            );
        }
    }
    if let Some(adaptive) = &pool.adaptive_concurrency {
        let path = path.key("adaptive_concurrency");
        if adaptive.min == 0 {
            return invalid(path.key("min"), "must be at least 1");
        }
        if adaptive.max < adaptive.min {
            return invalid(
                path.key("max"),
                format!("{} is below min ({})", adaptive.max, adaptive.min),
            );
        }
        if !(adaptive.tolerance > 1.0 && adaptive.tolerance.is_finite()) {
            return invalid(
                path.key("tolerance"),
                format!(
                    "{} must be above 1, like 2.0 (twice the baseline latency)",
                    adaptive.tolerance
                ),
            );
        }
        nonzero(adaptive.window, path.key("window"))?;
    }
    if let Some(breaker) = &pool.breaker {
        let path = path.key("breaker");
        if let Some(open) = breaker.open {
            nonzero(open, path.key("open"))?;
        }
        if let (Some(open), Some(max)) = (breaker.open, breaker.max_open)
            && max < open
        {
            return invalid(
                path.key("max_open"),
                format!(
                    "{max:?} is below open ({open:?}); the ceiling must be at least the first opening"
                ),
            );
        }
        if breaker.probes == Some(0) {
            return invalid(path.key("probes"), "must be at least 1");
        }
    }
    if let Some(budget) = &pool.retry_budget
        && let Some(ratio) = budget.ratio
        && !(0.0..=1000.0).contains(&ratio)
    {
        return invalid(
            path.key("retry_budget").key("ratio"),
            format!("{ratio} is out of range; expected a share like 0.2 (20% of recent requests)"),
        );
    }
    if let Some(name) = &pool.hash_header {
        header_name(name, path.key("hash_header"))?;
        if pool.balance != Balance::Hash {
            return invalid(
                path.key("hash_header"),
                "only `hash` pools place requests by a header; add balance = \"hash\"",
            );
        }
    }
    if let Some(health) = &pool.health {
        if !health.path.starts_with('/') {
            return invalid(
                path.key("health").key("path"),
                format!(
                    "{:?} is not an absolute path; expected one starting with \"/\", like \"/health\"",
                    health.path
                ),
            );
        }
        nonzero(health.interval, path.key("health").key("interval"))?;
        nonzero(health.timeout, path.key("health").key("timeout"))?;
        let [low, high] = health.status;
        if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
            return invalid(
                path.key("health").key("status"),
                format!(
                    "[{low}, {high}] is not a status range; expected [lowest, highest] within 100..599, like [200, 399]"
                ),
            );
        }
        for (key, value) in [("rise", health.rise), ("fall", health.fall)] {
            if value == 0 {
                return invalid(path.key("health").key(key), "must be at least 1");
            }
        }
    }
    let tls_only = [
        ("sni", pool.sni.is_some()),
        ("ca", pool.ca.is_some()),
        ("insecure_skip_verify", pool.insecure_skip_verify),
        ("client_cert", pool.client_cert.is_some()),
        ("h2", pool.h2),
    ];
    if !pool.tls
        && let Some((key, _)) = tls_only.iter().find(|(_, set)| *set)
    {
        return invalid(
            path.key(key),
            "only applies to TLS origins; add tls = true to this pool or remove it",
        );
    }
    if let Some(sni) = &pool.sni
        && (sni.is_empty() || sni.contains(|c: char| c == ':' || c == '/' || c.is_whitespace()))
    {
        return invalid(
            path.key("sni"),
            format!("{sni:?} is not a host name; write it like \"origin.example.com\""),
        );
    }
    if pool.insecure_skip_verify && pool.ca.is_some() {
        return invalid(
            path.key("insecure_skip_verify"),
            "contradicts `ca`: either verify against that CA or skip verification, not both",
        );
    }
    if pool.panic_threshold > 100 {
        return invalid(
            path.key("panic_threshold"),
            "is a percentage; expected 0 (off) to 100, like 50",
        );
    }
    if pool.max_requests == Some(0) {
        return invalid(
            path.key("max_requests"),
            "must be at least 1; leave it out for no cap",
        );
    }
    nonzero(pool.connect_timeout, path.key("connect_timeout"))?;
    nonzero(pool.response_timeout, path.key("response_timeout"))?;
    nonzero(pool.body_timeout, path.key("body_timeout"))?;
    nonzero(pool.idle_timeout, path.key("idle_timeout"))
}

/// `host:port` with a DNS name, IPv4 address or bracketed IPv6 address.
fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let port = if let Some(rest) = endpoint.strip_prefix('[') {
        let (ip, port) = rest
            .split_once("]:")
            .ok_or("missing port after the IPv6 address")?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| "not a valid IPv6 address")?;
        port
    } else {
        let (host, port) = endpoint.rsplit_once(':').ok_or("missing port")?;
        if host.contains(':') {
            return Err("IPv6 addresses need brackets");
        }
        if !is_dns_name(host) {
            return Err("not a valid host name");
        }
        port
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1 to 63
/// characters, at most 253 in all (RFC 1035 §2.3.4); `_` is allowed because
/// real internal names (service records, Docker hosts) use it.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `*`, an exact name, or `*.suffix` (wildcard only as the whole first label).
fn check_host(host: &str) -> Result<(), &'static str> {
    if host == "*" {
        return Ok(());
    }
    let ipv6 = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
    if ipv6 {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return Err("a wildcard is allowed only as the whole first label, like \"*.example.com\"");
    }
    if name.contains(':') {
        return Err("hosts are matched without the port; remove \":port\"");
    }
    if !is_dns_name(name) {
        return Err("expected a host name like \"example.com\", \"*.example.com\" or \"*\"");
    }
    Ok(())
}

fn sites(config: &Config, path: &KeyPath) -> Checked {
    // Lower-cased host -> index of the site that claimed it first.
    let mut claimed: HashMap<String, usize> = HashMap::new();
    for (i, site) in config.sites.iter().enumerate() {
        let site_path = path.index(i);
        if site.hosts.is_empty() {
            return invalid(
                site_path.key("hosts"),
                "empty; list at least one host, like [\"example.com\"], or [\"*\"] for the default site",
            );
        }
        for (j, host) in site.hosts.iter().enumerate() {
            let host_path = site_path.key("hosts").index(j);
            if let Err(why) = check_host(host) {
                return invalid(host_path, format!("invalid host {host:?}: {why}"));
            }
            // Host matching is case-insensitive (RFC 9110 §4.2.3), so are duplicates.
            if let Some(&other) = claimed.get(&host.to_ascii_lowercase()) {
                let whose = if other == i {
                    "this site".to_owned()
                } else {
                    format!("sites[{other}]")
                };
                return invalid(
                    host_path,
                    format!(
                        "host {host:?} is already listed by {whose}; each host belongs to one site"
                    ),
                );
            }
            claimed.insert(host.to_ascii_lowercase(), i);
        }
        pool_ref(config, &site.pool, site_path.key("pool"))?;
        if let Some(shield) = &site.shield {
            pool_ref(config, shield, site_path.key("shield"))?;
        }
        site_https(site, &site_path)?;
        if let Some(limit) = &site.rate_limit {
            rate_limit(limit, &site_path.key("rate_limit"))?;
        }
    }
    Ok(())
}

/// Largest accepted `log.access_buffer`: the queue's slots (about 250
/// bytes each) are allocated up front, so a million lines is already
/// ~250 MiB of memory spent on a disk that cannot keep up.
const MAX_ACCESS_BUFFER: usize = 1 << 20;

/// Whether the log file can be opened is checked by edge when it opens it
/// (at start and on SIGUSR1), where it can name the error.
fn log(config: &Config, path: &KeyPath) -> Checked {
    let log = &config.log;
    if let AccessLogTarget::File(file) = &log.access {
        let text = file.to_string_lossy();
        if text.is_empty() {
            return invalid(
                path.key("access"),
                "empty path; write \"off\", \"stdout\" or a file, like \"/var/log/edge/access.log\"",
            );
        }
        if text.ends_with('/') {
            return invalid(
                path.key("access"),
                format!(
                    "{text:?} names a directory; name the log file in it, like \"{text}access.log\""
                ),
            );
        }
    }
    if !(1..=MAX_ACCESS_BUFFER).contains(&log.access_buffer) {
        return invalid(
            path.key("access_buffer"),
            format!(
                "{} is out of range; expected 1 to {MAX_ACCESS_BUFFER} lines, like 8192",
                log.access_buffer
            ),
        );
    }
    Ok(())
}

fn pool_ref(config: &Config, name: &str, path: KeyPath) -> Checked {
    if config.pools.contains_key(name) {
        return Ok(());
    }
    let message = if config.pools.is_empty() {
        format!("unknown pool {name:?}; no pools are defined, add a [pools.{name}] table")
    } else {
        let known: Vec<_> = config.pools.keys().map(|k| format!("{k:?}")).collect();
        format!("unknown pool {name:?}; known pools: {}", known.join(", "))
    };
    invalid(path, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_error;

    /// A valid base; each case appends to it, so case lines start at 7.
    const BASE: &str = "\
[[listeners]]
addr = \"0.0.0.0:8080\"

[pools.origin]
endpoints = [\"127.0.0.1:9000\"]

";

    /// Broken rules: (text after [`BASE`], line, column, key, part of the message).
    #[test]
    fn rules() {
        let cases: &[(&str, usize, usize, &str, &str)] = &[
            // Sites name existing pools.
            (
                "[[sites]]\nhosts = [\"a.com\"]\npool = \"orign\"\n",
                9,
                8,
                "sites[0].pool",
                "unknown pool \"orign\"; known pools: \"origin\"",
            ),
            (
                "[pools.shields]\nendpoints = [\"10.0.0.5:8080\"]\n[[sites]]\nhosts = [\"a.com\"]\npool = \"origin\"\nshield = \"shield\"\n",
                12,
                10,
                "sites[0].shield",
                "unknown pool \"shield\"; known pools: \"origin\", \"shields\"",
            ),
            // Hosts: non-empty, well-formed, unique across sites ignoring case.
            (
                "[[sites]]\nhosts = []\npool = \"origin\"\n",
                8,
                9,
                "sites[0].hosts",
                "empty; list at least one host",
            ),
            (
                "[[sites]]\nhosts = [\"a.com\", \"a.*.com\"]\npool = \"origin\"\n",
                8,
                19,
                "sites[0].hosts[1]",
                "invalid host \"a.*.com\": a wildcard is allowed only as the whole first label",
            ),
            (
                "[[sites]]\nhosts = [\"a.com:80\"]\npool = \"origin\"\n",
                8,
                10,
                "sites[0].hosts[0]",
                "remove \":port\"",
            ),
            (
                "[[sites]]\nhosts = [\"example.com\", \"*\"]\npool = \"origin\"\n\
                 [[sites]]\nhosts = [\"b.com\", \"Example.COM\"]\npool = \"origin\"\n",
                11,
                19,
                "sites[1].hosts[1]",
                "host \"Example.COM\" is already listed by sites[0]",
            ),
            (
                "[[sites]]\nhosts = [\"*\", \"*\"]\npool = \"origin\"\n",
                8,
                15,
                "sites[0].hosts[1]",
                "host \"*\" is already listed by this site",
            ),
            // Pools: at least one endpoint, each host:port.
            (
                "[pools.empty]\nendpoints = []\n",
                8,
                13,
                "pools.empty.endpoints",
                "a pool needs at least one endpoint",
            ),
            (
                "[pools.b]\nendpoints = [\"[::1]:80\", \"origin.internal\"]\n",
                8,
                26,
                "pools.b.endpoints[1]",
                "invalid endpoint \"origin.internal\" (missing port); expected host:port",
            ),
            (
                "[pools.b]\nendpoints = [\"a:1\", { addr = \"b:2\", weight = 300 }]\n",
                8,
                46,
                "pools.b.endpoints[1].weight",
                "300 is out of range; expected 1 to 256",
            ),
            (
                "[pools.b]\nendpoints = [\"a:99999\"]\n",
                8,
                14,
                "pools.b.endpoints[0]",
                "port must be a number from 1 to 65535",
            ),
            (
                "[pools.b]\nendpoints = [\"a:1\"]\nhealth = { path = \"health\" }\n",
                9,
                19,
                "pools.b.health.path",
                "\"health\" is not an absolute path",
            ),
            // Timeouts are nonzero.
            (
                "[pools.b]\nendpoints = [\"a:1\"]\nconnect_timeout = \"0s\"\n",
                9,
                19,
                "pools.b.connect_timeout",
                "must be greater than zero",
            ),
            (
                "[pools.b]\nendpoints = [\"a:1\"]\nhealth = { path = \"/h\", interval = \"0ms\" }\n",
                9,
                36,
                "pools.b.health.interval",
                "must be greater than zero",
            ),
            (
                "[node]\ndrain_timeout = \"0s\"\n",
                8,
                17,
                "node.drain_timeout",
                "must be greater than zero",
            ),
            // The node id is an HTTP token; workers at least 1.
            ("[node]\nid = \"\"\n", 8, 6, "node.id", "must not be empty"),
            (
                "[node]\nid = \"edge 1\"\n",
                8,
                6,
                "node.id",
                "\"edge 1\" contains ' '; a node id goes into Via and CDN-Loop headers",
            ),
            ("[node]\nid = \"a,b\"\n", 8, 6, "node.id", "contains ','"),
            ("[node]\nid = \"a;b\"\n", 8, 6, "node.id", "contains ';'"),
            (
                "[node]\nworkers = 0\n",
                8,
                11,
                "node.workers",
                "must be at least 1",
            ),
            // Fault injection: shares are percentages, the header is name: value.
            (
                "[[sites]]\nhosts = [\"a.com\"]\npool = \"origin\"\nfaults = { abort_percent = 130.0 }\n",
                10,
                28,
                "sites[0].faults.abort_percent",
                "out of range",
            ),
            (
                "[[sites]]\nhosts = [\"a.com\"]\npool = \"origin\"\nfaults = { header = \"x-edge-fault\" }\n",
                10,
                21,
                "sites[0].faults.header",
                "expected \"name: value\"",
            ),
            // The disk tier needs room and a directory.
            (
                "[cache]\ndisk = { path = \"/var/cache/edge\", size = \"4KiB\" }\n",
                8,
                43,
                "cache.disk.size",
                "too small",
            ),
            // Breaker, retry budget and hash header.
            (
                "[pools.b]\nendpoints = [\"a:1\"]\nbreaker = { probes = 0 }\n",
                9,
                22,
                "pools.b.breaker.probes",
                "must be at least 1",
            ),
            (
                "[pools.b]\nendpoints = [\"a:1\"]\nbreaker = { open = \"2s\", max_open = \"1s\" }\n",
                9,
                37,
                "pools.b.breaker.max_open",
                "is below open",
            ),
            (
                "[pools.b]\nendpoints = [\"a:1\"]\nretry_budget = { ratio = -1.0 }\n",
                9,
                26,
                "pools.b.retry_budget.ratio",
                "out of range",
            ),
            (
                "[pools.b]\nendpoints = [\"a:1\"]\nhash_header = \"X-User\"\n",
                9,
                15,
                "pools.b.hash_header",
                "only `hash` pools",
            ),
            // DNS servers are IP addresses; the TTL ceiling is at least the floor.
            (
                "[dns]\nservers = [\"127.0.0.1:5353\", \"ns.local\"]\n",
                8,
                30,
                "dns.servers[1]",
                "\"ns.local\" is not an IP address",
            ),
            (
                "[dns]\nmin_ttl = \"10s\"\nmax_ttl = \"5s\"\n",
                9,
                11,
                "dns.max_ttl",
                "is below min_ttl",
            ),
            (
                "[dns]\nmin_ttl = \"0s\"\n",
                8,
                11,
                "dns.min_ttl",
                "must be greater than zero",
            ),
            // Header limit between 8 KiB and 1 MiB.
            (
                "[limits]\nmax_header_size = 8191\n",
                8,
                19,
                "limits.max_header_size",
                "8191 bytes is out of range; expected between 8KiB and 1MiB",
            ),
            (
                "[limits]\nmax_header_size = \"2MiB\"\n",
                8,
                19,
                "limits.max_header_size",
                "2097152 bytes is out of range",
            ),
            // Slow-client timeouts are nonzero; the body rate at most 1 GiB/s.
            (
                "[limits]\nheader_timeout = \"0s\"\n",
                8,
                18,
                "limits.header_timeout",
                "must be greater than zero",
            ),
            (
                "[limits]\nkeepalive_timeout = \"0ms\"\n",
                8,
                21,
                "limits.keepalive_timeout",
                "must be greater than zero",
            ),
            (
                "[limits]\nsend_timeout = \"0s\"\n",
                8,
                16,
                "limits.send_timeout",
                "must be greater than zero",
            ),
            (
                "[limits]\nbody_rate_window = \"0s\"\n",
                8,
                20,
                "limits.body_rate_window",
                "must be greater than zero",
            ),
            (
                "[limits]\nbody_min_rate = \"2GiB\"\n",
                8,
                17,
                "limits.body_min_rate",
                "2147483648 bytes per second is out of range",
            ),
            (
                "[limits]\nheader_timeout = 10\n",
                8,
                18,
                "limits.header_timeout",
                "expected a duration",
            ),
            // HTTP/2 settings within the protocol's bounds.
            (
                "[limits]\nh2_max_concurrent_streams = 0\n",
                8,
                29,
                "limits.h2_max_concurrent_streams",
                "must be at least 1",
            ),
            (
                "[limits]\nh2_max_concurrent_streams = 1000001\n",
                8,
                29,
                "limits.h2_max_concurrent_streams",
                "1000001 is out of range; expected at most 1000000",
            ),
            (
                "[limits]\nh2_stream_window = \"16KiB\"\n",
                8,
                20,
                "limits.h2_stream_window",
                "16384 bytes is out of range; expected 65535 to 2147483647",
            ),
            (
                "[limits]\nh2_connection_window = \"2GiB\"\n",
                8,
                24,
                "limits.h2_connection_window",
                "2147483648 bytes is out of range",
            ),
            (
                "[limits]\nh2_max_frame_size = \"8KiB\"\n",
                8,
                21,
                "limits.h2_max_frame_size",
                "8192 bytes is out of range; expected 16KiB to 16777215",
            ),
            (
                "[limits]\nh2_max_frame_size = \"16MiB\"\n",
                8,
                21,
                "limits.h2_max_frame_size",
                "16777216 bytes is out of range",
            ),
            // Connection caps: the listener cap is at least 1.
            (
                "[limits]\nmax_connections = 0\n",
                8,
                19,
                "limits.max_connections",
                "must be at least 1",
            ),
            (
                "[limits]\nmax_connections_per_ip = -1\n",
                8,
                26,
                "limits.max_connections_per_ip",
                "invalid value",
            ),
            // TLS listeners: at least one certificate, at most one default.
            (
                "[[listeners]]\naddr = \"0.0.0.0:8443\"\ntls = { certs = [] }\n",
                9,
                17,
                "listeners[1].tls.certs",
                "empty; a TLS listener needs at least one certificate",
            ),
            (
                "[[listeners]]\naddr = \"0.0.0.0:8443\"\ntls = { certs = [{ cert = \"a.pem\", key = \"a.key\", default = true }, { cert = \"b.pem\", key = \"b.key\", default = true }] }\n",
                9,
                112,
                "listeners[1].tls.certs[1].default",
                "certs[0] is already the default",
            ),
            (
                "[[listeners]]\naddr = \"0.0.0.0:8443\"\ntls = { certs = [{ cert = \"\", key = \"a.key\" }] }\n",
                9,
                27,
                "listeners[1].tls.certs[0].cert",
                "empty path; name a PEM file",
            ),
            (
                "[[listeners]]\naddr = \"0.0.0.0:8443\"\ntls = { certs = [{ cert = \"a.pem\", key = \"a.key\" }], handshake_timeout = \"0s\" }\n",
                9,
                74,
                "listeners[1].tls.handshake_timeout",
                "must be greater than zero",
            ),
            // Site https options.
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nredirect_https = 302\n",
                10,
                18,
                "sites[0].redirect_https",
                "302 is not a permanent redirect; use 308",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nhsts = \"includeSubDomains\"\n",
                10,
                8,
                "sites[0].hsts",
                "the max-age directive is required",
            ),
            // Listener addresses are unique, and not the admin address.
            (
                "[[listeners]]\naddr = \"0.0.0.0:8443\"\n[[listeners]]\naddr = \"0.0.0.0:8080\"\n",
                10,
                8,
                "listeners[2].addr",
                "0.0.0.0:8080 is already used by listeners[0]",
            ),
            (
                "[[listeners]]\naddr = \"127.0.0.1:9901\"\n",
                8,
                8,
                "listeners[1].addr",
                "127.0.0.1:9901 is already used by admin.listen",
            ),
            // The access log: a file name, a queue of 1 to 2^20 lines.
            (
                "[log]\naccess = \"\"\n",
                8,
                10,
                "log.access",
                "empty path; write \"off\", \"stdout\" or a file",
            ),
            (
                "[log]\naccess = \"/var/log/edge/\"\n",
                8,
                10,
                "log.access",
                "\"/var/log/edge/\" names a directory; name the log file in it, like \"/var/log/edge/access.log\"",
            ),
            (
                "[log]\naccess = \"stdout\"\naccess_buffer = 0\n",
                9,
                17,
                "log.access_buffer",
                "0 is out of range; expected 1 to 1048576 lines",
            ),
            (
                "[log]\naccess_buffer = 2000000\n",
                8,
                17,
                "log.access_buffer",
                "2000000 is out of range",
            ),
            // Rate limiting: a table of at least one client, a usable rate
            // and burst, a header name, trusted proxies as CIDR networks.
            (
                "[limits]\nrate_limit_clients = 0\n",
                8,
                22,
                "limits.rate_limit_clients",
                "0 is out of range; expected 1 to 16777216 clients",
            ),
            (
                "[limits]\nrate_limit_clients = 20000000\n",
                8,
                22,
                "limits.rate_limit_clients",
                "20000000 is out of range",
            ),
            (
                "[limits]\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/33\"]\n",
                8,
                36,
                "limits.trusted_proxies[1]",
                "invalid CIDR range \"10.0.0.0/33\"; expected an address and prefix length",
            ),
            (
                "[limits]\ntrusted_proxies = [\"proxy.local\"]\n",
                8,
                20,
                "limits.trusted_proxies[0]",
                "invalid CIDR range \"proxy.local\"",
            ),
            (
                "[limits]\ntrusted_proxies = [\"10.1.2.3/8\"]\n",
                8,
                20,
                "limits.trusted_proxies[0]",
                "\"10.1.2.3/8\" has host bits set; write the network, like \"10.0.0.0/8\"",
            ),
            (
                "[limits]\ntrusted_proxies = \"10.0.0.0/8\"\n",
                8,
                19,
                "limits.trusted_proxies",
                "expected a list of CIDR ranges",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"10/s\", burst = 0 }\n",
                10,
                39,
                "sites[0].rate_limit.burst",
                "0 is out of range; expected 1 to 1000000 requests",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"10/s\", burst = 2000000 }\n",
                10,
                39,
                "sites[0].rate_limit.burst",
                "2000000 is out of range",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"10/x\", burst = 5 }\n",
                10,
                23,
                "sites[0].rate_limit.rate",
                "invalid rate \"10/x\" (the unit must be s, m or h); expected requests per unit, like \"100/s\"",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"0/m\", burst = 5 }\n",
                10,
                23,
                "sites[0].rate_limit.rate",
                "invalid rate \"0/m\" (a rate of 0 refuses every request)",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"100\", burst = 5 }\n",
                10,
                23,
                "sites[0].rate_limit.rate",
                "invalid rate \"100\" (missing \"/unit\")",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"ten/s\", burst = 5 }\n",
                10,
                23,
                "sites[0].rate_limit.rate",
                "the count is not a whole number",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"2000000/s\", burst = 5 }\n",
                10,
                23,
                "sites[0].rate_limit.rate",
                "2000000 requests per 1s is too fast to limit",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"10/s\" }\n",
                10,
                14,
                "sites[0].rate_limit.burst",
                "missing field `burst`",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"10/s\", burst = 5, key = \"header:X Api\" }\n",
                10,
                48,
                "sites[0].rate_limit.key",
                "\"X Api\" is not a header field name; write the key like \"header:X-Api-Key\"",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"10/s\", burst = 5, key = \"header:\" }\n",
                10,
                48,
                "sites[0].rate_limit.key",
                "\"\" is not a header field name",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"10/s\", burst = 5, key = \"cookie:sid\" }\n",
                10,
                48,
                "sites[0].rate_limit.key",
                "invalid rate-limit key \"cookie:sid\"; expected \"ip\" or \"header:NAME\"",
            ),
            (
                "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"10/s\", burst = 5, per = \"ip\" }\n",
                10,
                42,
                "sites[0].rate_limit.per",
                "unknown field `per`, expected one of `rate`, `burst`, `key`",
            ),
        ];
        for &(tail, line, column, key, message) in cases {
            let e = parse_error(&format!("{BASE}{tail}"));
            assert_eq!(
                (e.line, e.column, e.key.as_str()),
                (line, column, key),
                "{e}"
            );
            assert!(e.message.contains(message), "{e}");
        }
    }

    /// Without any listener the error points at the document start, or at
    /// an empty `listeners` array when there is one.
    #[test]
    fn listeners_required() {
        let cases = [
            ("", (1, 1)),
            ("[node]\nid = \"edge-1\"\n", (1, 1)),
            ("# no listeners\nlisteners = []\n", (2, 13)),
        ];
        for (src, (line, column)) in cases {
            let e = parse_error(src);
            assert_eq!(
                (e.line, e.column, e.key.as_str()),
                (line, column, "listeners"),
                "{e}"
            );
            assert!(
                e.message
                    .starts_with("no listeners; add at least one [[listeners]]"),
                "{e}"
            );
        }
    }

    #[test]
    fn no_pools_defined() {
        let src =
            "[[listeners]]\naddr = \"0.0.0.0:80\"\n[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\n";
        let e = parse_error(src);
        assert_eq!(
            e.to_string(),
            "edge.toml:5:8: sites[0].pool: unknown pool \"origin\"; no pools are defined, add a [pools.origin] table"
        );
    }

    #[test]
    fn accepted_edges() {
        let tails = [
            "[limits]\nmax_header_size = \"8KiB\"\n",
            "[limits]\nmax_header_size = \"1MiB\"\n",
            "[limits]\nheader_timeout = \"500ms\"\nkeepalive_timeout = \"1h\"\nbody_min_rate = 0\nbody_rate_window = \"1s\"\n",
            "[limits]\nbody_min_rate = \"1GiB\"\nmax_connections = 1\nmax_connections_per_ip = 0\n",
            "[limits]\nh2_max_concurrent_streams = 1\nh2_stream_window = 65535\nh2_connection_window = 2147483647\nh2_max_frame_size = 16777215\n",
            "[limits]\nh2_stream_window = \"16MiB\"\nh2_connection_window = \"64KiB\"\nh2_max_frame_size = \"16KiB\"\n",
            "[limits]\nh2_max_concurrent_streams = 1000000\n",
            // Port 0 listeners each get their own free port.
            "[[listeners]]\naddr = \"127.0.0.1:0\"\n[[listeners]]\naddr = \"127.0.0.1:0\"\n",
            "[[sites]]\nhosts = [\"*\", \"*.a.com\", \"a.com\", \"[::1]\"]\npool = \"origin\"\nshield = \"origin\"\n",
            "[node]\nid = \"fra1.edge_2\"\nworkers = 1\n",
            "[[listeners]]\naddr = \"127.0.0.1:0\"\ntls = { certs = [{ cert = \"a.pem\", key = \"a.key\" }, { cert = \"b.pem\", key = \"b.key\", default = true }], ticket_key_file = \"t.key\", session_cache = 0, handshake_timeout = \"500ms\" }\n",
            "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nredirect_https = 301\nhsts = \"max-age=0\"\n",
            "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nredirect_https = 308\nhsts = \"max-age=31536000; includeSubDomains; preload\"\n",
            "[log]\naccess = \"off\"\n",
            "[log]\naccess = \"stdout\"\naccess_buffer = 1\nrequest_id = false\n",
            "[log]\naccess = \"logs/access.log\"\naccess_buffer = 1048576\n",
            "[limits]\nrate_limit_clients = 1\ntrusted_proxies = []\n",
            "[limits]\nrate_limit_clients = 16777216\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1/128\", \"2001:db8::/32\", \"0.0.0.0/0\"]\n",
            "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"1000000/s\", burst = 1000000, key = \"header:X-Api-Key\" }\n",
            "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\nrate_limit = { rate = \"1/h\", burst = 1, key = \"ip\" }\n",
        ];
        for tail in tails {
            let src = format!("{BASE}{tail}");
            if let Err(e) = crate::parse(&src, std::path::Path::new("edge.toml")) {
                panic!("{e}\n{src}");
            }
        }
    }

    #[test]
    fn endpoints() {
        let cases = [
            ("127.0.0.1:9000", Ok(())),
            ("origin.internal:80", Ok(())),
            ("[::1]:80", Ok(())),
            ("localhost:65535", Ok(())),
            ("origin", Err("missing port")),
            ("origin:", Err("port must be a number from 1 to 65535")),
            ("origin:0", Err("port must be a number from 1 to 65535")),
            ("origin:65536", Err("port must be a number from 1 to 65535")),
            ("origin:http", Err("port must be a number from 1 to 65535")),
            (":80", Err("not a valid host name")),
            ("bad host:80", Err("not a valid host name")),
            ("::1:80", Err("IPv6 addresses need brackets")),
            ("[::1]", Err("missing port after the IPv6 address")),
            ("[nope]:80", Err("not a valid IPv6 address")),
        ];
        for (endpoint, want) in cases {
            assert_eq!(check_endpoint(endpoint), want, "{endpoint}");
        }
    }

    #[test]
    fn hosts() {
        let wildcard =
            Err("a wildcard is allowed only as the whole first label, like \"*.example.com\"");
        let name = Err("expected a host name like \"example.com\", \"*.example.com\" or \"*\"");
        let cases = [
            ("*", Ok(())),
            ("example.com", Ok(())),
            ("Example.COM", Ok(())),
            ("*.example.org", Ok(())),
            ("localhost", Ok(())),
            ("127.0.0.1", Ok(())),
            ("[::1]", Ok(())),
            ("*example.com", wildcard),
            ("a.*.com", wildcard),
            ("*.*.com", wildcard),
            ("**", wildcard),
            ("*.", name),
            ("", name),
            ("exa mple.com", name),
            ("-bad.com", name),
            ("a..b", name),
            (
                "example.com:8080",
                Err("hosts are matched without the port; remove \":port\""),
            ),
        ];
        for (host, want) in cases {
            assert_eq!(check_host(host), want, "{host:?}");
        }
    }

    #[test]
    fn hsts_values() {
        let cases = [
            ("max-age=31536000", Ok(())),
            ("max-age=31536000; includeSubDomains", Ok(())),
            ("Max-Age=\"600\" ; preload", Ok(())),
            ("includeSubDomains; max-age=0", Ok(())),
            (
                "includeSubDomains",
                Err("the max-age directive is required"),
            ),
            ("max-age=", Err("max-age needs a number of seconds")),
            ("max-age=1y", Err("max-age needs a number of seconds")),
            ("max-age=1; max-age=2", Err("max-age appears twice")),
            ("max-age=1; a b", Err("a directive name is not a token")),
            (
                "max-age=1\n",
                Err("only visible ASCII characters may appear in a header"),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(check_hsts(value), want, "{value:?}");
        }
    }

    #[test]
    fn tokens() {
        for id in ["edge-1", "fra.edge_2", "x!#$%&'*+-.^_`|~"] {
            assert!(id.chars().all(is_tchar), "{id}");
        }
        for id in ["edge 1", "a,b", "a;b", "a\"b", "é"] {
            assert!(!id.chars().all(is_tchar), "{id}");
        }
    }
}
