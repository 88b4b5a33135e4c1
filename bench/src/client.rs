//! A minimal HTTP/1.1 client for the harness's own requests: warming a
//! cache, checking that a peer answers, and the coalescing storm. Each
//! request uses its own connection with `Connection: close` and reads to
//! EOF, so no framing logic is needed and every peer is treated the same.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long one harness request may take, connection to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response as the harness needs it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Bytes after the head (chunk framing included, if any).
    pub body_len: usize,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The values of header `name` (lower case), joined with `, ` as
    /// RFC 9110 §5.3 allows; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

/// The request bytes for `GET path` with `Connection: close`.
pub fn request_bytes(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: edge-bench\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `request` on an open connection and reads the answer to EOF.
pub async fn exchange(mut stream: TcpStream, request: &[u8]) -> anyhow::Result<Answer> {
    stream.write_all(request).await.context("sending")?;
    let mut raw = Vec::with_capacity(4096);
    stream.read_to_end(&mut raw).await.context("reading")?;
    parse(&raw)
}

/// `GET path` on a new connection, within [`REQUEST_TIMEOUT`].
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    let request = request_bytes(addr, path);
    let attempt = async {
        let stream = TcpStream::connect(addr).await.context("connecting")?;
        exchange(stream, &request).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, attempt)
        .await
        .with_context(|| format!("GET http://{addr}{path}: no answer in {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("GET http://{addr}{path}"))
}

/// Parses a raw HTTP/1.1 response.
pub fn parse(raw: &[u8]) -> anyhow::Result<Answer> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!(
            "no complete response head in {} bytes: {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        );
    };
    let head = std::str::from_utf8(&raw[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Answer {
        status,
        body_len: raw.len() - head_end - 4,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body_length() {
        let raw = b"HTTP/1.1 200 OK\r\nCache-Status: edge-bench; hit\r\nAge: 3\r\n\r\nhello";
        let answer = parse(raw).unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body_len, 5);
        assert_eq!(
            answer.header("cache-status").as_deref(),
            Some("edge-bench; hit")
        );
        assert_eq!(answer.header("age").as_deref(), Some("3"));
        assert_eq!(answer.header("via"), None);
    }

    #[test]
    fn refuses_a_truncated_head() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nAge: 3\r\n").is_err());
        assert!(parse(b"nonsense\r\n\r\n").is_err());
    }
}
