//! [`ConfigError`]: one problem in a config file, with where it is and what
//! was expected, ready to print as `file:line:column: key: message`.
//!
//! Every way a config can fail (unreadable file, TOML syntax, unknown key,
//! wrong type, failed validation) ends up here, so `edge check` and
//! `POST /reload` report all of them the same way.

use std::path::{Path, PathBuf};

use crate::locate::{KeyPath, line_col, locate};
use crate::validate::Invalid;

/// A problem in a config file.
///
/// Displays as `{file}:{line}:{column}: {key}: {message}`, without the
/// `{key}: ` part when `key` is empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {}{}", .file.display(), .line, .column, key_prefix(.key), .message)]
pub struct ConfigError {
    /// The config file, as given to [`load`](crate::load) or [`parse`](crate::parse).
    pub file: PathBuf,
    /// 1-based line of the offending key or value; 0 when unknown (unreadable file).
    pub line: usize,
    /// 1-based column, in characters; 0 when unknown.
    pub column: usize,
    /// Key path like `sites[0].pool`; empty for whole-document errors.
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl ConfigError {
    /// The file could not be read at all.
    pub(crate) fn unreadable(file: &Path, err: &std::io::Error) -> Self {
        ConfigError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read config file: {err}"),
        }
    }

    /// The text is not valid TOML.
    pub(crate) fn syntax(file: &Path, src: &str, err: &toml::de::Error) -> Self {
        let (line, column) = err.span().map_or((1, 1), |span| line_col(src, span));
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            key: String::new(),
            message: err.message().to_owned(),
        }
    }

    /// Valid TOML that does not fit the schema.
    pub(crate) fn schema(
        file: &Path,
        src: &str,
        err: &serde_path_to_error::Error<toml::de::Error>,
    ) -> Self {
        let inner = err.inner();
        let message = inner.message();
        let mut path = KeyPath::from_serde(err.path());
        // An unknown key is already the last segment of the tracked path; a
        // missing one never got there, so the path ends at its table.
        if let Some(name) = quoted_after(message, "missing field `") {
            path = path.key(name);
        }
        let (line, column) = match inner.span() {
            Some(span) => line_col(src, span),
            None => locate(src, &path),
        };
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            key: path.to_string(),
            message: message.to_owned(),
        }
    }

    /// The config parsed but breaks a rule of [`validate`](crate::validate).
    pub(crate) fn invalid(file: &Path, src: &str, invalid: Invalid) -> Self {
        let (line, column) = locate(src, &invalid.path);
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            key: invalid.path.to_string(),
            message: invalid.message,
        }
    }
}

/// The name in serde's "unknown field `name`, ..." style messages.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.find('`').map(|end| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(key: &str) -> ConfigError {
        ConfigError {
            file: PathBuf::from("edge.toml"),
            line: 3,
            column: 7,
            key: key.to_owned(),
            message: "bad".to_owned(),
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            error("sites[0].pool").to_string(),
            "edge.toml:3:7: sites[0].pool: bad"
        );
        assert_eq!(error("").to_string(), "edge.toml:3:7: bad");
    }

    #[test]
    fn names_from_serde_messages() {
        let cases = [
            ("missing field `pool`", Some("pool")),
            ("missing field `health`, and more", Some("health")),
            ("unknown field `pool`", None),
        ];
        for (message, want) in cases {
            assert_eq!(quoted_after(message, "missing field `"), want);
        }
    }
}
