//! Endpoint discovery: resolves pool endpoints given as `name:port` with
//! hickory-resolver, at start and again whenever an answer's TTL runs out,
//! and pushes changed address sets into the pools (edge-lb's
//! [`Discovered`] decides what an answer means; see its docs for the rules:
//! TTL clamped to `[dns] min_ttl..=max_ttl`, a failed or empty lookup keeps
//! the last good set and backs off).
//!
//! One `edge-dns` thread for the node, like the health checker: the DNS
//! server sees one query per name per TTL from an edge node, not one per
//! worker. Pools whose endpoints are all IP literals need no resolver, and
//! no thread is started when no pool has a name.
//!
//! `/etc/hosts` is read first when `[dns] hosts_file` is on (the default),
//! so `localhost:8080` or a name pinned there works without a DNS server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, Instant};
use tokio::sync::Notify;

use anyhow::Context as _;
use edge_config::Config;
use edge_lb::{Answered, Discovered, EndpointSpec, RefreshPolicy};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::proxy::Pipeline;

/// Lookup attempts per name server before a lookup counts as failed.
const ATTEMPTS: usize = 2;

/// The node's resolver, the runtime its lookups run on, and every pool's
/// endpoints as last resolved.
pub struct Dns {
    runtime: tokio::runtime::Runtime,
    resolver: Option<TokioResolver>,
    policy: RefreshPolicy,
    pools: Vec<PoolNames>,
}

/// One pool's endpoints and when each name is next due.
struct PoolNames {
    discovered: Discovered,
    due: Vec<(usize, Instant)>,
}

impl Dns {
    /// Resolves every pool's endpoints (config order), building the
    /// resolver only when some endpoint is a host name. A name that does
    /// not resolve fails start-up: there is no last good answer to keep yet.
    pub fn start(config: &Config) -> anyhow::Result<Dns> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let needs_resolver =
            config
                .pools
                .values()
                .flat_map(|pool| &pool.endpoints)
                .any(|endpoint| {
                    split_host_port(&endpoint.addr)
                        .is_some_and(|(h, _)| h.parse::<IpAddr>().is_err())
                });
        let resolver = if needs_resolver {
            let _guard = runtime.enter();
            Some(build_resolver(&config.dns)?)
        } else {
            None
        };
        let mut dns = Dns {
            runtime,
            resolver,
            policy: RefreshPolicy {
                min_ttl: config.dns.min_ttl,
                max_ttl: config.dns.max_ttl,
            },
            pools: Vec::with_capacity(config.pools.len()),
        };
        for (name, pool) in &config.pools {
            let names = dns.resolve_pool(name, pool)?;
            dns.pools.push(names);
        }
        Ok(dns)
    }

    /// Every pool's endpoint addresses with weights, in config order.
    pub fn specs(&self) -> Vec<Vec<EndpointSpec>> {
        self.pools.iter().map(|p| p.discovered.specs()).collect()
    }

    fn resolve_pool(&self, pool_name: &str, pool: &edge_config::Pool) -> anyhow::Result<PoolNames> {
        let mut discovered = Discovered::new();
        let mut due = Vec::new();
        for (i, endpoint) in pool.endpoints.iter().enumerate() {
            let (host, port) = split_host_port(&endpoint.addr).with_context(|| {
                format!(
                    "pools.{pool_name}.endpoints[{i}]: {:?} is not host:port",
                    endpoint.addr
                )
            })?;
            if let Ok(ip) = host.parse::<IpAddr>() {
                discovered.push_fixed(SocketAddr::new(ip, port), endpoint.weight);
                continue;
            }
            let resolver = self
                .resolver
                .as_ref()
                .expect("built when a pool has a name");
            let (ips, ttl) = self
                .runtime
                .block_on(lookup(resolver, host))
                .with_context(|| {
                    format!("pools.{pool_name}.endpoints[{i}]: cannot resolve {host:?}")
                })?;
            anyhow::ensure!(
                !ips.is_empty(),
                "pools.{pool_name}.endpoints[{i}]: {host:?} resolves to no address"
            );
            let index = discovered.push_named(host, port, endpoint.weight, ips);
            due.push((index, Instant::now() + self.policy.after_answer(ttl)));
        }
        Ok(PoolNames { discovered, due })
    }

    /// Starts the `edge-dns` thread that keeps the pools' names current;
    /// does nothing when no pool has a name.
    /// `stop` ends the thread (after each task's current wait) when a
    /// reload replaces `pipeline`.
    pub fn spawn(self, pipeline: Arc<Pipeline>, stop: Arc<DnsStop>) -> std::io::Result<()> {
        let Dns {
            runtime,
            resolver,
            policy,
            pools,
        } = self;
        let Some(resolver) = resolver else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("edge-dns".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for (index, names) in pools.into_iter().enumerate() {
                        if names.due.is_empty() {
                            continue;
                        }
                        let (pipeline, resolver) = (pipeline.clone(), resolver.clone());
                        let stop = stop.clone();
                        tasks.spawn(follow(pipeline, index, names, resolver, policy, stop));
                    }
                    while tasks.join_next().await.is_some() {}
                });
            })?;
        Ok(())
    }
}

/// Ends a DNS thread's tasks when the pipeline they serve is replaced.
#[derive(Debug, Default)]
pub struct DnsStop {
    stopped: AtomicBool,
    notify: Notify,
}

impl DnsStop {
    /// Stops the tasks: waiting ones at once, the others before they next
    /// touch a pool.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Completes once [`DnsStop::stop`] has been called.
    async fn stopped(&self) {
        // Created before the check: `notify_waiters` reaches a `Notified`
        // from its creation on, so a stop between the two is not missed.
        let notified = self.notify.notified();
        if self.is_stopped() {
            return;
        }
        notified.await;
    }
}

/// Keeps one pool's names current until the process exits.
async fn follow(
    pipeline: Arc<Pipeline>,
    index: usize,
    mut names: PoolNames,
    resolver: TokioResolver,
    policy: RefreshPolicy,
    stop: Arc<DnsStop>,
) {
    let pool = &pipeline.pools()[index];
    loop {
        if stop.is_stopped() {
            return;
        }
        let Some(slot) = (0..names.due.len()).min_by_key(|&i| names.due[i].1) else {
            return;
        };
        let (entry, at) = names.due[slot];
        // A replaced pipeline's tasks end at once, not at their next
        // refresh: they hold the old pipeline alive while they wait.
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => {}
            () = stop.stopped() => return,
        }
        let host = names
            .discovered
            .names()
            .find(|(i, _)| *i == entry)
            .map(|(_, name)| name.to_owned())
            .expect("due entries are names");
        // An answer arriving after the stop must not move pools that the
        // new pipeline now owns.
        let answer = tokio::select! {
            answer = lookup(&resolver, &host) => answer,
            () = stop.stopped() => return,
        };
        let wait = match answer {
            Ok((ips, ttl)) => {
                match names.discovered.record_answer(entry, ips) {
                    Answered::Changed { added, removed } => {
                        tracing::info!(
                            pool = %pool.name, name = %host, ?added, ?removed,
                            "endpoint addresses changed; removed ones drain"
                        );
                        pool.lb.update(&names.discovered.specs(), pool.now());
                    }
                    Answered::Unchanged => {}
                    Answered::EmptyKept => tracing::warn!(
                        pool = %pool.name, name = %host,
                        "lookup returned no address; keeping the last good addresses"
                    ),
                }
                match names.discovered.failures(entry) {
                    0 => policy.after_answer(ttl),
                    failures => policy.after_failure(failures),
                }
            }
            Err(error) => {
                let failures = names.discovered.record_failure(entry);
                tracing::warn!(
                    pool = %pool.name, name = %host, failures, %error,
                    "lookup failed; keeping the last good addresses"
                );
                policy.after_failure(failures)
            }
        };
        names.due[slot].1 = Instant::now() + wait;
    }
}

/// The addresses a name stands for now and how long the answer is valid.
async fn lookup(resolver: &TokioResolver, host: &str) -> anyhow::Result<(Vec<IpAddr>, Duration)> {
    let answer = resolver.lookup_ip(host).await?;
    let ttl = answer
        .valid_until()
        .saturating_duration_since(Instant::now());
    Ok((answer.iter().collect(), ttl))
}

fn build_resolver(dns: &edge_config::Dns) -> anyhow::Result<TokioResolver> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if dns.servers.is_empty() {
        TokioResolver::builder(provider)
            .context("reading /etc/resolv.conf for endpoint names; fix it or set [dns] servers")?
    } else {
        let servers = dns
            .server_addrs()
            .into_iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let options = builder.options_mut();
    options.timeout = dns.timeout;
    options.attempts = ATTEMPTS;
    // The resolver's cache holds answers exactly as long as we wait before
    // asking again, so a refresh after the wait always reaches the server.
    options.positive_min_ttl = Some(dns.min_ttl);
    options.positive_max_ttl = Some(dns.max_ttl);
    options.negative_min_ttl = Some(dns.min_ttl);
    options.negative_max_ttl = Some(dns.min_ttl);
    options.use_hosts_file = if dns.hosts_file {
        ResolveHosts::Always
    } else {
        ResolveHosts::Never
    };
    Ok(builder.build()?)
}

/// `host:port` or `[v6]:port` split into host (brackets removed) and port.
fn split_host_port(endpoint: &str) -> Option<(&str, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn splits_endpoints() {
        assert_eq!(split_host_port("origin.test:80"), Some(("origin.test", 80)));
        assert_eq!(split_host_port("10.0.0.1:8080"), Some(("10.0.0.1", 8080)));
        assert_eq!(split_host_port("[::1]:443"), Some(("::1", 443)));
        assert_eq!(split_host_port("origin.test"), None);
        assert_eq!(split_host_port("origin.test:http"), None);
    }
}
