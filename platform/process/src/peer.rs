//! Who answers a loopback TCP connection: the uid owning the socket at the other end.
//!
//! A client that is about to send a secret over `127.0.0.1` can ask the kernel, after
//! `connect` and before writing a byte, which user owns the server side of *this*
//! connection. The kernel copies the listener's owner into every connection it accepts at
//! handshake time, so the answer names whoever bound the port, whether or not that process
//! has called `accept` yet, and it cannot change for the life of the connection: nothing
//! can slip in between the check and the write.
//!
//! Linux asks `NETLINK_SOCK_DIAG` for the exact 4-tuple and falls back to the text of
//! `/proc/net/tcp{,6}`. Other platforms report [`std::io::ErrorKind::Unsupported`].

use std::io;
use std::net::SocketAddr;

/// The server side of a connection, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerOwner {
    /// The uid that owns the socket (the user who bound the listening port).
    pub uid: u32,
    /// Its inode, 0 while the connection still waits in the accept queue.
    pub inode: u64,
}

/// The owner of the server side of the connection whose local end is `local` and whose
/// remote end is `remote` (`TcpStream::local_addr` and `peer_addr` of the client).
/// `Ok(None)`: no such connection (it was closed, or lives in another network namespace).
pub fn tcp_peer_owner(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<PeerOwner>> {
    imp::tcp_peer_owner(local, remote)
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use crate::sockdiag::{self, DiagError};

    pub(super) fn tcp_peer_owner(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<PeerOwner>> {
        // The server's socket: its own address is our remote end, its peer is us.
        match sockdiag::socket_owner(remote, local) {
            Ok(found) => Ok(found.map(|(uid, inode)| PeerOwner { uid, inode })),
            Err(DiagError::Unsupported(_) | DiagError::Failed(_)) => from_proc(remote, local),
        }
    }

    /// The `/proc/net/tcp{,6}` fallback: `sl local rem st tx:rx tr:when retrnsmt uid timeout
    /// inode …`. A dual-stack listener's connection from 127.0.0.1 is listed in `tcp6` with
    /// v4-mapped addresses.
    fn from_proc(own: SocketAddr, peer: SocketAddr) -> io::Result<Option<PeerOwner>> {
        let canonical = |a: SocketAddr| match a.ip() {
            std::net::IpAddr::V6(v6) => {
                v6.to_ipv4_mapped().map_or(a, |v4| SocketAddr::new(v4.into(), a.port()))
            }
            std::net::IpAddr::V4(_) => a,
        };
        let (own, peer) = (canonical(own), canonical(peer));
        let mut read_any = false;
        for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
            let Ok(text) = std::fs::read_to_string(file) else { continue };
            read_any = true;
            for line in text.lines().skip(1) {
                let mut f = line.split_ascii_whitespace();
                let (Some(l), Some(r)) = (f.nth(1), f.next()) else { continue };
                let addr = |field: &str| -> Option<SocketAddr> {
                    let (hex, port) = field.split_once(':')?;
                    let ip = crate::procfs::parse_hex_addr(hex, v6)?;
                    Some(canonical(SocketAddr::new(ip, u16::from_str_radix(port, 16).ok()?)))
                };
                if addr(l) != Some(own) || addr(r) != Some(peer) {
                    continue;
                }
                // st tx:rx tr:when retrnsmt uid timeout inode
                let mut rest = f.skip(4);
                let uid = rest.next().and_then(|u| u.parse().ok());
                let inode = rest.nth(1).and_then(|i| i.parse().ok());
                if let (Some(uid), Some(inode)) = (uid, inode) {
                    return Ok(Some(PeerOwner { uid, inode }));
                }
            }
        }
        if read_any {
            Ok(None)
        } else {
            Err(io::Error::other("neither sock_diag nor /proc/net/tcp is readable"))
        }
    }

    #[cfg(test)]
    pub(super) fn from_proc_for_test(own: SocketAddr, peer: SocketAddr) -> io::Result<Option<PeerOwner>> {
        from_proc(own, peer)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub(super) fn tcp_peer_owner(_local: SocketAddr, _remote: SocketAddr) -> io::Result<Option<PeerOwner>> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "socket owners are read on Linux only"))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_an_accepted_and_a_queued_connection_is_the_listener_s_user() {
        let me = nix::unistd::geteuid().as_raw();
        for bind in ["127.0.0.1:0", "[::]:0"] {
            let Ok(l) = std::net::TcpListener::bind(bind) else { continue };
            let port = l.local_addr().unwrap().port();
            let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (local, remote) = (c.local_addr().unwrap(), c.peer_addr().unwrap());
            // Still in the accept queue: no inode yet, but the uid is known.
            let queued = tcp_peer_owner(local, remote).unwrap().expect("the connection is found");
            assert_eq!(queued.uid, me);
            assert_eq!(queued.inode, 0);
            let (_accepted, _) = l.accept().unwrap();
            let owner = tcp_peer_owner(local, remote).unwrap().expect("the connection is found");
            assert_eq!(owner.uid, me);
            assert_ne!(owner.inode, 0);
            let (own, peer) = (remote, local);
            assert_eq!(
                imp::from_proc_for_test(own, peer).unwrap(),
                Some(owner),
                "{bind}: both sources agree"
            );
        }
        // Nothing connected there.
        let gone = "127.0.0.1:9".parse().unwrap();
        assert_eq!(tcp_peer_owner(gone, gone).unwrap(), None);
    }
}
