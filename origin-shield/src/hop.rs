//! The shield hop's rules: which requests go through the shield tier, and
//! when an edge gives up on it and fetches from the origin itself.
//!
//! A site with `shield = "<pool>"` sends its cacheable requests to a pool
//! of shield nodes (edge nodes themselves) instead of the origin. The
//! shield pool is balanced by `hash` on the request URL, so every edge of a
//! fleet asks the same shield for the same object and the origin sees one
//! fetch per object however many edges miss on it; a shield that is down
//! is skipped by walking on along the hash ring, so its objects spread over
//! the other shields.
//!
//! Only GET and HEAD without a body take the hop: their answers are what
//! a shield's cache can share. Anything else (POST, PUT, a GET carrying a
//! body) goes straight to the origin pool: a shield could add nothing but
//! latency.
//!
//! When the shield tier cannot answer, the edge fetches from the origin
//! pool itself rather than failing the client: the shield protects the
//! origin, it must not become the origin's single point of failure.
//! "Cannot answer" means no shield could be picked or reached (connect
//! failure, reset), or a shield answered a 502 or 504 that it generated
//! itself because *it* could not reach the origin, which it says in a
//! `Proxy-Status` field with an `error` parameter (RFC 9209; every edge
//! node marks the gateway errors it generates): the edge may well reach
//! the origin by another path. Anything else is passed on as is: an
//! origin's own 5xx (unmarked), a shield shedding load (503, which going
//! around would defeat), and a shield that timed out waiting, which is
//! waiting on a slow origin: asking the origin again directly would double
//! both the client's wait and the origin's load.
//!
//! The same distinction decides what a shield's answer says about the
//! shield itself, for its outlier detection and breaker: an origin's 5xx
//! passed through a healthy shield is not the shield's failure (counting
//! it would eject every shield during an origin incident and send the
//! whole fleet to the origin), and a status never makes the edge try
//! another shield; a transport failure does.

/// Whether a request with `method` (and a body, or not) goes through the
/// shield tier.
pub fn takes_shield_hop(method: &str, has_body: bool) -> bool {
    !has_body && matches!(method, "GET" | "HEAD")
}

/// What came back from the shield tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A response: its status, and whether a `Proxy-Status` field names
    /// an error (the shield generated it).
    Response {
        /// The status code.
        status: u16,
        /// Whether `Proxy-Status` carries an `error` parameter.
        proxy_error: bool,
    },
    /// No shield could be picked, reached or read from.
    Unreachable,
    /// A shield accepted the request but did not answer in time.
    TimedOut,
}

impl Reply {
    /// Whether this reply counts against the shield that gave it.
    pub fn is_shield_failure(self) -> bool {
        match self {
            Reply::Response {
                status,
                proxy_error,
            } => proxy_error && is_gateway_error(status),
            Reply::Unreachable | Reply::TimedOut => true,
        }
    }
}

/// What the shield hop came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopResult {
    /// An answer (or error) to pass on.
    Answered,
    /// The shield tier could not answer: fetch from the origin directly.
    FallBack(FallbackReason),
}

/// Why an edge fetched from the origin without its shield; the `reason`
/// label of `edge_shield_fallbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// No shield could be picked, reached or read from.
    Unreachable,
    /// A shield answered a 502 or 504 of its own: it could not reach the
    /// origin.
    GatewayError,
}

impl FallbackReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FallbackReason::Unreachable => "unreachable",
            FallbackReason::GatewayError => "gateway_error",
        }
    }
}

/// Judges the shield tier's reply (see the module docs).
pub fn judge(reply: Reply) -> HopResult {
    match reply {
        Reply::Unreachable => HopResult::FallBack(FallbackReason::Unreachable),
        Reply::Response {
            status,
            proxy_error: true,
        } if is_gateway_error(status) => HopResult::FallBack(FallbackReason::GatewayError),
        Reply::Response { .. } | Reply::TimedOut => HopResult::Answered,
    }
}

fn is_gateway_error(status: u16) -> bool {
    matches!(status, 502 | 504)
}

/// Whether any of these `Proxy-Status` field values has a member with an
/// `error` parameter (RFC 9209 §2.1).
pub fn names_an_error<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    values
        .into_iter()
        .flat_map(crate::cdn_loop::members)
        .any(|member| {
            member
                .split(|&b| b == b';')
                .skip(1)
                .map(crate::cdn_loop::trim_ows)
                .any(|param| param.starts_with(b"error="))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_gets_and_heads_take_the_hop() {
        assert!(takes_shield_hop("GET", false));
        assert!(takes_shield_hop("HEAD", false));
        assert!(!takes_shield_hop("GET", true));
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"] {
            assert!(!takes_shield_hop(method, false), "{method}");
        }
    }

    fn response(status: u16, proxy_error: bool) -> Reply {
        Reply::Response {
            status,
            proxy_error,
        }
    }

    #[test]
    fn only_a_shields_own_gateway_errors_and_silence_fall_back() {
        assert_eq!(
            judge(Reply::Unreachable),
            HopResult::FallBack(FallbackReason::Unreachable)
        );
        for status in [502, 504] {
            assert_eq!(
                judge(response(status, true)),
                HopResult::FallBack(FallbackReason::GatewayError)
            );
            assert_eq!(
                judge(response(status, false)),
                HopResult::Answered,
                "the origin's own {status}"
            );
        }
        for status in [200, 206, 304, 404, 500, 503] {
            assert_eq!(
                judge(response(status, true)),
                HopResult::Answered,
                "{status}"
            );
        }
        assert_eq!(
            judge(Reply::TimedOut),
            HopResult::Answered,
            "waiting on a slow origin"
        );
    }

    #[test]
    fn an_origins_errors_through_a_shield_are_not_the_shields_failures() {
        assert!(!response(500, false).is_shield_failure());
        assert!(!response(502, false).is_shield_failure());
        assert!(!response(503, true).is_shield_failure());
        assert!(response(502, true).is_shield_failure());
        assert!(Reply::Unreachable.is_shield_failure());
        assert!(Reply::TimedOut.is_shield_failure());
    }

    #[test]
    fn proxy_status_errors_are_found_in_any_member() {
        let found = |values: &[&str]| names_an_error(values.iter().map(|v| v.as_bytes()));
        assert!(found(&["\"shield-1\"; error=connection_refused"]));
        assert!(found(&[
            "\"cdn\"; received-status=200",
            "\"shield-1\";error=http_response_timeout"
        ]));
        assert!(found(&["a; next-hop=x, b; error=destination_unavailable"]));
        assert!(!found(&["\"shield-1\"; received-status=502"]));
        assert!(!found(&["\"error=not-a-param\"; details=\"error=\""]));
        assert!(!found(&[]));
    }
}
