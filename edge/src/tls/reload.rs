//! Certificate hot reload for every TLS listener of the node, on SIGHUP and
//! `POST /reload`: each listener re-reads its files and swaps all of its
//! certificates at once, or keeps what it had and says why.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::TlsListener;
use super::sni::CertSet;

/// The node's TLS listeners, for reloading.
#[derive(Debug, Default)]
pub struct CertReloader {
    /// Index in config, bound address, TLS; replaced when a config reload
    /// adds or removes listeners.
    listeners: Mutex<Vec<(usize, SocketAddr, Arc<TlsListener>)>>,
}

/// What one reload did.
#[derive(Debug)]
pub struct ReloadReport {
    /// One entry per TLS listener, config order.
    pub listeners: Vec<ListenerReload>,
}

/// What one listener did on reload.
#[derive(Debug)]
pub struct ListenerReload {
    /// Index in `[[listeners]]`.
    pub index: usize,
    /// Bound address.
    pub addr: SocketAddr,
    /// The new certificates, or why the old ones stay.
    pub outcome: Result<Arc<CertSet>, String>,
}

impl CertReloader {
    /// Follows a config reload's listener set.
    pub fn replace(&self, listeners: Vec<(usize, SocketAddr, Arc<TlsListener>)>) {
        *self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = listeners;
    }

    /// Re-reads every listener's certificate and key files; logs the
    /// outcome of each.
    pub fn reload(&self) -> ReloadReport {
        // A snapshot: reading files must not hold the lock a reload needs.
        let running = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let listeners = running
            .iter()
            .map(|(index, addr, tls)| {
                let outcome = tls.reload();
                match &outcome {
                    Ok(set) => {
                        let certs: Vec<String> = set
                            .certs()
                            .iter()
                            .map(|c| c.cert_file.display().to_string())
                            .collect();
                        tracing::info!(
                            listener = index,
                            %addr,
                            certs = ?certs,
                            "certificates reloaded; new handshakes use them"
                        );
                    }
                    Err(error) => tracing::error!(
                        listener = index,
                        %addr,
                        %error,
                        "certificate reload failed; keeping the certificates already loaded"
                    ),
                }
                ListenerReload {
                    index: *index,
                    addr: *addr,
                    outcome,
                }
            })
            .collect();
        ReloadReport { listeners }
    }
}

impl ReloadReport {
    /// Whether every listener took its new certificates.
    pub fn ok(&self) -> bool {
        self.listeners.iter().all(|l| l.outcome.is_ok())
    }

    /// The report as a JSON object, for the admin API:
    ///
    /// ```json
    /// {"reloaded":false,"listeners":[
    ///   {"listener":1,"addr":"0.0.0.0:443","reloaded":true,
    ///    "certs":[{"cert":"/etc/edge/a.pem","names":["a.example"]}]},
    ///   {"listener":2,"addr":"0.0.0.0:8443","reloaded":false,
    ///    "error":"/etc/edge/b.key: cannot read: ..."}]}
    /// ```
    pub fn to_json(&self) -> String {
        let mut out = format!("{{\"reloaded\":{},\"listeners\":[", self.ok());
        for (i, listener) in self.listeners.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"listener\":{},\"addr\":{},",
                listener.index,
                json_string(&listener.addr.to_string())
            );
            match &listener.outcome {
                Ok(set) => {
                    out.push_str("\"reloaded\":true,\"certs\":[");
                    for (j, cert) in set.certs().iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        let names: Vec<String> =
                            cert.names.iter().map(|n| json_string(n)).collect();
                        let _ = write!(
                            out,
                            "{{\"cert\":{},\"names\":[{}]}}",
                            json_string(&cert.cert_file.display().to_string()),
                            names.join(",")
                        );
                    }
                    out.push_str("]}");
                }
                Err(error) => {
                    let _ = write!(out, "\"reloaded\":false,\"error\":{}}}", json_string(error));
                }
            }
        }
        out.push_str("]}\n");
        out
    }
}

/// A JSON string literal (RFC 8259 §7).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            json_string("a\"b\\c\nd\u{1}é"),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }

    #[test]
    fn report_json() {
        let report = ReloadReport {
            listeners: vec![ListenerReload {
                index: 2,
                addr: "127.0.0.1:8443".parse().unwrap(),
                outcome: Err("/k.pem: cannot read: \"gone\"".to_owned()),
            }],
        };
        assert!(!report.ok());
        assert_eq!(
            report.to_json(),
            "{\"reloaded\":false,\"listeners\":[{\"listener\":2,\"addr\":\"127.0.0.1:8443\",\"reloaded\":false,\"error\":\"/k.pem: cannot read: \\\"gone\\\"\"}]}\n"
        );
        assert_eq!(
            ReloadReport { listeners: vec![] }.to_json(),
            "{\"reloaded\":true,\"listeners\":[]}\n"
        );
    }
}
