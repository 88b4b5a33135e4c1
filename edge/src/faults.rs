//! Fault injection (chaos engineering): per-site rules that delay a share
//! of upstream requests, or abort a share of them with a status or a reset
//! connection, optionally only for requests carrying a header
//! (`x-edge-fault: on`), so a test can break exactly its own traffic.
//!
//! Rules come from the config (`faults = { ... }` on a site) and at run
//! time from the admin API (`POST /faults`, with a time to live); a runtime
//! rule replaces the configured one until it expires or is deleted. Off by
//! default. Faults act where edge sends upstream, so cache hits are never
//! affected, and an injected failure is never stored.
//!
//! The decision ([`FaultRule::decide`]) is pure: the caller passes the
//! request headers and its randomness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use edge_lb::RandomSource;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Serialize, Serializer};

/// How an aborted request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// Answered with this status (and a one-line body), as if the origin had.
    Status(StatusCode),
    /// The client's connection is closed without an answer.
    Reset,
}

/// In JSON: the status as a number, or `"reset"`.
impl Serialize for Abort {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Abort::Status(status) => serializer.serialize_u16(status.as_u16()),
            Abort::Reset => serializer.serialize_str("reset"),
        }
    }
}

/// One site's fault rule.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// Delay added before sending, and the share of requests (0..=100) delayed.
    pub delay: Option<(Duration, f64)>,
    /// How to abort, and the share of requests (0..=100) aborted.
    pub abort: Option<(Abort, f64)>,
    /// Only requests with this header and value are affected.
    pub header: Option<(HeaderName, HeaderValue)>,
    /// A runtime rule's end; configured rules never expire.
    pub expires: Option<Instant>,
}

/// What to do to one upstream request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Wait this long before sending.
    pub delay: Option<Duration>,
    /// Then fail this way instead of sending.
    pub abort: Option<Abort>,
}

impl FaultRule {
    /// Rolls the dice for one request.
    pub fn decide(&self, headers: &HeaderMap, rng: &mut impl RandomSource) -> Injected {
        if let Some((name, value)) = &self.header
            && headers.get(name) != Some(value)
        {
            return Injected::default();
        }
        let roll = |percent: f64, rng: &mut dyn RandomSource| rng.unit_f64() * 100.0 < percent;
        Injected {
            delay: self
                .delay
                .and_then(|(delay, percent)| roll(percent, rng).then_some(delay)),
            abort: self
                .abort
                .and_then(|(abort, percent)| roll(percent, rng).then_some(abort)),
        }
    }

    /// The rule of a site's `faults = { ... }`.
    pub fn from_config(config: &edge_config::Faults) -> anyhow::Result<FaultRule> {
        let abort = match config.abort.as_deref() {
            None | Some("status") => Abort::Status(StatusCode::from_u16(config.abort_status)?),
            Some("reset") => Abort::Reset,
            Some(other) => anyhow::bail!("faults.abort: unknown {other:?}"),
        };
        Ok(FaultRule {
            delay: config
                .delay
                .filter(|_| config.delay_percent > 0.0)
                .map(|d| (d, config.delay_percent)),
            abort: (config.abort_percent > 0.0).then_some((abort, config.abort_percent)),
            header: config.header.as_deref().map(parse_header).transpose()?,
            expires: None,
        })
    }

    /// A runtime rule from the admin API's query string: `delay`,
    /// `delay_percent`, `abort_percent`, `abort_status`, `abort` (`status`
    /// or `reset`), `header` (`name: value`) and `ttl` (default 5 minutes).
    pub fn from_query(pairs: &[(String, String)], now: Instant) -> Result<FaultRule, String> {
        let mut config = edge_config::Faults::default();
        let mut ttl = DEFAULT_TTL;
        for (name, value) in pairs {
            let number = || {
                value
                    .parse::<f64>()
                    .map_err(|_| format!("{name}={value:?}: not a number"))
            };
            match name.as_str() {
                "site" => {}
                "delay" => config.delay = Some(duration(name, value)?),
                "delay_percent" => config.delay_percent = percent(name, number()?)?,
                "abort_percent" => config.abort_percent = percent(name, number()?)?,
                "abort_status" => {
                    config.abort_status = value
                        .parse()
                        .ok()
                        .filter(|s| (100..=599).contains(s))
                        .ok_or_else(|| format!("abort_status={value:?}: expected 100..599"))?;
                }
                "abort" => config.abort = Some(value.clone()),
                "header" => config.header = Some(value.clone()),
                "ttl" => ttl = duration(name, value)?,
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        let mut rule = FaultRule::from_config(&config).map_err(|e| e.to_string())?;
        rule.expires = Some(now + ttl);
        Ok(rule)
    }
}

/// How long a runtime rule lasts when `ttl` is not given: long enough for
/// a test run, short enough that a forgotten rule heals itself.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

fn duration(name: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{name}={value:?}: {e}"))
}

fn percent(name: &str, value: f64) -> Result<f64, String> {
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{name}={value}: expected 0 to 100"))
    }
}

/// `"name: value"` as a header to match.
pub fn parse_header(text: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("header {text:?}: expected \"name: value\""))?;
    Ok((
        HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())?,
        HeaderValue::from_str(value.trim())?,
    ))
}

/// A site's rule in force as the admin API shows it (`GET /faults`, and the
/// answer to a change), fields in this order:
///
/// ```json
/// {"site":"example.com","active":true,"delay_ms":200,"delay_percent":10.0,
///  "abort":503,"abort_percent":5.0,"header":"x-edge-fault: on",
///  "source":"runtime","expires_in_s":290}
/// ```
///
/// `abort` is a status or `"reset"`; `delay_*`, `abort*` and `header` appear
/// when the rule has them, `expires_in_s` for runtime rules; a site without
/// a rule is `{"site":"example.com","active":false}`.
#[derive(Debug, Default, Serialize)]
pub struct RuleInForce<'a> {
    site: &'a str,
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abort: Option<Abort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abort_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_s: Option<u64>,
}

/// What [`RuleInForce`] shows of `site`'s `rule` at `now`.
pub fn describe<'a>(site: &'a str, rule: Option<&FaultRule>, now: Instant) -> RuleInForce<'a> {
    let Some(rule) = rule else {
        return RuleInForce {
            site,
            ..RuleInForce::default()
        };
    };
    RuleInForce {
        site,
        active: true,
        delay_ms: rule.delay.map(|(delay, _)| delay.as_millis()),
        delay_percent: rule.delay.map(|(_, percent)| percent),
        abort: rule.abort.map(|(abort, _)| abort),
        abort_percent: rule.abort.map(|(_, percent)| percent),
        header: rule
            .header
            .as_ref()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or(""))),
        source: Some(if rule.expires.is_some() {
            "runtime"
        } else {
            "config"
        }),
        expires_in_s: rule
            .expires
            .map(|end| end.saturating_duration_since(now).as_secs()),
    }
}

/// A site's rules: the configured one and the runtime override.
#[derive(Debug, Default)]
pub struct SiteFaults {
    configured: Option<Arc<FaultRule>>,
    runtime: ArcSwapOption<FaultRule>,
}

impl SiteFaults {
    /// The site's configured rule, if any.
    pub fn new(configured: Option<FaultRule>) -> Self {
        SiteFaults {
            configured: configured.map(Arc::new),
            runtime: ArcSwapOption::empty(),
        }
    }

    /// The rule in force at `now`: an unexpired runtime rule, else the
    /// configured one.
    pub fn current(&self, now: Instant) -> Option<Arc<FaultRule>> {
        let runtime = self.runtime.load();
        match &*runtime {
            Some(rule) if rule.expires.is_none_or(|end| end > now) => Some(Arc::clone(rule)),
            _ => self.configured.clone(),
        }
    }

    /// Sets (or with `None` removes) the runtime rule.
    pub fn set_runtime(&self, rule: Option<FaultRule>) {
        self.runtime.store(rule.map(Arc::new));
    }

    /// Whether any rule could apply (a cheap check for the request path).
    pub fn any(&self) -> bool {
        self.configured.is_some() || self.runtime.load().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_lb::WyRand;

    fn rule(abort_percent: f64, header: Option<&str>) -> FaultRule {
        FaultRule {
            delay: None,
            abort: Some((
                Abort::Status(StatusCode::SERVICE_UNAVAILABLE),
                abort_percent,
            )),
            header: header.map(|h| parse_header(h).unwrap()),
            expires: None,
        }
    }

    #[test]
    fn aborts_about_the_configured_share() {
        let rule = rule(30.0, None);
        let mut rng = WyRand::new(7);
        let aborted = (0..100_000)
            .filter(|_| rule.decide(&HeaderMap::new(), &mut rng).abort.is_some())
            .count();
        assert!((29_000..=31_000).contains(&aborted), "{aborted}");
    }

    #[test]
    fn only_matching_requests_when_a_header_is_set() {
        let rule = rule(100.0, Some("X-Edge-Fault: on"));
        let mut rng = WyRand::new(1);
        let mut headers = HeaderMap::new();
        assert_eq!(rule.decide(&headers, &mut rng), Injected::default());
        headers.insert("x-edge-fault", HeaderValue::from_static("off"));
        assert_eq!(rule.decide(&headers, &mut rng), Injected::default());
        headers.insert("x-edge-fault", HeaderValue::from_static("on"));
        assert!(rule.decide(&headers, &mut rng).abort.is_some());
    }

    #[test]
    fn runtime_rules_override_until_they_expire() {
        let now = Instant::now();
        let faults = SiteFaults::new(Some(rule(10.0, None)));
        let query = |q: &[(&str, &str)]| {
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let runtime = FaultRule::from_query(
            &query(&[("abort_percent", "50"), ("abort", "reset"), ("ttl", "10s")]),
            now,
        )
        .unwrap();
        assert_eq!(runtime.abort, Some((Abort::Reset, 50.0)));
        faults.set_runtime(Some(runtime));
        assert_eq!(faults.current(now).unwrap().abort.unwrap().1, 50.0);
        let later = now + Duration::from_secs(11);
        assert_eq!(
            faults.current(later).unwrap().abort.unwrap().1,
            10.0,
            "expired"
        );
        faults.set_runtime(None);
        assert_eq!(faults.current(now).unwrap().abort.unwrap().1, 10.0);
        for bad in [
            &[("abort_percent", "130")][..],
            &[("abort_status", "42")],
            &[("delay", "soon")],
            &[("colour", "red")],
        ] {
            assert!(FaultRule::from_query(&query(bad), now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rules_in_force_as_json() {
        let now = Instant::now();
        let json = |rule: Option<&FaultRule>| {
            serde_json::to_string(&describe("a.test", rule, now)).unwrap()
        };
        assert_eq!(json(None), r#"{"site":"a.test","active":false}"#);
        assert_eq!(
            json(Some(&rule(30.0, Some("X-Edge-Fault: on")))),
            r#"{"site":"a.test","active":true,"abort":503,"abort_percent":30.0,"header":"x-edge-fault: on","source":"config"}"#
        );
        let runtime = FaultRule {
            delay: Some((Duration::from_millis(200), 10.0)),
            abort: Some((Abort::Reset, 5.0)),
            header: None,
            expires: Some(now + Duration::from_secs(90)),
        };
        assert_eq!(
            json(Some(&runtime)),
            r#"{"site":"a.test","active":true,"delay_ms":200,"delay_percent":10.0,"abort":"reset","abort_percent":5.0,"source":"runtime","expires_in_s":90}"#
        );
    }
}
