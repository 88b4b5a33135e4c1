//! A validating parser for Structured Field Dictionaries (RFC 8941 §4.2.2),
//! just enough for targeted cache-control fields (RFC 9213 §2.1).
//!
//! It follows the RFC's parsing algorithm so that a field a conforming
//! parser would reject is rejected here too (and then ignored by the
//! cache), but it keeps only what the directive mapping needs: the key and
//! the lexical value of each member. Parameters and inner lists are
//! validated and then dropped, since no cache directive defines them.

/// The value of one Dictionary member, reduced to what cache directives use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Member {
    /// No value, or `?1`: the bare directive.
    True,
    /// `?0`: the directive is not set.
    False,
    /// An Integer, Decimal or Token (as written) or a String (escapes
    /// removed): directives read both alike, as §5.2 of RFC 9111 does.
    Text(String),
    /// A Byte Sequence or Inner List: valid SF, but no directive takes one.
    Other,
}

/// Parse a combined field value as a Dictionary: `None` on any parse error,
/// members in order otherwise, duplicates included (the caller keeps the
/// last value of a repeated key, RFC 8941 §4.2.2; deduplicating here would
/// cost quadratic time on a hostile field).
pub(super) fn parse_dictionary(input: &[u8]) -> Option<Vec<(String, Member)>> {
    let mut p = Parser { s: input, i: 0 };
    let mut members: Vec<(String, Member)> = Vec::new();
    p.skip_sp(); // §4.2 step 2: discard leading SP
    if p.eof() {
        return Some(members);
    }
    loop {
        let key = p.key()?;
        let value = if p.eat(b'=') {
            p.item_or_inner_list()?
        } else {
            p.parameters()?;
            Member::True
        };
        members.push((key, value));
        p.skip_ows();
        if p.eof() {
            return Some(members);
        }
        if !p.eat(b',') {
            return None;
        }
        p.skip_ows();
        if p.eof() {
            return None; // trailing comma
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )` (§4.2.3.3).
    fn key(&mut self) -> Option<String> {
        let start = self.i;
        match self.peek() {
            Some(b'a'..=b'z' | b'*') => self.i += 1,
            _ => return None,
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.i += 1;
        }
        // Only ASCII bytes were accepted, so this cannot fail.
        String::from_utf8(self.s[start..self.i].to_vec()).ok()
    }

    /// §4.2.1.1: an Item or an Inner List, with its parameters.
    fn item_or_inner_list(&mut self) -> Option<Member> {
        if self.eat(b'(') {
            loop {
                self.skip_sp();
                if self.eat(b')') {
                    self.parameters()?;
                    return Some(Member::Other);
                }
                self.bare_item()?;
                self.parameters()?;
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return None;
                }
            }
        }
        let value = self.bare_item()?;
        self.parameters()?;
        Some(value)
    }

    /// §4.2.3.2: `*( ";" *SP key [ "=" bare-item ] )`, validated and dropped.
    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip_sp();
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    /// §4.2.3.1.
    fn bare_item(&mut self) -> Option<Member> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b'*' | b'A'..=b'Z' | b'a'..=b'z' => Some(self.token()),
            b':' => self.byte_sequence(),
            b'?' => self.boolean(),
            _ => None,
        }
    }

    /// §4.2.4: Integer (at most 15 digits) or Decimal (at most 12 integer
    /// and 3 fractional digits); kept as written.
    fn number(&mut self) -> Option<Member> {
        let start = self.i;
        self.eat(b'-');
        let mut digits = 0usize;
        let mut dot_at: Option<usize> = None;
        loop {
            match self.peek() {
                Some(b'0'..=b'9') => {
                    digits += 1;
                    self.i += 1;
                }
                Some(b'.') if dot_at.is_none() && digits > 0 => {
                    if digits > 12 {
                        return None;
                    }
                    dot_at = Some(digits);
                    self.i += 1;
                }
                _ => break,
            }
            // At most 15 characters for an Integer, 16 (with the dot) for a Decimal.
            if digits > 15 {
                return None;
            }
        }
        if digits == 0 {
            return None;
        }
        if let Some(int_digits) = dot_at {
            let frac = digits - int_digits;
            if frac == 0 || frac > 3 {
                return None;
            }
        }
        let text = String::from_utf8(self.s[start..self.i].to_vec()).ok()?;
        Some(Member::Text(text))
    }

    /// §4.2.5: printable ASCII, with only `\"` and `\\` as escapes.
    fn string(&mut self) -> Option<Member> {
        self.i += 1; // opening quote
        let mut text = String::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'\\' => {
                    let escaped = self.peek()?;
                    if escaped != b'"' && escaped != b'\\' {
                        return None;
                    }
                    text.push(char::from(escaped));
                    self.i += 1;
                }
                b'"' => return Some(Member::Text(text)),
                0x20..=0x7e => text.push(char::from(b)),
                _ => return None,
            }
        }
    }

    /// §4.2.6: `( ALPHA / "*" ) *( tchar / ":" / "/" )`.
    fn token(&mut self) -> Member {
        let start = self.i;
        self.i += 1;
        while self
            .peek()
            .is_some_and(|b| super::syntax::is_tchar(b) || b == b':' || b == b'/')
        {
            self.i += 1;
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        Member::Text(text)
    }

    /// §4.2.7: `":" *base64 ":"`.
    fn byte_sequence(&mut self) -> Option<Member> {
        self.i += 1;
        loop {
            match self.peek()? {
                b':' => {
                    self.i += 1;
                    return Some(Member::Other);
                }
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => self.i += 1,
                _ => return None,
            }
        }
    }

    /// §4.2.8: `?0` or `?1`.
    fn boolean(&mut self) -> Option<Member> {
        self.i += 1;
        if self.eat(b'1') {
            Some(Member::True)
        } else if self.eat(b'0') {
            Some(Member::False)
        } else {
            None
        }
    }
}
