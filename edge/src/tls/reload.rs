//! Certificate hot reload for every TLS listener of the node, on SIGHUP and
//! `POST /reload`: each listener re-reads its files and swaps all of its
//! certificates at once, or keeps what it had and says why.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};

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
impl Serialize for ReloadReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut report = serializer.serialize_struct("ReloadReport", 2)?;
        report.serialize_field("reloaded", &self.ok())?;
        report.serialize_field("listeners", &self.listeners)?;
        report.end()
    }
}

/// One entry of [`ReloadReport`]'s `listeners`: `certs` when the listener
/// took its new files, `error` when it kept the old ones.
impl Serialize for ListenerReload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut listener = serializer.serialize_map(Some(4))?;
        listener.serialize_entry("listener", &self.index)?;
        listener.serialize_entry("addr", &self.addr)?;
        listener.serialize_entry("reloaded", &self.outcome.is_ok())?;
        match &self.outcome {
            Ok(set) => {
                let certs: Vec<ReloadedCert<'_>> = set
                    .certs()
                    .iter()
                    .map(|cert| ReloadedCert {
                        cert: cert.cert_file.display().to_string(),
                        names: &cert.names,
                    })
                    .collect();
                listener.serialize_entry("certs", &certs)?;
            }
            Err(error) => listener.serialize_entry("error", error)?,
        }
        listener.end()
    }
}

/// A certificate a listener took: its file and the names it carries.
#[derive(Serialize)]
struct ReloadedCert<'a> {
    cert: String,
    names: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;

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
            serde_json::to_string(&report).unwrap(),
            "{\"reloaded\":false,\"listeners\":[{\"listener\":2,\"addr\":\"127.0.0.1:8443\",\"reloaded\":false,\"error\":\"/k.pem: cannot read: \\\"gone\\\"\"}]}"
        );
        assert_eq!(
            serde_json::to_string(&ReloadReport { listeners: vec![] }).unwrap(),
            "{\"reloaded\":true,\"listeners\":[]}"
        );
    }
}
