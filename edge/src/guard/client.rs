//! Who a request comes from: the client address behind trusted proxies,
//! and the hashed key a rate limit counts it under.
//!
//! **Client address.** The socket peer is the client, unless the peer is a
//! trusted proxy (`[limits] trusted_proxies`): then `X-Forwarded-For` is
//! read from the right — each proxy appends the address it received the
//! request from — skipping addresses that are themselves trusted, and the
//! first one that is not trusted is the client. Entries left of it were
//! written by the client (or anyone it relayed through) and could be
//! anything, so they are never read (nginx's `set_real_ip_from` with
//! `real_ip_recursive on` does the same). When the walk meets an entry that is
//! not an address, or runs out of entries, the last trusted address it
//! reached is the client: nothing further can be believed.
//!
//! Only rate limiting and the access log's `client` use this address. The
//! `X-Forwarded-For` sent upstream still appends the socket peer, so the
//! chain an origin sees is exactly what arrived plus one true hop.
//!
//! **Keys.** A client is counted per site under a 64-bit hash of its key:
//! an IPv4 address, an IPv6 address's /64 (one customer usually holds a
//! whole /64 and can pick any address in it, so per-address limits would
//! not limit anyone), or a header value. The hash is SipHash with a key
//! drawn at random per process, so nobody outside can choose values that
//! land in one table set and push a limited client out of it.

use std::hash::BuildHasher;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// Peers allowed to say, in `X-Forwarded-For`, who the client is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl TrustedProxies {
    /// Trusts the given ranges (none: every peer is the client).
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        // An IPv4 peer on a dual-stack listener appears as ::ffff:a.b.c.d;
        // ranges are written, and clients counted, as IPv4.
        let mut client = peer.to_canonical();
        if self.nets.is_empty() || !self.trusts(client) {
            return client;
        }
        // Right to left over every line of the field, as if they were one
        // comma-separated list (RFC 9110 §5.3).
        let entries = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','));
        for entry in entries {
            let Some(ip) = parse_entry(entry) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`, as some proxies write it).
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

/// Hashes clients' keys for the rate-limit table.
#[derive(Debug, Clone, Default)]
pub struct KeyHasher {
    /// SipHash-1-3 with random keys, drawn once per process.
    state: std::collections::hash_map::RandomState,
}

/// Tags keeping the key kinds apart: the header value `"192.0.2.1"` is
/// not the address 192.0.2.1.
const KIND_V4: u8 = 4;
const KIND_V6_PREFIX: u8 = 6;
const KIND_HEADER: u8 = b'h';

impl KeyHasher {
    /// A site's identity in keys: its first host, so that a client keeps
    /// its count on a site across reloads that add or remove other sites.
    pub fn site(&self, first_host: &str) -> u64 {
        self.state.hash_one(first_host.to_ascii_lowercase())
    }

    /// The key of `ip` on `site`: IPv4 addresses whole, IPv6 by /64.
    pub fn ip(&self, site: u64, ip: IpAddr) -> u64 {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.state.hash_one((site, KIND_V4, v4.octets())),
            IpAddr::V6(v6) => {
                let prefix = (v6.to_bits() >> 64) as u64;
                self.state.hash_one((site, KIND_V6_PREFIX, prefix))
            }
        }
    }

    /// The key of a header value on `site`.
    pub fn header(&self, site: u64, value: &[u8]) -> u64 {
        self.state.hash_one((site, KIND_HEADER, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        let proxies = trusted(&["127.0.0.1/32", "10.0.0.0/8", "2001:db8:ff::/48"]);
        // (peer, X-Forwarded-For lines, client)
        let cases: &[(&str, &[&str], &str)] = &[
            // No trust, no reading: the peer, whatever the header says.
            ("192.0.2.1", &["198.51.100.7"], "192.0.2.1"),
            ("::ffff:192.0.2.1", &[], "192.0.2.1"),
            // A trusted peer names the client.
            ("127.0.0.1", &["198.51.100.7"], "198.51.100.7"),
            ("::ffff:127.0.0.1", &["198.51.100.7"], "198.51.100.7"),
            // Right-most untrusted wins; what the client wrote is ignored.
            ("127.0.0.1", &["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
            (
                "127.0.0.1",
                &["6.6.6.6, 198.51.100.7, 10.1.2.3"],
                "198.51.100.7",
            ),
            // Several lines are one list, in order.
            (
                "127.0.0.1",
                &["6.6.6.6", "198.51.100.7 , 10.0.0.9"],
                "198.51.100.7",
            ),
            // Ports and brackets, as some proxies write them.
            ("127.0.0.1", &["198.51.100.7:4711"], "198.51.100.7"),
            ("127.0.0.1", &["[2001:db8::1]:4711"], "2001:db8::1"),
            ("2001:db8:ff::5", &["2001:db8::1"], "2001:db8::1"),
            // Garbage stops the walk at the last trusted address.
            ("127.0.0.1", &["198.51.100.7, unknown"], "127.0.0.1"),
            (
                "127.0.0.1",
                &["198.51.100.7, unknown, 10.0.0.1"],
                "10.0.0.1",
            ),
            ("127.0.0.1", &["198.51.100.7,"], "127.0.0.1"),
            // Every entry trusted: the left-most of them.
            ("127.0.0.1", &["10.0.0.2, 10.0.0.1"], "10.0.0.2"),
            // No header at all: the proxy itself.
            ("127.0.0.1", &[], "127.0.0.1"),
        ];
        for &(peer, lines, want) in cases {
            let got = proxies.client(peer.parse().unwrap(), &xff(lines));
            assert_eq!(got, want.parse::<IpAddr>().unwrap(), "{peer} {lines:?}");
        }
    }

    #[test]
    fn without_trusted_proxies_the_header_is_never_read() {
        let none = TrustedProxies::default();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(none.client(peer, &xff(&["198.51.100.7"])), peer);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_64() {
        let keys = KeyHasher::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = keys.ip(0, ip("2001:db8:1:2::1"));
        assert_eq!(a, keys.ip(0, ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(a, keys.ip(0, ip("2001:db8:1:3::1")), "next /64");
        assert_ne!(a, keys.ip(1, ip("2001:db8:1:2::1")), "other site");
        // IPv4 addresses count one by one, mapped or not.
        let v4 = keys.ip(0, ip("192.0.2.1"));
        assert_eq!(v4, keys.ip(0, ip("::ffff:192.0.2.1")));
        assert_ne!(v4, keys.ip(0, ip("192.0.2.2")));
    }

    #[test]
    fn header_keys_are_apart_from_addresses_and_sites() {
        let keys = KeyHasher::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_ne!(keys.header(0, b"192.0.2.1"), keys.ip(0, ip));
        assert_ne!(keys.header(0, &[192, 0, 2, 1]), keys.ip(0, ip));
        assert_eq!(keys.header(0, b"key-a"), keys.header(0, b"key-a"));
        assert_ne!(keys.header(0, b"key-a"), keys.header(0, b"key-b"));
        assert_ne!(keys.header(0, b"key-a"), keys.header(1, b"key-a"));
        // Each hasher (each process) draws its own key.
        assert_ne!(
            KeyHasher::default().header(0, b"key-a"),
            keys.header(0, b"key-a")
        );
    }
}
