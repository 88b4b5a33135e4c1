//! Guards: checks a request must pass before it may cost the cache or an
//! origin anything. Today, per-site rate limiting:
//!
//! - [`gcra`]: the limit itself, one timestamp per client (pure);
//! - [`table`]: every client's timestamp in a fixed-size table shared by
//!   the workers, with its eviction trade-off (pure, time passed in);
//! - [`client`]: who the client is — the address behind trusted proxies,
//!   and the hashed key it is counted under (pure);
//! - [`RateLimits`] (here): the node's limits built from the config, asked
//!   by the pipeline once a request has been routed to its site.
//!
//! A site without `rate_limit` costs a request one branch; a node without
//! any has no table at all. A config reload keeps the table (and so every
//! client's count) unless `rate_limit_clients` changed or no site limits
//! any more; clients are
//! counted per site by the site's first host, so adding or removing other
//! sites leaves their counts alone.

pub mod client;
pub mod gcra;
pub mod table;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use edge_config::{Config, RateKey};
use edge_lb::Epoch;
use http::header::{HeaderMap, HeaderName};

use client::{KeyHasher, TrustedProxies};
use gcra::{Decision, Gcra};
use table::RateTable;

/// The node's rate limits: one per site that has one, over one shared table.
#[derive(Debug)]
pub struct RateLimits {
    /// Each site's limit, by site index.
    sites: Vec<Option<SiteLimit>>,
    /// What carries over a reload.
    counts: Arc<Counts>,
    trusted: TrustedProxies,
}

/// Client state and totals, kept across reloads.
#[derive(Debug)]
struct Counts {
    /// Client state; `None` when no site limits anything.
    table: Option<RateTable>,
    /// `rate_limit_clients` the table was sized for.
    configured: usize,
    keys: KeyHasher,
    /// The clock origin of the table's timestamps.
    epoch: Epoch,
    /// Requests refused with 429.
    limited: AtomicU64,
}

/// One site's `rate_limit`.
#[derive(Debug)]
struct SiteLimit {
    gcra: Gcra,
    /// Count by this header's value when the request has it, else by IP.
    header: Option<HeaderName>,
    /// The site's identity in client keys.
    id: u64,
}

/// The rate limit's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Pass,
    /// Answer 429 with `Retry-After: retry_after` (seconds).
    Limited {
        /// Whole seconds until the client would be served.
        retry_after: u64,
    },
}

impl RateLimits {
    /// The limits of a validated `config`; `epoch` starts the limiter's
    /// clock. The client counts of `previous` (the limits a reload
    /// replaces) carry over when its table still fits the config.
    pub fn new(
        config: &Config,
        epoch: Epoch,
        previous: Option<&RateLimits>,
    ) -> anyhow::Result<Self> {
        let wanted = config.sites.iter().any(|s| s.rate_limit.is_some());
        let configured = config.limits.rate_limit_clients;
        let counts = match previous.map(|p| &p.counts) {
            // The same table size, and a table wanted: keep every count.
            // A reload that drops the last limit frees the table.
            Some(counts) if wanted && counts.table.is_some() && counts.configured == configured => {
                counts.clone()
            }
            previous => Arc::new(Counts {
                table: wanted.then(|| {
                    let table = RateTable::new(configured);
                    tracing::info!(
                        clients = table.capacity(),
                        bytes = table.bytes(),
                        "rate-limit table allocated"
                    );
                    table
                }),
                configured,
                keys: KeyHasher::default(),
                epoch,
                limited: AtomicU64::new(previous.map_or(0, |c| c.limited.load(Ordering::Relaxed))),
            }),
        };
        let sites = config
            .sites
            .iter()
            .map(|site| {
                site.rate_limit
                    .as_ref()
                    .map(|limit| {
                        let header = match &limit.key {
                            RateKey::Ip => None,
                            RateKey::Header(name) => Some(HeaderName::from_bytes(name.as_bytes())?),
                        };
                        Ok::<_, anyhow::Error>(SiteLimit {
                            gcra: Gcra::new(limit.rate.interval(), limit.burst),
                            header,
                            id: counts.keys.site(&site.hosts[0]),
                        })
                    })
                    .transpose()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RateLimits {
            sites,
            counts,
            trusted: TrustedProxies::new(config.limits.trusted_proxies.clone()),
        })
    }

    /// The client of a request from `peer`: the peer, or the address a
    /// trusted proxy forwarded (see [`client`]).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.trusted.client(peer, headers)
    }

    /// Whether `site` has a rate limit at all.
    pub fn limits(&self, site: usize) -> bool {
        matches!(self.sites.get(site), Some(Some(_)))
    }

    /// Counts a request from `client` with `headers` to `site`, arriving at
    /// `now`, and says whether it may go on.
    pub fn check(&self, site: usize, client: IpAddr, headers: &HeaderMap, now: Instant) -> Verdict {
        let counts = &*self.counts;
        let (Some(Some(limit)), Some(table)) = (self.sites.get(site), &counts.table) else {
            return Verdict::Pass;
        };
        let key = match limit
            .header
            .as_ref()
            .and_then(|name| headers.get(name))
            .filter(|value| !value.is_empty())
        {
            Some(value) => counts.keys.header(limit.id, value.as_bytes()),
            None => counts.keys.ip(limit.id, client),
        };
        match table.check(key, &limit.gcra, counts.epoch.at(now)) {
            Decision::Allow { .. } => Verdict::Pass,
            Decision::Deny { wait } => {
                counts.limited.fetch_add(1, Ordering::Relaxed);
                Verdict::Limited {
                    retry_after: gcra::retry_after_secs(wait),
                }
            }
        }
    }

    /// Requests refused with 429 since start (for the metrics).
    pub fn limited(&self) -> u64 {
        self.counts.limited.load(Ordering::Relaxed)
    }

    /// Live client entries evicted to make room since start (for the
    /// metrics): steady growth means `rate_limit_clients` is too small
    /// for the traffic, or a flood of distinct clients is under way.
    pub fn evictions(&self) -> u64 {
        self.counts.table.as_ref().map_or(0, RateTable::evictions)
    }

    /// Whether any site limits anything.
    pub fn enabled(&self) -> bool {
        self.counts.table.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn limits(sites: &str) -> RateLimits {
        reloaded(sites, "", None)
    }

    /// Limits for `sites` with `limits` lines, replacing `previous`.
    fn reloaded(sites: &str, limits: &str, previous: Option<&RateLimits>) -> RateLimits {
        let src = format!(
            "[[listeners]]\naddr = \"127.0.0.1:0\"\n[limits]\ntrusted_proxies = [\"127.0.0.1\"]\n{limits}\n\
             [pools.o]\nendpoints = [\"127.0.0.1:1\"]\n{sites}"
        );
        let config = edge_config::parse(&src, Path::new("edge.toml")).unwrap();
        RateLimits::new(&config, Epoch::new(Instant::now()), previous).unwrap()
    }

    #[test]
    fn counts_carry_over_a_reload_that_moves_sites_around() {
        let limited = "[[sites]]\nhosts = [\"a.com\"]\npool = \"o\"\nrate_limit = { rate = \"1/m\", burst = 1 }\n";
        let other = "[[sites]]\nhosts = [\"b.com\"]\npool = \"o\"\n";
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (none, now) = (HeaderMap::new(), Instant::now());
        let first = limits(limited);
        assert_eq!(first.check(0, ip, &none, now), Verdict::Pass);
        assert!(matches!(
            first.check(0, ip, &none, now),
            Verdict::Limited { .. }
        ));
        // A site added in front: a.com is now site 1, and still knows the client.
        let second = reloaded(&format!("{other}{limited}"), "", Some(&first));
        assert!(matches!(
            second.check(1, ip, &none, now),
            Verdict::Limited { .. }
        ));
        assert_eq!(second.limited(), 2, "the total carries over too");
        // A table of another size starts afresh.
        let third = reloaded(limited, "rate_limit_clients = 1024", Some(&second));
        assert_eq!(third.check(0, ip, &none, now), Verdict::Pass);
        assert_eq!(third.limited(), 2);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (n.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn only_sites_with_a_limit_are_limited() {
        let limits = limits(
            "[[sites]]\nhosts = [\"a.com\"]\npool = \"o\"\nrate_limit = { rate = \"1/m\", burst = 2 }\n\
             [[sites]]\nhosts = [\"*\"]\npool = \"o\"\n",
        );
        assert!(limits.enabled());
        assert!(limits.limits(0) && !limits.limits(1) && !limits.limits(7));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let none = HeaderMap::new();
        let verdicts: Vec<Verdict> = (0..3).map(|_| limits.check(0, ip, &none, now)).collect();
        assert_eq!(verdicts[..2], [Verdict::Pass, Verdict::Pass]);
        assert_eq!(verdicts[2], Verdict::Limited { retry_after: 60 });
        assert_eq!(limits.check(1, ip, &none, now), Verdict::Pass);
        assert_eq!(limits.limited(), 1);
        // A minute later the client is served again.
        assert_eq!(
            limits.check(0, ip, &none, now + Duration::from_secs(60)),
            Verdict::Pass
        );
    }

    #[test]
    fn header_keys_fall_back_to_the_address() {
        let limits = limits(
            "[[sites]]\nhosts = [\"*\"]\npool = \"o\"\nrate_limit = { rate = \"1/m\", burst = 1, key = \"header:X-Api-Key\" }\n",
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let a = headers(&[("x-api-key", "a")]);
        let b = headers(&[("x-api-key", "b")]);
        let empty = headers(&[("x-api-key", "")]);
        assert_eq!(limits.check(0, ip, &a, now), Verdict::Pass);
        assert!(matches!(
            limits.check(0, ip, &a, now),
            Verdict::Limited { .. }
        ));
        assert_eq!(limits.check(0, ip, &b, now), Verdict::Pass, "its own key");
        // Without the header (or with it empty), the address is the key.
        assert_eq!(limits.check(0, ip, &HeaderMap::new(), now), Verdict::Pass);
        assert!(matches!(
            limits.check(0, ip, &empty, now),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn no_limits_no_table() {
        let limits = limits("[[sites]]\nhosts = [\"*\"]\npool = \"o\"\n");
        assert!(!limits.enabled());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            limits.check(0, ip, &HeaderMap::new(), Instant::now()),
            Verdict::Pass
        );
        // The client address is still resolved, for the access log.
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(limits.client(peer, &forwarded).to_string(), "198.51.100.7");
    }
}
