//! Per-site HTTPS rules applied around the pipeline: `redirect_https`
//! answers plain-HTTP requests with a permanent redirect to the same URL
//! over https, and `hsts` adds `Strict-Transport-Security` to responses
//! sent over TLS.
//!
//! They sit in front of [`Proxy::handle`](crate::proxy::Proxy::handle)
//! rather than in it because they depend on the connection (was it TLS?),
//! which the socket backend knows and the pipeline does not need to. The
//! site is looked up with the same [`SiteTable`] rules the pipeline uses,
//! which costs one more hash lookup per request, and only when some site
//! sets either key.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::route::SiteTable;

/// The configured HTTPS rules of every site.
#[derive(Debug)]
pub struct HttpsPolicy {
    sites: SiteTable,
    redirect: Vec<Option<StatusCode>>,
    hsts: Vec<Option<HeaderValue>>,
    /// Port written into redirect URLs; `None` for 443 (the https default).
    port: Option<u16>,
}

/// What to do with one request.
#[derive(Debug)]
pub enum Decision {
    /// Answer with this redirect instead of serving the request.
    Redirect(Response<ProxyBody>),
    /// Serve it; add this `Strict-Transport-Security` to the response.
    Serve(Option<HeaderValue>),
}

impl HttpsPolicy {
    /// The rules of `config`, or `None` when no site sets any (then the
    /// connection layer skips the lookup). `https_port` is the bound port
    /// of the first TLS listener, the one redirects point to; without a
    /// TLS listener they point to 443 (TLS terminated in front of edge).
    pub fn new(config: &edge_config::Config, https_port: Option<u16>) -> Option<Self> {
        if config
            .sites
            .iter()
            .all(|s| s.redirect_https.is_none() && s.hsts.is_none())
        {
            return None;
        }
        Some(HttpsPolicy {
            sites: SiteTable::new(config.sites.iter().map(|s| s.hosts.as_slice())),
            redirect: config
                .sites
                .iter()
                .map(|s| s.redirect_https.and_then(|c| StatusCode::from_u16(c).ok()))
                .collect(),
            hsts: config
                .sites
                .iter()
                .map(|s| {
                    s.hsts
                        .as_deref()
                        .and_then(|v| HeaderValue::from_str(v).ok())
                })
                .collect(),
            port: https_port.filter(|p| *p != 443),
        })
    }

    /// Decides for `req`, which arrived over TLS when `tls` is true.
    pub fn decide<B>(&self, req: &Request<B>, tls: bool) -> Decision {
        let host = request_host(req);
        let Some(site) = self.sites.lookup(host) else {
            return Decision::Serve(None);
        };
        if tls {
            return Decision::Serve(self.hsts[site].clone());
        }
        match (
            self.redirect[site],
            host.and_then(|h| self.location(h, req)),
        ) {
            (Some(status), Some(location)) => Decision::Redirect(redirect(status, location)),
            _ => Decision::Serve(None),
        }
    }

    /// `https://host[:port]/path?query` for a request that named `host`.
    fn location<B>(&self, host: &str, req: &Request<B>) -> Option<HeaderValue> {
        // Parsing as an authority rejects anything that is not a host
        // (paths, spaces, userinfo tricks never reach the Location header).
        let authority: Authority = host.parse().ok()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let url = match self.port {
            Some(port) => format!("https://{}:{port}{path}", authority.host()),
            None => format!("https://{}{path}", authority.host()),
        };
        HeaderValue::from_str(&url).ok()
    }
}

/// Adds the decided `Strict-Transport-Security` to the pipeline's answer.
/// The site's value replaces any the origin sent: whoever runs the edge
/// owns the https promise for the name.
pub fn with_hsts(
    mut response: Response<ProxyBody>,
    hsts: Option<HeaderValue>,
) -> Response<ProxyBody> {
    if let Some(value) = hsts {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
    response
}

/// The host a request names: the URI authority (HTTP/2, absolute form)
/// wins over Host, as in the pipeline (RFC 9112 §3.2.2).
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

fn redirect(status: StatusCode, location: HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(Bytes::from_static(
        b"edge: this site is served over https; follow Location\n",
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(port: Option<u16>) -> HttpsPolicy {
        let toml = r#"
[[listeners]]
addr = "127.0.0.1:0"
[[sites]]
hosts = ["secure.test", "*.secure.test"]
pool = "o"
redirect_https = 308
hsts = "max-age=60"
[[sites]]
hosts = ["old.test"]
pool = "o"
redirect_https = 301
[[sites]]
hosts = ["*"]
pool = "o"
[pools.o]
endpoints = ["127.0.0.1:1"]
"#;
        let config = edge_config::parse(toml, std::path::Path::new("t.toml")).unwrap();
        HttpsPolicy::new(&config, port).unwrap()
    }

    fn get(uri: &str, host: Option<&str>) -> Request<()> {
        let mut req = Request::get(uri);
        if let Some(host) = host {
            req = req.header("host", host);
        }
        req.body(()).unwrap()
    }

    fn redirected(decision: Decision) -> Option<(u16, String)> {
        match decision {
            Decision::Redirect(r) => Some((
                r.status().as_u16(),
                r.headers()[header::LOCATION].to_str().unwrap().to_owned(),
            )),
            Decision::Serve(_) => None,
        }
    }

    #[test]
    fn plain_http_is_redirected_with_path_query_and_port() {
        let p = policy(Some(8443));
        let cases = [
            (
                get("/a/b?x=1", Some("secure.test:8080")),
                Some((308, "https://secure.test:8443/a/b?x=1")),
            ),
            (
                get("/", Some("www.Secure.test")),
                Some((308, "https://www.Secure.test:8443/")),
            ),
            (
                get("http://old.test/x", None),
                Some((301, "https://old.test:8443/x")),
            ),
            (get("/", Some("other.test")), None),
            (get("/", None), None),
            (get("/", Some("secure.test/evil")), None),
        ];
        for (req, want) in cases {
            let got = redirected(p.decide(&req, false));
            assert_eq!(
                got.as_ref().map(|(s, l)| (*s, l.as_str())),
                want,
                "{:?}",
                req
            );
        }
        let p443 = policy(Some(443));
        assert_eq!(
            redirected(p443.decide(&get("/p", Some("old.test")), false)),
            Some((301, "https://old.test/p".to_owned()))
        );
    }

    #[test]
    fn hsts_only_over_tls_and_only_for_its_site() {
        let p = policy(None);
        let hsts = |req: &Request<()>, tls| match p.decide(req, tls) {
            Decision::Serve(h) => h.map(|v| v.to_str().unwrap().to_owned()),
            Decision::Redirect(_) => Some("redirect".to_owned()),
        };
        assert_eq!(
            hsts(&get("/", Some("secure.test")), true).as_deref(),
            Some("max-age=60")
        );
        assert_eq!(hsts(&get("/", Some("old.test")), true), None);
        assert_eq!(hsts(&get("/", Some("x.test")), true), None);
        assert_eq!(hsts(&get("/", Some("x.test")), false), None);
    }

    #[test]
    fn no_rules_no_policy() {
        let toml = "[[listeners]]\naddr = \"127.0.0.1:0\"\n[[sites]]\nhosts = [\"*\"]\npool = \"o\"\n[pools.o]\nendpoints = [\"127.0.0.1:1\"]\n";
        let config = edge_config::parse(toml, std::path::Path::new("t.toml")).unwrap();
        assert!(HttpsPolicy::new(&config, Some(8443)).is_none());
    }
}
