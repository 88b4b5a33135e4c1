//! What a response contributes to the store: the decision to keep it, the
//! headers kept, its lifetime; and the entry a 304 refreshes.

use std::sync::Arc;
use std::time::SystemTime;

use edge_cache::age::{self, ResponseTimes};
use edge_cache::cache_control::{self, RequestDirectives, ResponseDirectives};
use edge_cache::entry::StoredResponse;
use edge_cache::freshness::{self, FreshnessInput};
use edge_cache::storable::{self, StoreRequest, StoreResponse};
use edge_cache::{validation, vary};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use super::fill::StorePlan;
use super::{CacheableRequest, Fetch, SharedHead};
use crate::forward;

impl Fetch {
    /// Decides whether the response head may be stored, and how.
    pub(super) fn store_plan(
        &self,
        req: &CacheableRequest,
        request_directives: &RequestDirectives,
        head: &http::response::Parts,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Option<StorePlan> {
        let length = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())?;
        let disk_only = length > self.cache.max_object();
        if disk_only && !self.cache.disk_takes(length) {
            return None;
        }
        let (directives, source) =
            cache_control::shared_cache_directives(&head.headers, &self.cache.targeted);
        let targeted = matches!(source, cache_control::DirectiveSource::Targeted(_));
        let decision = storable::storability(
            &StoreRequest {
                method: &req.method,
                headers: &req.headers,
                directives: request_directives,
            },
            &StoreResponse {
                status: head.status,
                headers: &head.headers,
                directives: &directives,
                has_targeted: targeted,
            },
            &self.policy.store,
        );
        let storable = match decision {
            Ok(storable) => storable,
            Err(reason) => {
                tracing::debug!(reason = reason.as_str(), "response not stored");
                return None;
            }
        };
        let mut headers = head.headers.clone();
        forward::strip_hop_by_hop(&mut headers);
        for field in &storable.strip_fields {
            headers.remove(field.as_str());
        }
        let (date, lifetime) = self.date_and_lifetime(
            head.status,
            &mut headers,
            &directives,
            targeted,
            response_time,
        );
        // Already stale and impossible to revalidate: storing it would only
        // evict something useful.
        let validatable =
            headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
        if lifetime.ttl.is_zero() && !validatable {
            tracing::debug!("response has no freshness and no validator; not stored");
            return None;
        }
        let times = ResponseTimes {
            request_time,
            response_time,
            date,
            age_header: age::parse_age(headers.get_all(header::AGE)),
        };
        let vary = vary::vary_fields(&headers);
        let secondary = vary::secondary_key(&vary, &req.headers);
        Some(StorePlan {
            head: SharedHead {
                status: head.status,
                headers,
                length,
                vary,
                secondary,
            },
            length,
            disk_only,
            times,
            lifetime,
            directives,
        })
    }

    /// Adds a `Date` when there is none (RFC 9110 §6.6.1: a recipient with
    /// a clock assigns one) and computes the freshness lifetime (§4.2.1).
    fn date_and_lifetime(
        &self,
        status: StatusCode,
        headers: &mut HeaderMap,
        directives: &ResponseDirectives,
        targeted: bool,
        response_time: SystemTime,
    ) -> (Option<SystemTime>, freshness::Lifetime) {
        if !headers.contains_key(header::DATE)
            && let Ok(now) = HeaderValue::from_str(&httpdate::fmt_http_date(response_time))
        {
            headers.insert(header::DATE, now);
        }
        let parse = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| age::parse_http_date(v.as_bytes()))
        };
        let date = parse(header::DATE);
        let lifetime = freshness::freshness_lifetime(
            &FreshnessInput {
                status,
                directives,
                targeted,
                date,
                expires: freshness::parse_expires(headers.get_all(header::EXPIRES)),
                last_modified: parse(header::LAST_MODIFIED),
                response_time,
            },
            &self.policy.freshness,
        );
        (date, lifetime)
    }

    /// The stored response updated by a 304 (RFC 9111 §4.3.4, §3.2).
    pub(super) fn revalidated(
        &self,
        stale: &StoredResponse,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Arc<StoredResponse> {
        let mut headers = validation::merge_304(&stale.headers, not_modified);
        if !not_modified.contains_key(header::DATE) {
            // The stored Date describes the old response; age now counts
            // from this validation.
            headers.remove(header::DATE);
        }
        let (directives, source) =
            cache_control::shared_cache_directives(&headers, &self.cache.targeted);
        let targeted = matches!(source, cache_control::DirectiveSource::Targeted(_));
        let (date, lifetime) = self.date_and_lifetime(
            stale.status,
            &mut headers,
            &directives,
            targeted,
            response_time,
        );
        let vary = vary::vary_fields(&headers);
        Arc::new(StoredResponse {
            status: stale.status,
            body: stale.body.clone(),
            times: ResponseTimes {
                request_time,
                response_time,
                date,
                age_header: age::parse_age(not_modified.get_all(header::AGE)),
            },
            lifetime,
            directives,
            secondary: if vary == stale.vary {
                stale.secondary.clone()
            } else {
                None
            },
            vary,
            headers,
        })
    }
}
