//! The `#cache-directive` list syntax of Cache-Control (RFC 9111 §5.2),
//! read forgivingly: it splits field lines into directive names and raw
//! arguments and leaves their meaning to the parent module.
//!
//! It never fails: a malformed argument becomes [`Arg::Invalid`] (which the
//! caller reads restrictively) and a malformed name is skipped.

/// One `cache-directive` as written (§5.2), before its meaning is applied.
#[derive(Debug)]
pub(super) struct RawDirective {
    /// ASCII-lower-cased name (a token).
    pub(super) name: Vec<u8>,
    /// Its argument.
    pub(super) arg: Arg,
}

/// The argument of a directive.
#[derive(Debug)]
pub(super) enum Arg {
    /// No `=`: the bare directive.
    Absent,
    /// A token, or a quoted string with its quoted-pairs unescaped (§5.2
    /// gives both forms the same meaning).
    Value(String),
    /// `=` followed by nothing usable: empty, an unterminated quoted
    /// string, text after the closing quote, or non-token characters.
    Invalid,
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `tchar` (RFC 9110 §5.6.2).
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Trims optional whitespace (SP / HTAB, RFC 9110 §5.6.3) at both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Advance `i` to the next list separator (`,`) that is not inside a quoted
/// string, or to the end.
fn skip_to_comma(line: &[u8], i: &mut usize) {
    let mut quoted = false;
    let mut escaped = false;
    while let Some(&b) = line.get(*i) {
        match b {
            _ if escaped => escaped = false,
            b',' if !quoted => return,
            b'"' => quoted = !quoted,
            b'\\' if quoted => escaped = true,
            _ => {}
        }
        *i += 1;
    }
}

/// Split one field line into directives (§5.2: `#cache-directive`).
pub(super) fn tokenize_line(line: &[u8], out: &mut Vec<RawDirective>) {
    let mut i = 0;
    while i < line.len() {
        // Empty list elements and OWS between elements (RFC 9110 §5.6.1).
        while line.get(i).is_some_and(|&b| is_ows(b) || b == b',') {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let start = i;
        while line.get(i).is_some_and(|&b| b != b',' && b != b'=') {
            i += 1;
        }
        let name = trim_ows(&line[start..i]);
        let arg = if line.get(i) == Some(&b'=') {
            i += 1;
            parse_arg(line, &mut i)
        } else {
            Arg::Absent
        };
        // A name that is not a token cannot be a directive we know (§5.2.3).
        if is_token(name) {
            out.push(RawDirective {
                name: name.to_ascii_lowercase(),
                arg,
            });
        }
    }
}

/// Parse `token / quoted-string` after `=`, leaving `i` at the next `,` or
/// the end of the line.
fn parse_arg(line: &[u8], i: &mut usize) -> Arg {
    while line.get(*i).is_some_and(|&b| is_ows(b)) {
        *i += 1;
    }
    if line.get(*i) != Some(&b'"') {
        let start = *i;
        skip_to_comma(line, i);
        let raw = trim_ows(&line[start..*i]);
        return if is_token(raw) {
            // A token is ASCII, so this conversion cannot fail.
            String::from_utf8(raw.to_vec())
                .map(Arg::Value)
                .unwrap_or(Arg::Invalid)
        } else {
            Arg::Invalid
        };
    }
    // quoted-string (RFC 9110 §5.6.4), with quoted-pair unescaping.
    *i += 1;
    let mut text = Vec::new();
    let mut closed = false;
    while let Some(&b) = line.get(*i) {
        *i += 1;
        match b {
            b'"' => {
                closed = true;
                break;
            }
            b'\\' => match line.get(*i) {
                Some(&escaped) => {
                    text.push(escaped);
                    *i += 1;
                }
                None => break,
            },
            _ => text.push(b),
        }
    }
    if !closed {
        return Arg::Invalid;
    }
    while line.get(*i).is_some_and(|&b| is_ows(b)) {
        *i += 1;
    }
    if line.get(*i).is_some_and(|&b| b != b',') {
        // Text after the closing quote: the argument is malformed.
        skip_to_comma(line, i);
        return Arg::Invalid;
    }
    String::from_utf8(text)
        .map(Arg::Value)
        .unwrap_or(Arg::Invalid)
}
