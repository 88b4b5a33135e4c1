//! Purging cached objects on an operator's request: `POST /purge?url=URL`
//! or `POST /purge?tag=TAG` on the admin listener, with `&soft=1` to mark
//! the objects stale (served again only after revalidation, or within
//! `stale-while-revalidate` / `stale-if-error`) instead of removing them.
//!
//! A URL names one object the way a client would request it: an absolute
//! `http://` or `https://` URL whose authority is the `Host` clients send
//! (port included when they include it). It is mapped to its cache key with
//! the options of the site that serves that host, so `ignore_query`,
//! `keep_params` and `sort_params` apply exactly as for requests. A tag
//! purges every object whose `Surrogate-Key` or `Cache-Tag` lists it.
//! Purges apply to the memory and the disk tier.

use serde::Serialize;

use crate::proxy::Pipeline;

/// What a purge names; in the answer, the key (`url` or `tag`) and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeTarget {
    /// One URL (every variant of it).
    Url(String),
    /// Every object carrying this cache tag.
    Tag(String),
}

/// A parsed `/purge` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRequest {
    /// What to purge.
    pub target: PurgeTarget,
    /// Mark stale instead of removing.
    pub soft: bool,
}

impl PurgeRequest {
    /// Parses the query string of `POST /purge`.
    pub fn parse(query: &str) -> Result<PurgeRequest, String> {
        let mut target = None;
        let mut soft = false;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let next = match &*name {
                "url" => PurgeTarget::Url(value.into_owned()),
                "tag" => PurgeTarget::Tag(value.trim().to_owned()),
                "soft" => {
                    soft = match &*value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        other => return Err(format!("soft={other:?}: expected 1 or 0")),
                    };
                    continue;
                }
                other => {
                    return Err(format!(
                        "unknown parameter {other:?}; use url=, tag= and soft=1"
                    ));
                }
            };
            if target.replace(next).is_some() {
                return Err("give exactly one url= or tag=".to_owned());
            }
        }
        match target {
            Some(PurgeTarget::Tag(tag)) if tag.is_empty() => Err("tag= is empty".to_owned()),
            Some(target) => Ok(PurgeRequest { target, soft }),
            None => {
                Err("missing url= or tag=, e.g. /purge?url=https://example.com/a.css".to_owned())
            }
        }
    }

    /// Applies the purge to `pipeline`'s cache; returns the counts for the
    /// answer, or an error for a URL no site serves.
    pub fn apply(&self, pipeline: &Pipeline) -> Result<PurgeAnswer<'_>, String> {
        let purged = match &self.target {
            PurgeTarget::Url(url) => {
                let (host, path) = split_url(url)?;
                pipeline
                    .purge_url(host, path, self.soft)
                    .ok_or_else(|| format!("no site is configured for host {host:?}"))?
            }
            PurgeTarget::Tag(tag) => pipeline.purge_tag(tag, self.soft),
        };
        let (kind, value) = match &self.target {
            PurgeTarget::Url(url) => ("url", url),
            PurgeTarget::Tag(tag) => ("tag", tag),
        };
        tracing::info!(kind, value = %value, soft = self.soft, memory = purged.memory, disk = purged.disk, "purge");
        Ok(PurgeAnswer {
            target: &self.target,
            soft: self.soft,
            purged: purged.objects(),
            memory: purged.memory,
            disk: purged.disk,
        })
    }
}

/// What a purge did, as the admin API answers it (fields in this order;
/// `tag` in place of `url` for a tag):
///
/// ```json
/// {"url":"https://example.com/app.js","soft":false,"purged":1,"memory":1,"disk":1}
/// ```
#[derive(Debug, Serialize)]
pub struct PurgeAnswer<'a> {
    #[serde(flatten)]
    target: &'a PurgeTarget,
    soft: bool,
    purged: usize,
    memory: usize,
    disk: usize,
}

/// `http(s)://authority/path?query` split into authority and path+query.
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("url {url:?} is not an absolute http(s) URL"))?;
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(format!("url {url:?} has no host"));
    }
    Ok((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str, soft: bool) -> PurgeRequest {
        PurgeRequest {
            target: PurgeTarget::Url(u.to_owned()),
            soft,
        }
    }

    #[test]
    fn parses_queries() {
        assert_eq!(
            PurgeRequest::parse("url=http%3A%2F%2Fa.com%2Fx%3Fv%3D1"),
            Ok(url("http://a.com/x?v=1", false))
        );
        assert_eq!(
            PurgeRequest::parse("url=https://a.com/x&soft=1"),
            Ok(url("https://a.com/x", true))
        );
        assert_eq!(
            PurgeRequest::parse("tag=product-42"),
            Ok(PurgeRequest {
                target: PurgeTarget::Tag("product-42".into()),
                soft: false
            })
        );
        for bad in [
            "",
            "soft=1",
            "url=a&tag=b",
            "tag=",
            "color=red",
            "url=x&soft=maybe",
        ] {
            assert!(PurgeRequest::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn splits_urls() {
        assert_eq!(split_url("http://a.com/x?y"), Ok(("a.com", "/x?y")));
        assert_eq!(split_url("https://a.com:8443"), Ok(("a.com:8443", "/")));
        assert_eq!(split_url("http://a.com?q=1"), Ok(("a.com", "?q=1")));
        assert!(split_url("a.com/x").is_err());
        assert!(split_url("http:///x").is_err());
    }

    #[test]
    fn answers_name_the_target_then_the_counts() {
        let answer = |target: &PurgeTarget| {
            serde_json::to_string(&PurgeAnswer {
                target,
                soft: true,
                purged: 3,
                memory: 2,
                disk: 1,
            })
            .unwrap()
        };
        assert_eq!(
            answer(&PurgeTarget::Url("http://a.com/\"x\"".into())),
            r#"{"url":"http://a.com/\"x\"","soft":true,"purged":3,"memory":2,"disk":1}"#
        );
        assert_eq!(
            answer(&PurgeTarget::Tag("product-42".into())),
            r#"{"tag":"product-42","soft":true,"purged":3,"memory":2,"disk":1}"#
        );
    }
}
