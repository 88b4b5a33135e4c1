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
//! origin, it must not become the origin's single point of failure. "Cannot
//! answer" is a transport failure (no shield available, connect failure,
//! reset, timeout) or a gateway error a shield generates when *it* could
//! not reach the origin (502, 504): the edge may well reach the origin by
//! another path. Any other answer, a 503 included, is the origin's (or an
//! overloaded shield shedding load, which a fallback would defeat) and is
//! passed on as is.

/// Whether a request with `method` (and a body, or not) goes through the
/// shield tier.
pub fn takes_shield_hop(method: &str, has_body: bool) -> bool {
    !has_body && matches!(method, "GET" | "HEAD")
}

/// What the shield hop came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopResult {
    /// A response to pass on (whatever its status).
    Answered,
    /// The shield tier could not answer: fetch from the origin directly.
    FallBack(FallbackReason),
}

/// Why an edge fetched from the origin without its shield; the `reason`
/// label of `edge_shield_fallbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// No shield could be picked, or none could be reached or answered.
    Unreachable,
    /// A shield answered 502 or 504: it could not reach the origin.
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

/// Judges the shield tier's answer: its status, or `None` when no
/// response came back at all.
pub fn judge(status: Option<u16>) -> HopResult {
    match status {
        None => HopResult::FallBack(FallbackReason::Unreachable),
        Some(502 | 504) => HopResult::FallBack(FallbackReason::GatewayError),
        Some(_) => HopResult::Answered,
    }
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

    #[test]
    fn gateway_errors_and_silence_fall_back_everything_else_is_answered() {
        assert_eq!(
            judge(None),
            HopResult::FallBack(FallbackReason::Unreachable)
        );
        for status in [502, 504] {
            assert_eq!(
                judge(Some(status)),
                HopResult::FallBack(FallbackReason::GatewayError)
            );
        }
        for status in [200, 206, 304, 404, 500, 503] {
            assert_eq!(judge(Some(status)), HopResult::Answered, "{status}");
        }
    }
}
