//! Who is on the other end of a loopback TCP connection: the owner of the
//! client socket, asked of the kernel's socket table (`NETLINK_SOCK_DIAG`,
//! one exact lookup, as `ss` does). A worker's Runtime API port accepts only
//! its worker's user.
//!
//! Written against the kernel's ABI with `libc` (a few fixed-layout structs)
//! rather than a netlink crate: one request and one reply.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const HEADER: usize = 16;
/// `inet_diag_msg`: family, state, timer, retrans (4), sockid (48), expires,
/// rqueue, wqueue (12), then uid.
const UID_OFFSET: usize = HEADER + 4 + 48 + 12;

/// The user id owning the client socket of a connection accepted on `local`
/// from `peer`, both IPv4 or both IPv6, on this network namespace.
pub fn socket_owner(local: SocketAddr, peer: SocketAddr) -> io::Result<u32> {
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let request = request(peer, local)?;
    // SAFETY: the buffer outlives the call; the kernel reads `len` bytes.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 512];
    // SAFETY: the kernel writes at most `reply.len()` bytes into it.
    let got = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            reply.as_mut_ptr().cast(),
            reply.len(),
            0,
        )
    };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    parse_reply(reply.get(..got).unwrap_or_default())
}

/// An exact-match `SOCK_DIAG_BY_FAMILY` request for the socket bound to
/// `source` and connected to `destination`.
fn request(source: SocketAddr, destination: SocketAddr) -> io::Result<Vec<u8>> {
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return Err(io::Error::other("mixed address families")),
    };
    let mut body = Vec::with_capacity(56);
    body.push(u8::try_from(family).map_err(io::Error::other)?);
    body.push(u8::try_from(libc::IPPROTO_TCP).map_err(io::Error::other)?);
    body.push(0); // no extensions
    body.push(0);
    body.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    for address in [source.ip(), destination.ip()] {
        let mut words = [0u8; 16];
        match address {
            IpAddr::V4(v4) => words[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => words.copy_from_slice(&v6.octets()),
        }
        body.extend_from_slice(&words);
    }
    body.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    body.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    body.extend_from_slice(&u32::MAX.to_ne_bytes());

    let len = u32::try_from(HEADER + body.len()).map_err(io::Error::other)?;
    let mut message = Vec::with_capacity(HEADER + body.len());
    message.extend_from_slice(&len.to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // to the kernel
    message.extend_from_slice(&body);
    Ok(message)
}

fn parse_reply(reply: &[u8]) -> io::Result<u32> {
    let word = |at: usize| -> io::Result<u32> {
        reply
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(|| io::Error::other("short reply from the socket table"))
    };
    let kind = reply
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or_else(|| io::Error::other("short reply from the socket table"))?;
    if kind == NLMSG_ERROR {
        let code = i32::from_ne_bytes(word(HEADER)?.to_ne_bytes());
        return Err(io::Error::from_raw_os_error(-code));
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Err(io::Error::other(format!(
            "unexpected reply {kind} from the socket table"
        )));
    }
    word(UID_OFFSET)
}

/// A listener that hands over only connections whose client socket belongs
/// to one user: a worker's Runtime API port, where any other local process
/// (another app's worker, a local user) is turned away.
pub struct OwnedBy {
    inner: tokio::net::TcpListener,
    local: SocketAddr,
    uid: u32,
}

impl OwnedBy {
    pub fn new(inner: tokio::net::TcpListener, uid: u32) -> io::Result<Self> {
        let local = inner.local_addr()?;
        Ok(Self { inner, local, uid })
    }
}

impl axum::serve::Listener for OwnedBy {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = axum::serve::Listener::accept(&mut self.inner).await;
            match socket_owner(self.local, peer) {
                Ok(uid) if uid == self.uid => return (stream, peer),
                Ok(uid) => {
                    tracing::warn!(peer = %peer, uid, expected = self.uid, "refused a connection to a worker's Runtime API from another user");
                }
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "refused a connection to a worker's Runtime API: its owner is unknown");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_owner_of_a_loopback_client() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let owner = socket_owner(listener.local_addr().unwrap(), peer).unwrap();
        // SAFETY: no arguments, no memory.
        assert_eq!(owner, unsafe { libc::geteuid() });
    }

    #[test]
    fn an_unknown_connection_is_an_error() {
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(socket_owner(local, peer).is_err());
    }
}
