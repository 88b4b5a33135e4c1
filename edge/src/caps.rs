//! Connection caps: how many connections one listener, and one client
//! address, may hold open at once.
//!
//! Checked in the accept loop before anything else is spent on a
//! connection (no TLS handshake, no task): beyond a cap the socket is
//! closed at once with a reset. That is a choice: HAProxy's `maxconn`
//! stops accepting and lets new connections wait in the kernel's backlog
//! instead, which smooths a short burst but lets a flood fill the backlog
//! that real clients need; nginx and Envoy's connection-limit filter close,
//! as we do. A reset (`SO_LINGER` 0) rather than a FIN leaves no
//! `TIME_WAIT` socket behind per refused connection during a flood.
//!
//! Counting: each listener has one atomic counter shared by every worker
//! (a connection passes or fails with one `fetch_add`). Addresses are
//! counted in a sharded map, `address -> open connections`, one mutex per
//! shard; an entry is removed when its count drops to zero, so the map
//! holds only addresses with a connection open and cannot grow beyond the
//! listener caps. IPv6 clients are counted by their /64, the smallest
//! network one subscriber is given (RFC 6177), since anyone holding a /64
//! can pick a fresh address per connection. The decrement is a drop guard
//! ([`Admission`]) owned by the connection's task, so it runs however the
//! connection ends.
//!
//! Both maxima are atomics so that a config reload changes them in place:
//! connections already counted stay counted, and a lowered cap refuses new
//! connections until enough old ones close.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Shards of the per-address map: enough that workers accepting at once
/// rarely meet on one lock, few enough to stay a few KiB when empty.
const SHARDS: usize = 64;

/// File descriptors kept back from the connection caps for everything
/// else a node opens: idle upstream connections, cache files, the log,
/// the admin listener. The caps then get half of the rest, as Envoy's
/// resource-limits FAQ advises ("keep the sum of all connection limits
/// less than half of the system's file descriptor limit").
const FD_RESERVE: u64 = 1024;

/// Why a connection was refused; the `reason` label of
/// `edge_connections_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The listener already holds `max_connections`.
    ListenerCap,
    /// The client address already holds `max_connections_per_ip`.
    IpCap,
}

impl Rejected {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::ListenerCap => "listener_cap",
            Rejected::IpCap => "ip_cap",
        }
    }
}

/// One listener's open-connection count, shared by every worker.
#[derive(Debug)]
pub struct ListenerCap {
    open: AtomicU64,
    max: AtomicU64,
}

impl ListenerCap {
    /// A cap of `max` connections.
    pub fn new(max: u64) -> Self {
        ListenerCap {
            open: AtomicU64::new(0),
            max: AtomicU64::new(max),
        }
    }

    /// Changes the cap (a config reload); open connections stay counted.
    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }

    fn acquire(&self) -> bool {
        // One atomic on the accept path; a refused connection gives its
        // slot straight back.
        if self.open.fetch_add(1, Ordering::Relaxed) < self.max.load(Ordering::Relaxed) {
            true
        } else {
            self.release();
            false
        }
    }

    fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections counted now.
    #[cfg(test)]
    fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// The unit a client is counted by: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address (IPv4-mapped IPv6 addresses included).
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.to_bits()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.to_bits()),
                None => ClientKey::V6((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// Open connections per client, node-wide (all listeners, all workers).
#[derive(Debug)]
pub struct PerIp {
    shards: Box<[Mutex<HashMap<ClientKey, u64>>]>,
    hasher: RandomState,
    /// 0: the cap is off and no client is counted.
    max: AtomicU64,
}

impl PerIp {
    /// A cap of `max` connections per client; 0 turns it off.
    pub fn new(max: u64) -> Self {
        PerIp {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            max: AtomicU64::new(max),
        }
    }

    /// Changes the cap (a config reload). Connections admitted while it
    /// was off were not counted, so a cap turned on counts only newer ones.
    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }

    fn shard(&self, key: ClientKey) -> std::sync::MutexGuard<'_, HashMap<ClientKey, u64>> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire(&self, key: ClientKey, max: u64) -> bool {
        let mut shard = self.shard(key);
        let open = shard.entry(key).or_insert(0);
        if *open >= max {
            // Only a client already at the cap gets here, so its entry
            // existed: nothing to remove.
            return false;
        }
        *open += 1;
        true
    }

    fn release(&self, key: ClientKey) {
        let mut shard = self.shard(key);
        if let Some(open) = shard.get_mut(&key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                shard.remove(&key);
            }
        }
    }

    /// Clients with a connection open now.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The caps one accept loop checks: its listener's and the node's per-IP.
#[derive(Debug, Clone)]
pub struct Caps {
    /// The listener's count.
    pub listener: Arc<ListenerCap>,
    /// The node-wide per-client count.
    pub per_ip: Arc<PerIp>,
}

impl Caps {
    /// Counts a new connection from `ip`, or says which cap refuses it.
    pub fn admit(&self, ip: IpAddr) -> Result<Admission, Rejected> {
        if !self.listener.acquire() {
            return Err(Rejected::ListenerCap);
        }
        let ip = match self.per_ip.max.load(Ordering::Relaxed) {
            0 => None,
            max => {
                let key = ClientKey::from(ip);
                if !self.per_ip.acquire(key, max) {
                    self.listener.release();
                    return Err(Rejected::IpCap);
                }
                Some((self.per_ip.clone(), key))
            }
        };
        Ok(Admission {
            listener: self.listener.clone(),
            ip,
        })
    }
}

/// A counted connection; dropping it gives its slots back.
#[derive(Debug)]
pub struct Admission {
    listener: Arc<ListenerCap>,
    ip: Option<(Arc<PerIp>, ClientKey)>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some((per_ip, key)) = &self.ip {
            per_ip.release(*key);
        }
        self.listener.release();
    }
}

/// Raises this process's open-file soft limit to its hard limit, and
/// returns the limit now in force. A node serving thousands of clients
/// needs more than the common soft default of 1024 descriptors; the hard
/// limit is what the administrator allows (`LimitNOFILE=` in the systemd
/// unit).
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// The per-listener cap in force: `configured`, lowered if `listeners`
/// listeners at that cap would need more descriptors than `fd_limit`
/// allows. Each client connection may hold a second descriptor for its
/// upstream connection, and [`FD_RESERVE`] stay free for the rest, so a
/// node at its caps gets refused connections instead of `EMFILE`, which
/// would stall every accept loop.
pub fn effective_max_connections(configured: u64, listeners: usize, fd_limit: u64) -> u64 {
    let budget = fd_limit.saturating_sub(FD_RESERVE) / 2;
    let share = budget / (listeners.max(1) as u64);
    configured.min(share).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn caps(listener: u64, per_ip: Option<u64>) -> Caps {
        Caps {
            listener: Arc::new(ListenerCap::new(listener)),
            per_ip: Arc::new(PerIp::new(per_ip.unwrap_or(0))),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn listener_cap_refuses_beyond_max_and_frees_on_drop() {
        let caps = caps(3, None);
        let held: Vec<_> = (0..3)
            .map(|_| caps.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(
            caps.admit(ip("10.0.0.2")).unwrap_err(),
            Rejected::ListenerCap
        );
        assert_eq!(caps.listener.open(), 3, "a refusal gives its slot back");
        drop(held);
        assert_eq!(caps.listener.open(), 0);
        assert!(caps.admit(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn ip_cap_counts_each_client_apart() {
        let caps = caps(100, Some(2));
        let a: Vec<_> = (0..2)
            .map(|_| caps.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(caps.admit(ip("10.0.0.1")).unwrap_err(), Rejected::IpCap);
        let b = caps.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(
            caps.listener.open(),
            3,
            "an IP refusal gives the listener slot back"
        );
        drop(a);
        assert!(caps.admit(ip("10.0.0.1")).is_ok());
        drop(b);
    }

    #[test]
    fn entries_are_removed_at_zero() {
        let caps = caps(10_000, Some(5));
        let per_ip = caps.per_ip.clone();
        let held: Vec<_> = (0..1000u32)
            .map(|i| caps.admit(IpAddr::V4(Ipv4Addr::from_bits(i))).unwrap())
            .collect();
        assert_eq!(per_ip.clients(), 1000);
        drop(held);
        assert_eq!(per_ip.clients(), 0, "the map must not keep closed clients");
        assert_eq!(caps.listener.open(), 0);
    }

    #[test]
    fn client_keys() {
        let cases = [
            ("192.0.2.7", ClientKey::V4(0xc000_0207)),
            ("::ffff:192.0.2.7", ClientKey::V4(0xc000_0207)),
            ("2001:db8:1:2:aaaa::1", ClientKey::V6(0x2001_0db8_0001_0002)),
            (
                "2001:db8:1:2:ffff:ffff:ffff:ffff",
                ClientKey::V6(0x2001_0db8_0001_0002),
            ),
            ("2001:db8:1:3::1", ClientKey::V6(0x2001_0db8_0001_0003)),
        ];
        for (text, want) in cases {
            assert_eq!(ClientKey::from(ip(text)), want, "{text}");
        }
    }

    #[test]
    fn reloaded_caps_apply_to_new_connections_only() {
        let caps = caps(3, None);
        let held: Vec<_> = (0..3)
            .map(|_| caps.admit(ip("10.0.0.1")).unwrap())
            .collect();
        caps.listener.set_max(2);
        assert_eq!(
            caps.admit(ip("10.0.0.2")).unwrap_err(),
            Rejected::ListenerCap
        );
        caps.listener.set_max(10);
        caps.per_ip.set_max(1);
        // The three admitted while the IP cap was off were not counted.
        let counted = caps.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(caps.admit(ip("10.0.0.1")).unwrap_err(), Rejected::IpCap);
        caps.per_ip.set_max(0);
        let uncounted = caps.admit(ip("10.0.0.1")).unwrap();
        drop((held, counted, uncounted));
        assert_eq!(caps.listener.open(), 0);
        assert_eq!(caps.per_ip.clients(), 0);
    }

    #[test]
    fn one_ipv6_subnet_shares_a_cap() {
        let caps = caps(100, Some(2));
        let base = "2001:db8::".parse::<Ipv6Addr>().unwrap().to_bits();
        let v6 = |bits: u128| IpAddr::V6(Ipv6Addr::from_bits(bits));
        let _a = caps.admit(v6(base + 1)).unwrap();
        let _b = caps.admit(v6(base + 2)).unwrap();
        assert_eq!(caps.admit(v6(base + 3)).unwrap_err(), Rejected::IpCap);
        assert!(caps.admit(v6(base + (1 << 64))).is_ok(), "the next /64");
    }

    #[test]
    fn caps_follow_the_fd_limit() {
        // (configured, listeners, fd limit, effective)
        let cases = [
            (100_000, 1, 1_048_576, 100_000),
            (100_000, 1, 20_000, 9_488),
            (100_000, 2, 20_000, 4_744),
            (500, 4, 20_000, 500),
            (100_000, 1, 1024, 1),
            (100_000, 1, 0, 1),
        ];
        for (configured, listeners, fds, want) in cases {
            assert_eq!(
                effective_max_connections(configured, listeners, fds),
                want,
                "{configured} {listeners} {fds}"
            );
        }
    }
}
