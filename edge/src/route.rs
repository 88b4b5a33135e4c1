//! Host → site routing.
//!
//! Matching order, as nginx's `server_name` does it: an exact name first,
//! then the longest `*.suffix` wildcard (which matches names of any depth
//! below the suffix, not the suffix itself), then the `*` default site.
//! Names compare case-insensitively, without port or trailing dot.

use std::collections::HashMap;

/// Index of a site in the configuration's `sites` list.
pub type SiteId = usize;

/// The lookup table built once per configuration.
#[derive(Debug, Default)]
pub struct SiteTable {
    exact: HashMap<String, SiteId>,
    /// `(".example.org", site)`, longest suffix first.
    wildcard: Vec<(String, SiteId)>,
    default: Option<SiteId>,
}

impl SiteTable {
    /// Builds the table from each site's `hosts` list (validated by edge-config).
    pub fn new<'a>(sites: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut table = SiteTable::default();
        for (id, hosts) in sites.into_iter().enumerate() {
            for host in hosts {
                let host = host.to_ascii_lowercase();
                if host == "*" {
                    table.default = Some(id);
                } else if let Some(suffix) = host.strip_prefix('*') {
                    table.wildcard.push((suffix.to_owned(), id));
                } else {
                    table.exact.insert(host, id);
                }
            }
        }
        table
            .wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        table
    }

    /// The site serving `host` (a Host header or URI authority), if any.
    pub fn lookup(&self, host: Option<&str>) -> Option<SiteId> {
        let Some(name) = host.map(normalize) else {
            return self.default;
        };
        if let Some(id) = self.exact.get(name.as_ref()) {
            return Some(*id);
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, id)| *id)
            .or(self.default)
    }
}

/// Lower-cases and strips the port and a trailing dot, borrowing when the
/// name is already in normal form (the common case: no allocation).
fn normalize(host: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        // IPv6 literal: "[::1]:8080" keeps "[::1]".
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = without_port.strip_suffix('.').unwrap_or(without_port);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(sites: &[&[&str]]) -> SiteTable {
        let owned: Vec<Vec<String>> = sites
            .iter()
            .map(|hosts| hosts.iter().map(|h| h.to_string()).collect())
            .collect();
        SiteTable::new(owned.iter().map(Vec::as_slice))
    }

    #[test]
    fn exact_then_longest_wildcard_then_default() {
        let t = table(&[
            &["example.com", "www.example.com"],
            &["*.example.org"],
            &["*.cdn.example.org"],
            &["*"],
        ]);
        let cases = [
            (Some("example.com"), Some(0)),
            (Some("WWW.Example.COM"), Some(0)),
            (Some("example.com:8080"), Some(0)),
            (Some("example.com."), Some(0)),
            (Some("a.example.org"), Some(1)),
            (Some("a.b.example.org"), Some(1)),
            (Some("x.cdn.example.org"), Some(2)),
            (Some("example.org"), Some(3)),
            (Some("other.net"), Some(3)),
            (None, Some(3)),
        ];
        for (host, expected) in cases {
            assert_eq!(t.lookup(host), expected, "{host:?}");
        }
    }

    #[test]
    fn no_default_means_unknown_hosts_have_no_site() {
        let t = table(&[&["example.com"], &["*.example.org"]]);
        assert_eq!(t.lookup(Some("nope.com")), None);
        assert_eq!(t.lookup(Some("example.org")), None);
        assert_eq!(t.lookup(None), None);
    }

    #[test]
    fn ipv6_literal_hosts_keep_their_brackets() {
        let t = table(&[&["[::1]"], &["127.0.0.1"]]);
        assert_eq!(t.lookup(Some("[::1]:8080")), Some(0));
        assert_eq!(t.lookup(Some("127.0.0.1:80")), Some(1));
    }
}
