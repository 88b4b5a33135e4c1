//! The example config in DESIGN.md's "Config (TOML)" section is public
//! contract: it must keep loading, with the values it spells out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_config::{Balance, Role, load};

#[test]
fn design_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/design_example.toml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(config.node.id, "edge-1");
    assert_eq!(config.node.role, Role::Edge);
    assert_eq!(
        config.admin.listen,
        SocketAddr::from(([127, 0, 0, 1], 9901))
    );
    assert_eq!(config.admin.token.as_deref(), Some("secret"));

    let addrs: Vec<_> = config
        .listeners
        .iter()
        .map(|l| l.addr.to_string())
        .collect();
    assert_eq!(addrs, ["0.0.0.0:8080", "0.0.0.0:8443"]);
    assert!(config.listeners[0].tls.is_none());
    let certs = &config.listeners[1].tls.as_ref().unwrap().certs;
    assert_eq!(certs[0].cert, PathBuf::from("certs/site.pem"));
    assert_eq!(certs[0].key, PathBuf::from("certs/site.key"));

    assert_eq!(config.cache.memory, 512 * 1024 * 1024);
    let disk = config.cache.disk.as_ref().unwrap();
    assert_eq!(disk.path, PathBuf::from("/var/cache/edge"));
    assert_eq!(disk.size, 20 * 1024 * 1024 * 1024);

    assert_eq!(config.sites.len(), 1);
    assert_eq!(config.sites[0].hosts, ["example.com", "*.example.org"]);
    assert_eq!(config.sites[0].pool, "origin");
    assert_eq!(config.sites[0].shield.as_deref(), Some("shields"));

    let origin = &config.pools["origin"];
    let endpoints: Vec<(&str, u32)> = origin
        .endpoints
        .iter()
        .map(|e| (e.addr.as_str(), e.weight))
        .collect();
    assert_eq!(
        endpoints,
        [("127.0.0.1:9000", 1), ("origin.internal:80", 1)]
    );
    assert_eq!(origin.balance, Balance::P2c);
    let health = origin.health.as_ref().unwrap();
    assert_eq!(
        (health.path.as_str(), health.interval),
        ("/health", Duration::from_secs(2))
    );
    assert_eq!(config.pools["shields"].balance, Balance::Hash);
}
