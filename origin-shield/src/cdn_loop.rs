//! `CDN-Loop` (RFC 8586): each CDN hop appends its id; a hop that finds its
//! own id already present is seeing the request a second time and must stop.
//!
//! ```text
//! CDN-Loop  = #cdn-info
//! cdn-info  = cdn-id *( OWS ";" OWS parameter )
//! cdn-id    = ( uri-host [ ":" port ] ) / pseudonym
//! ```
//!
//! Parameters may hold quoted strings with commas and semicolons in them, so
//! members are split with a small quote-aware scanner, not `split(',')`.

/// Whether any of the given `CDN-Loop` field values names `id`.
///
/// Ids compare ASCII case-insensitively: a cdn-id is a host name or a
/// pseudonym token, and host names are case-insensitive (RFC 3986 §3.2.2).
pub fn contains<'a>(values: impl IntoIterator<Item = &'a [u8]>, id: &str) -> bool {
    values
        .into_iter()
        .flat_map(cdn_ids)
        .any(|member| member.eq_ignore_ascii_case(id.as_bytes()))
}

/// The cdn-id of every member of one `CDN-Loop` field value, in order.
fn cdn_ids(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    members(value).filter_map(|member| {
        let id_end = member
            .iter()
            .position(|&b| b == b';')
            .unwrap_or(member.len());
        let id = trim_ows(&member[..id_end]);
        (!id.is_empty()).then_some(id)
    })
}

/// Splits a list value at commas that are outside quoted strings.
pub(crate) fn members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut in_quotes = false;
        let mut escaped = false;
        for (i, &b) in text.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if in_quotes => escaped = true,
                b'"' => in_quotes = !in_quotes,
                b',' if !in_quotes => {
                    rest = Some(&text[i + 1..]);
                    return Some(&text[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(text)
    })
}

pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(values: &[&str], id: &str) -> bool {
        contains(values.iter().map(|v| v.as_bytes()), id)
    }

    #[test]
    fn finds_own_id_among_members_and_lines() {
        let cases: &[(&[&str], bool)] = &[
            (&["edge-1"], true),
            (&["foo, edge-1"], true),
            (&["foo", "bar,edge-1 "], true),
            (&["EDGE-1"], true),
            (&["edge-1; v=2"], true),
            (&["foo;edge-1"], false),
            (&["edge-10"], false),
            (&["edge"], false),
            (&[""], false),
            (&[" , ,"], false),
            (&[], false),
            // a comma inside a quoted parameter does not start a new member
            (&["foo; note=\"a, edge-1\""], false),
            (&["foo; note=\"a \\\" , edge-1\", edge-1"], true),
        ];
        for (values, expected) in cases {
            assert_eq!(has(values, "edge-1"), *expected, "{values:?}");
        }
    }

    #[test]
    fn host_and_port_ids_match_exactly() {
        assert!(has(&["cdn.example.com:8080"], "cdn.example.com:8080"));
        assert!(!has(&["cdn.example.com:8080"], "cdn.example.com"));
    }
}
