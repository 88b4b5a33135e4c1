//! Listening sockets: one `SO_REUSEPORT` socket per worker and address, so
//! the kernel spreads new connections over workers with no shared accept
//! lock (measured cheapest per request here: shared/research/io_uring.md).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog; the kernel caps it at `net.core.somaxconn` (4096 by
/// default since Linux 5.4), so bursts of new connections queue rather than
/// being refused.
const BACKLOG: i32 = 4096;

/// Binds `count` sockets sharing `addr`, without listening yet: a bound
/// socket already holds the address (a conflict fails here), but the
/// kernel hands it connections only once [`listen`] is called, so sockets
/// joining a live port's `SO_REUSEPORT` group take no connections before a
/// worker accepts on them. Port 0 is resolved by the first bind and reused
/// by the others, so all workers serve the same port.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<Socket>> {
    let first = bind_one(addr)?;
    let resolved = local_addr(&first)?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_one(resolved)?);
    }
    Ok(sockets)
}

/// Starts listening on a socket from [`bind_reuseport`].
pub fn listen(socket: Socket) -> io::Result<TcpListener> {
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A bound socket's address.
pub fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))
}

/// Binds a plain (non-shared) socket, for the admin listener.
pub fn bind_single(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = new_socket(addr)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn bind_one(addr: SocketAddr) -> io::Result<Socket> {
    let socket = new_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting while old connections sit in TIME_WAIT must not fail the bind.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_resolves_once_for_all_sockets() {
        let sockets = bind_reuseport("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| local_addr(s).unwrap().port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    }
}

#[cfg(test)]
mod not_listening {
    use super::*;

    #[test]
    fn bound_sockets_take_no_connections_until_they_listen() {
        let sockets = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = local_addr(&sockets[0]).unwrap();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "refused while only bound"
        );
        let listener = listen(sockets.into_iter().next().unwrap()).unwrap();
        assert!(std::net::TcpStream::connect(addr).is_ok());
        drop(listener);
    }
}
