//! Binding the control API's port before anything else happens, and naming whoever holds
//! it when that fails (upstream hub#536: a duplicate `serve` booted modules before it hit
//! the port conflict and two supervisors fought over module ports).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// One process holding the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command line, when readable.
    pub cmdline: Option<String>,
}

/// Why the listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something already listens on the port.
    #[error("{}", held_message(*port, holders))]
    Held {
        /// The port.
        port: u16,
        /// Who holds it (empty when `/proc` shows no holder we can see).
        holders: Vec<Holder>,
    },
    /// Any other bind failure (permission for a port < 1024, no loopback, …).
    #[error("parachute serve: cannot listen on 127.0.0.1:{port}: {source}.")]
    Other {
        /// The port.
        port: u16,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn held_message(port: u16, holders: &[Holder]) -> String {
    let who = if holders.is_empty() {
        "a process this user cannot see (another user's, or in another network namespace)".to_owned()
    } else {
        holders
            .iter()
            .map(|h| format!("pid {} ({})", h.pid, h.cmdline.as_deref().unwrap_or("command line unreadable")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let looks_like_hub = holders
        .iter()
        .any(|h| h.cmdline.as_deref().is_some_and(|c| c.contains("parachute") && c.contains(" serve")));
    let hint = if looks_like_hub {
        " It looks like another Parachute hub: `parachute status --home <its home>` shows it, and `parachute unit stop` or SIGTERM stops it."
    } else {
        ""
    };
    format!(
        "parachute serve: port {port} on 127.0.0.1 is already in use by {who}. Refusing to start: a second supervisor would fight the running one over module ports, and no module was started. Stop that process first, or pick another port with --port.{hint}"
    )
}

/// Binds `127.0.0.1:port` (non-blocking, ready for tokio). `port` 0 picks a free port.
pub fn bind_loopback(port: u16) -> Result<TcpListener, BindError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpListener::bind(addr) {
        Ok(l) => {
            l.set_nonblocking(true).map_err(|source| BindError::Other { port, source })?;
            Ok(l)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(BindError::Held { port, holders: holders(port) })
        }
        Err(source) => Err(BindError::Other { port, source }),
    }
}

/// Every process listening on `port`, de-duplicated (forking servers share one socket).
pub fn holders(port: u16) -> Vec<Holder> {
    let mut pids: Vec<u32> = parachute_process::procfs::listeners(port).into_iter().map(|l| l.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter().map(|pid| Holder { pid, cmdline: parachute_process::procfs::cmdline(pid) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_names_the_holder() {
        let first = bind_loopback(0).unwrap();
        let port = first.local_addr().unwrap().port();
        let err = bind_loopback(port).unwrap_err();
        let BindError::Held { holders, .. } = &err else { panic!("{err}") };
        assert!(holders.iter().any(|h| h.pid == std::process::id()), "{holders:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains(&format!("port {port}")), "{text}");
    }

    #[test]
    fn a_hub_holder_gets_the_hint() {
        let h = Holder { pid: 7, cmdline: Some("/usr/bin/parachute serve --home /h".into()) };
        assert!(held_message(1939, &[h]).contains("another Parachute hub"));
        assert!(held_message(1939, &[]).contains("cannot see"));
    }
}
