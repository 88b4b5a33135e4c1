//! edge's configuration: the TOML contract of `DESIGN.md` as typed structs.
//!
//! [`load`] reads a file, [`parse`] a string. Both reject unknown keys and
//! check cross-references (a site names an existing pool, hosts are unique
//! across sites, at least one listener), and every error names the file,
//! `line:column`, the key path and what was expected, so `edge check` can
//! print it as is:
//!
//! ```text
//! edge.toml:14:8: sites[0].pool: unknown pool "orign"; known pools: "origin", "shields"
//! ```
//!
//! Parsing happens in two passes: serde builds the typed [`Config`] (with
//! toml's spans and `serde_path_to_error`'s key path for type errors), then
//! the validation pass checks the rules types cannot express and locates any
//! offender in the source by its key path.

mod error;
mod locate;
mod schema;
mod validate;

use std::path::Path;

pub use error::ConfigError;
pub use schema::*;

/// Reads and parses the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
    parse(&src, path)
}

/// Parses and validates config text; `file` only names the source in errors.
pub fn parse(src: &str, file: &Path) -> Result<Config, ConfigError> {
    let deserializer =
        toml::Deserializer::parse(src).map_err(|e| ConfigError::syntax(file, src, &e))?;
    let config: Config = serde_path_to_error::deserialize(deserializer)
        .map_err(|e| ConfigError::schema(file, src, &e))?;
    validate::validate(&config).map_err(|invalid| ConfigError::invalid(file, src, invalid))?;
    Ok(config)
}

impl Config {
    /// Worker threads to run: `node.workers`, or one per available CPU.
    pub fn workers(&self) -> usize {
        self.node
            .workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            })
            .max(1)
    }
}

/// Parses `src` as `edge.toml`, expecting an error.
#[cfg(test)]
fn parse_error(src: &str) -> ConfigError {
    match parse(src, Path::new("edge.toml")) {
        Ok(config) => panic!("expected an error, parsed {config:?} from:\n{src}"),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    const LISTENER: &str = "[[listeners]]\naddr = \"0.0.0.0:8080\"\n";

    #[test]
    fn defaults() {
        let config = parse(LISTENER, Path::new("edge.toml")).unwrap();
        assert_eq!(config.node.id, "edge");
        assert_eq!(config.node.role, Role::Edge);
        assert_eq!(config.node.workers, None);
        assert!(config.workers() >= 1);
        assert_eq!(config.node.drain_timeout, Duration::from_secs(30));
        assert_eq!(config.limits.max_header_size, 32 * 1024);
        assert_eq!(config.limits.header_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(config.limits.send_timeout, Duration::from_secs(60));
        assert_eq!(config.limits.body_min_rate, 1024);
        assert_eq!(config.limits.body_rate_window, Duration::from_secs(10));
        assert_eq!(config.limits.h2_max_concurrent_streams, 100);
        assert_eq!(config.limits.h2_stream_window, 64 * 1024);
        assert_eq!(config.limits.h2_connection_window, 1024 * 1024);
        assert_eq!(config.limits.h2_max_frame_size, 16 * 1024);
        assert_eq!(config.limits.max_connections, 100_000);
        assert_eq!(config.limits.max_connections_per_ip, 1_000);
        assert_eq!(
            config.admin.listen,
            SocketAddr::from(([127, 0, 0, 1], 9901))
        );
        assert_eq!(config.admin.token, None);
        assert_eq!(config.cache.memory, 256 * 1024 * 1024);
        assert!(config.sites.is_empty() && config.pools.is_empty());
        assert_eq!(config.log.access, AccessLogTarget::Off);
        assert_eq!(config.log.access_buffer, 8192);
        assert!(config.log.request_id);
    }

    #[test]
    fn log_destinations() {
        let cases = [
            ("off", AccessLogTarget::Off),
            ("stdout", AccessLogTarget::Stdout),
            (
                "/var/log/edge/access.log",
                AccessLogTarget::File("/var/log/edge/access.log".into()),
            ),
            // Only the exact words are keywords; anything else is a file.
            ("./off", AccessLogTarget::File("./off".into())),
            ("STDOUT", AccessLogTarget::File("STDOUT".into())),
        ];
        for (access, want) in cases {
            let src = format!(
                "{LISTENER}[log]\naccess = {access:?}\naccess_buffer = 16\nrequest_id = false\n"
            );
            let log = parse(&src, Path::new("edge.toml")).unwrap().log;
            assert_eq!(log.access, want, "{access}");
            assert_eq!(log.access_buffer, 16);
            assert!(!log.request_id);
        }
    }

    #[test]
    fn rate_limits() {
        let config = parse(LISTENER, Path::new("edge.toml")).unwrap();
        assert_eq!(config.limits.rate_limit_clients, 65_536);
        assert!(config.limits.trusted_proxies.is_empty());

        let src = format!(
            "{LISTENER}[limits]\nrate_limit_clients = 1000\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"2001:db8::/48\"]\n\
             [pools.o]\nendpoints = [\"a:1\"]\n\
             [[sites]]\nhosts = [\"a.com\"]\npool = \"o\"\nrate_limit = {{ rate = \"100/s\", burst = 50 }}\n\
             [[sites]]\nhosts = [\"b.com\"]\npool = \"o\"\nrate_limit = {{ rate = \"6000/m\", burst = 1, key = \"header:X-Api-Key\" }}\n\
             [[sites]]\nhosts = [\"c.com\"]\npool = \"o\"\nrate_limit = {{ rate = \"3/h\", burst = 2, key = \"ip\" }}\n\
             [[sites]]\nhosts = [\"*\"]\npool = \"o\"\n"
        );
        let config = parse(&src, Path::new("edge.toml")).unwrap();
        assert_eq!(config.limits.rate_limit_clients, 1000);
        let trusted: Vec<String> = config
            .limits
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(trusted, ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/48"]);
        let limits: Vec<_> = config.sites.iter().map(|s| s.rate_limit.clone()).collect();
        let second = Duration::from_secs(1);
        assert_eq!(
            limits,
            [
                Some(RateLimit {
                    rate: Rate {
                        count: 100,
                        per: second
                    },
                    burst: 50,
                    key: RateKey::Ip,
                }),
                Some(RateLimit {
                    rate: Rate {
                        count: 6000,
                        per: 60 * second
                    },
                    burst: 1,
                    key: RateKey::Header("X-Api-Key".into()),
                }),
                Some(RateLimit {
                    rate: Rate {
                        count: 3,
                        per: 3600 * second
                    },
                    burst: 2,
                    key: RateKey::Ip,
                }),
                None,
            ]
        );
        let intervals: Vec<_> = limits.iter().flatten().map(|l| l.rate.interval()).collect();
        assert_eq!(
            intervals,
            [
                Duration::from_millis(10),
                Duration::from_millis(10),
                Duration::from_secs(1200)
            ]
        );
    }

    #[test]
    fn pool_defaults() {
        let src = format!(
            "{LISTENER}[pools.origin]\nendpoints = [\"a:1\"]\nhealth = {{ path = \"/h\" }}\n"
        );
        let pool = &parse(&src, Path::new("edge.toml")).unwrap().pools["origin"];
        assert_eq!(pool.balance, Balance::P2c);
        assert_eq!(pool.connect_timeout, Duration::from_secs(3));
        assert_eq!(pool.response_timeout, Duration::from_secs(30));
        assert_eq!(pool.body_timeout, Duration::from_secs(30));
        assert_eq!(pool.idle_timeout, Duration::from_secs(60));
        assert_eq!(pool.max_idle_per_endpoint, 64);
        assert_eq!(
            pool.health.as_ref().unwrap().interval,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn tls_defaults() {
        let src = "[[listeners]]\naddr = \"0.0.0.0:8443\"\ntls = { certs = [{ cert = \"a.pem\", key = \"a.key\" }] }\n[[sites]]\nhosts = [\"*\"]\npool = \"o\"\n[pools.o]\nendpoints = [\"a:1\"]\n";
        let config = parse(src, Path::new("edge.toml")).unwrap();
        let tls = config.listeners[0].tls.as_ref().unwrap();
        assert!(!tls.certs[0].default);
        assert_eq!(tls.ticket_key_file, None);
        assert_eq!(tls.session_cache, 1024);
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.sites[0].redirect_https, None);
        assert_eq!(config.sites[0].hsts, None);
    }

    #[test]
    fn explicit_values() {
        let src = format!(
            "{LISTENER}[node]\nworkers = 3\ndrain_timeout = \"1m\"\n[limits]\nmax_header_size = \"64KiB\"\n[cache]\nmemory = 1048576\n"
        );
        let config = parse(&src, Path::new("edge.toml")).unwrap();
        assert_eq!(config.workers(), 3);
        assert_eq!(config.node.drain_timeout, Duration::from_secs(60));
        assert_eq!(config.limits.max_header_size, 64 * 1024);
        assert_eq!(config.cache.memory, 1024 * 1024);
    }

    #[test]
    fn slow_client_limits() {
        let src = format!(
            "{LISTENER}[limits]\nheader_timeout = \"2s\"\nkeepalive_timeout = \"75s\"\nbody_min_rate = \"4KiB\"\nbody_rate_window = \"500ms\"\nsend_timeout = \"15s\"\nh2_max_concurrent_streams = 128\nh2_stream_window = \"256KiB\"\nh2_connection_window = \"4MiB\"\nh2_max_frame_size = \"32KiB\"\nmax_connections = 5000\nmax_connections_per_ip = 0\n"
        );
        let limits = parse(&src, Path::new("edge.toml")).unwrap().limits;
        assert_eq!(limits.header_timeout, Duration::from_secs(2));
        assert_eq!(limits.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(limits.send_timeout, Duration::from_secs(15));
        assert_eq!(limits.body_min_rate, 4096);
        assert_eq!(limits.body_rate_window, Duration::from_millis(500));
        assert_eq!(limits.h2_max_concurrent_streams, 128);
        assert_eq!(limits.h2_stream_window, 256 * 1024);
        assert_eq!(limits.h2_connection_window, 4 * 1024 * 1024);
        assert_eq!(limits.h2_max_frame_size, 32 * 1024);
        assert_eq!(limits.max_connections, 5000);
        assert_eq!(limits.max_connections_per_ip, 0);
    }

    /// Syntax and schema errors: (source, line, column, key, part of the message).
    #[test]
    fn schema_errors() {
        let cases: &[(&str, usize, usize, &str, &str)] = &[
            // Syntax errors concern the whole document: no key.
            ("[node\nid = \"a\"\n", 1, 6, "", "expected `]`"),
            (
                "[node]\nid = \"a\"\nid = \"b\"\n",
                3,
                1,
                "",
                "duplicate key",
            ),
            // Unknown keys point at the key itself and name it.
            (
                "nodes = 1\n",
                1,
                1,
                "nodes",
                "unknown field `nodes`, expected one of `node`",
            ),
            (
                "[pools.origin]\nendpoints = [\"a:1\"]\n  endpointz = 1\n",
                3,
                3,
                "pools.origin.endpointz",
                "unknown field `endpointz`, expected one of `endpoints`",
            ),
            (
                "[[listeners]]\naddr = \"0.0.0.0:1\"\n[[listeners]]\naddr = \"0.0.0.0:2\"\nport = 2\n",
                5,
                1,
                "listeners[1].port",
                "unknown field `port`, expected `addr` or `tls`",
            ),
            (
                "[[listeners]]\naddr = \"0.0.0.0:1\"\ntls = { certs = [{ cert = \"c\", kye = \"k\" }] }\n",
                3,
                32,
                "listeners[0].tls.certs[0].kye",
                "unknown field `kye`, expected one of `cert`, `key`, `default`",
            ),
            // A missing key points at its table.
            (
                "[node]\n\n[[sites]]\nhosts = [\"a\"]\n",
                3,
                1,
                "sites[0].pool",
                "missing field `pool`",
            ),
            // Wrong types and values point at the value.
            (
                "[node]\nid = 5\n",
                2,
                6,
                "node.id",
                "invalid type: integer `5`, expected a string",
            ),
            (
                "[node]\nrole = \"edgy\"\n",
                2,
                8,
                "node.role",
                "unknown variant `edgy`, expected `edge` or `shield`",
            ),
            (
                "[pools.o]\nendpoints = [\"a:1\"]\nbalance = \"roundrobin\"\n",
                3,
                11,
                "pools.o.balance",
                "unknown variant `roundrobin`, expected one of `p2c`, `ewma`, `round-robin`, `hash`",
            ),
            (
                "[node]\nworkers = -1\n",
                2,
                11,
                "node.workers",
                "invalid value: integer `-1`",
            ),
            (
                "[pools.origin]\nendpoints = [\"a:1\"]\nconnect_timeout = \"3x\"\n",
                3,
                19,
                "pools.origin.connect_timeout",
                "invalid duration \"3x\" (unknown time unit \"x\"",
            ),
            (
                "[node]\ndrain_timeout = 30\n",
                2,
                17,
                "node.drain_timeout",
                "invalid type: integer `30`, expected a duration with a unit, like \"500ms\"",
            ),
            (
                "[cache]\nmemory = \"5 zz\"\n",
                2,
                10,
                "cache.memory",
                "invalid size \"5 zz\"",
            ),
            (
                "[cache]\ndisk = { path = \"/c\", size = true }\n",
                2,
                30,
                "cache.disk.size",
                "invalid type: boolean `true`, expected a size like \"32KiB\"",
            ),
            (
                "[cache]\nmemory = -5\n",
                2,
                10,
                "cache.memory",
                "invalid value: integer `-5`, expected a size",
            ),
            (
                "[[listeners]]\naddr = \"localhost:80\"\n",
                2,
                8,
                "listeners[0].addr",
                "invalid socket address \"localhost:80\"; expected an IP address and port",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1\"\n",
                2,
                10,
                "admin.listen",
                "invalid socket address \"127.0.0.1\"",
            ),
            (
                "[log]\naccess = true\n",
                2,
                10,
                "log.access",
                "invalid type: boolean `true`, expected \"off\", \"stdout\" or a file path",
            ),
            (
                "[log]\nrequest_id = \"yes\"\n",
                2,
                14,
                "log.request_id",
                "invalid type: string \"yes\", expected a boolean",
            ),
            (
                "[log]\naccess_buffer = \"8KiB\"\n",
                2,
                17,
                "log.access_buffer",
                "invalid type: string \"8KiB\"",
            ),
            (
                "[log]\nerror = \"stderr\"\n",
                2,
                1,
                "log.error",
                "unknown field `error`, expected one of `access`, `access_buffer`, `request_id`",
            ),
        ];
        for &(src, line, column, key, message) in cases {
            let e = parse_error(src);
            assert_eq!(
                (e.line, e.column, e.key.as_str()),
                (line, column, key),
                "{e}"
            );
            assert!(e.message.contains(message), "{e}");
        }
    }

    #[test]
    fn unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let e = load(&path).unwrap_err();
        assert_eq!((e.line, e.column, e.key.as_str()), (0, 0, ""));
        assert_eq!(e.file, path);
        assert!(
            e.to_string().starts_with(&format!(
                "{}:0:0: cannot read config file: ",
                path.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn display_names_file_position_and_key() {
        let e = parse_error("[node]\nrole = \"edgy\"\n");
        assert_eq!(
            e.to_string(),
            "edge.toml:2:8: node.role: unknown variant `edgy`, expected `edge` or `shield`"
        );
    }
}
