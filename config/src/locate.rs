//! Key paths (`sites[0].pool`) and where they sit in the source text.
//!
//! Validation runs on the typed [`Config`](crate::Config), which has no spans,
//! so an error found there is located afterwards by walking toml's spanned
//! parse tree along the key path. Re-parsing costs a little, but only on the
//! error path, and keeps spans out of the public schema.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One step in a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A path from the document root to a value, shown as `pools.origin.endpoints[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The document root (shown as the empty string).
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path extended by a table key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    /// This path extended by an array index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// Builds a path from the one `serde_path_to_error` tracked.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        let segments = path
            .iter()
            .filter_map(|segment| match segment {
                S::Seq { index } => Some(Segment::Index(*index)),
                S::Map { key } => Some(Segment::Key(key.clone())),
                S::Enum { variant } => Some(Segment::Key(variant.clone())),
                S::Unknown => None,
            })
            .collect();
        KeyPath(segments)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// TOML bare keys (`A-Za-z0-9_-`) print as is; anything else is quoted so
/// the path can be pasted back into a config.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The 1-based `(line, column)` of the value at `path` in `src`.
///
/// When the path runs past what the document spells out (a defaulted key, an
/// absent table), this is the deepest ancestor that is there; for a path
/// that is not there at all, the document start `1:1`.
pub(crate) fn locate(src: &str, path: &KeyPath) -> (usize, usize) {
    let Ok(root) = DeTable::parse(src) else {
        return (1, 1);
    };
    let mut span = root.span();
    let mut value: Option<&DeValue<'_>> = None;
    for segment in &path.0 {
        let child = match (segment, value) {
            (Segment::Key(key), None) => table_get(root.get_ref(), key),
            (Segment::Key(key), Some(DeValue::Table(table))) => table_get(table, key),
            (Segment::Index(index), Some(DeValue::Array(array))) => array.get(*index),
            _ => None,
        };
        let Some(child) = child else { break };
        span = child.span();
        value = Some(child.get_ref());
    }
    line_col(src, span)
}

fn table_get<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a toml::Spanned<DeValue<'i>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// The 1-based line and column (in characters) where `span` starts.
pub(crate) fn line_col(src: &str, span: Range<usize>) -> (usize, usize) {
    let mut offset = span.start.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
# edge

[node]
id = \"edge-1\"

[[listeners]]
addr = \"0.0.0.0:8080\"

[[listeners]]
  addr = \"0.0.0.0:8443\"

[pools.origin]
endpoints = [\"a:1\", \"b:2\"]

[pools.\"my pool\"]
endpoints = [\"c:3\"]
";

    fn path(segments: &[Segment]) -> KeyPath {
        KeyPath(segments.to_vec())
    }

    fn k(key: &str) -> Segment {
        Segment::Key(key.to_owned())
    }

    #[test]
    fn display() {
        let cases = [
            (path(&[]), ""),
            (path(&[k("listeners")]), "listeners"),
            (
                path(&[k("sites"), Segment::Index(0), k("pool")]),
                "sites[0].pool",
            ),
            (
                path(&[k("pools"), k("my pool"), k("endpoints"), Segment::Index(2)]),
                "pools.\"my pool\".endpoints[2]",
            ),
        ];
        for (path, want) in cases {
            assert_eq!(path.to_string(), want);
        }
    }

    #[test]
    fn locates_values() {
        let cases = [
            (path(&[]), (1, 1)),
            (path(&[k("node"), k("id")]), (4, 6)),
            (
                path(&[k("listeners"), Segment::Index(1), k("addr")]),
                (10, 10),
            ),
            (
                path(&[k("pools"), k("origin"), k("endpoints"), Segment::Index(1)]),
                (13, 21),
            ),
            (
                path(&[k("pools"), k("my pool"), k("endpoints"), Segment::Index(0)]),
                (16, 14),
            ),
            // Absent keys fall back to the deepest ancestor that is present.
            (path(&[k("node"), k("workers")]), (3, 1)),
            (path(&[k("pools"), k("origin"), k("health")]), (12, 1)),
            (path(&[k("listeners"), Segment::Index(1)]), (9, 1)),
            (path(&[k("sites")]), (1, 1)),
        ];
        for (path, want) in cases {
            assert_eq!(locate(SRC, &path), want, "{path}");
        }
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_col("a = \"é\"\nb", 9..10), (2, 1));
        assert_eq!(line_col("x = \"éé\" y", 11..12), (1, 10));
    }
}
