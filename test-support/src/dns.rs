//! A scriptable authoritative DNS server on `127.0.0.1:<port from the OS>`
//! (UDP and TCP on the same port), built on hickory-server, for tests of
//! endpoint discovery: the test sets each name's A/AAAA answer and TTL,
//! changes it mid-test, or makes the name fail with SERVFAIL.
//!
//! Names are matched case-insensitively and with or without the final dot.
//! A name never set answers NXDOMAIN.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::oneshot;

/// What a name answers.
#[derive(Debug, Clone)]
enum Answer {
    Addrs { ips: Vec<IpAddr>, ttl: u32 },
    ServFail,
}

#[derive(Debug, Default)]
struct Zone {
    names: Mutex<HashMap<String, Answer>>,
    queries: AtomicU64,
}

impl Zone {
    fn get(&self, name: &str) -> Option<Answer> {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.get(&normalise(name)).cloned()
    }

    fn set(&self, name: &str, answer: Answer) {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.insert(normalise(name), answer);
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A running test DNS server; stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Zone>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on one loopback port and starts answering.
    pub fn start() -> DnsServer {
        // UDP first on port 0, then TCP on the same port; retry if another
        // process holds the TCP side of that port.
        let (udp, tcp) = (0..32)
            .find_map(|_| {
                let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
                let port = udp.local_addr().ok()?.port();
                let tcp = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok()?;
                Some((udp, tcp))
            })
            .expect("dns: bind a UDP+TCP port pair on 127.0.0.1");
        udp.set_nonblocking(true).expect("dns: set_nonblocking");
        tcp.set_nonblocking(true).expect("dns: set_nonblocking");
        let addr = udp.local_addr().expect("dns: local_addr");
        let zone = Arc::new(Zone::default());
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("dns-{addr}"))
            .spawn({
                let zone = zone.clone();
                move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("dns: build tokio runtime");
                    rt.block_on(async move {
                        let mut server = Server::new(Handler { zone });
                        server.register_socket(
                            tokio::net::UdpSocket::from_std(udp).expect("dns: udp socket"),
                        );
                        server.register_listener(
                            tokio::net::TcpListener::from_std(tcp).expect("dns: tcp listener"),
                            Duration::from_secs(5),
                            64,
                        );
                        let _ = shutdown_rx.await;
                        let _ = server.shutdown_gracefully().await;
                    });
                }
            })
            .expect("dns: spawn thread");
        DnsServer {
            addr,
            zone,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The address (UDP and TCP) the server answers on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes `name` answer `ips` (A for IPv4, AAAA for IPv6) with `ttl` seconds.
    pub fn set(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let answer = Answer::Addrs {
            ips: ips.to_vec(),
            ttl,
        };
        self.zone.set(name, answer);
    }

    /// Makes `name` answer SERVFAIL, as a broken upstream resolver would.
    pub fn fail(&self, name: &str) {
        self.zone.set(name, Answer::ServFail);
    }

    /// Queries answered so far (any name, any type).
    pub fn queries(&self) -> u64 {
        self.zone.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Handler {
    zone: Arc<Zone>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        self.zone.queries.fetch_add(1, Ordering::SeqCst);
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            let reply = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response, reply, &request.metadata).await;
        };
        let qname = info.query.name().to_string();
        let qtype = info.query.query_type();
        let records: Vec<Record> = match self.zone.get(&qname) {
            None => {
                let reply = builder.error_msg(&request.metadata, ResponseCode::NXDomain);
                return send(&mut response, reply, &request.metadata).await;
            }
            Some(Answer::ServFail) => {
                let reply = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                return send(&mut response, reply, &request.metadata).await;
            }
            Some(Answer::Addrs { ips, ttl }) => {
                let name = Name::from(info.query.name().clone());
                ips.iter()
                    .filter_map(|ip| match (ip, qtype) {
                        (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                        (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                        _ => None,
                    })
                    .map(|rdata| Record::from_rdata(name.clone(), ttl, rdata))
                    .collect()
            }
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let reply = builder.build(metadata, records.iter(), [], [], []);
        match response.send_response(reply).await {
            Ok(info) => info,
            Err(_) => failed(&request.metadata),
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    reply: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match response.send_response(reply).await {
        Ok(info) => info,
        Err(_) => failed(request),
    }
}

fn failed(request: &Metadata) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = ResponseCode::ServFail;
    hickory_server::proto::op::Header {
        metadata,
        counts: Default::default(),
    }
    .into()
}
