//! Binding the control API's port before anything else happens, and naming whoever holds
//! it when that fails (upstream hub#536: a duplicate `serve` booted modules before it hit
//! the port conflict and two supervisors fought over module ports).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::port_holder::{self, PortHolder};

/// Why the listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something already listens on the port.
    #[error("{}", held_message(*port, holders))]
    Held {
        /// The port.
        port: u16,
        /// Who holds it (empty when `/proc` shows no holder we can see).
        holders: Vec<PortHolder>,
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

fn held_message(port: u16, holders: &[PortHolder]) -> String {
    let who = port_holder::describe_all(holders).unwrap_or_else(|| {
        "a process this user cannot see (another user's, or in another network namespace)".to_owned()
    });
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
            Err(BindError::Held { port, holders: port_holder::on_port(port) })
        }
        Err(source) => Err(BindError::Other { port, source }),
    }
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
        let h = PortHolder {
            pid: 7,
            cmdline: Some("/usr/bin/parachute serve --home /h".into()),
            ..Default::default()
        };
        assert!(held_message(1939, &[h]).contains("another Parachute hub"));
        assert!(held_message(1939, &[]).contains("cannot see"));
    }

    #[test]
    fn a_hostile_holder_command_line_is_escaped() {
        let h = PortHolder { pid: 7, cmdline: Some("x\u{1b}[2J\r[hub] ok".into()), ..Default::default() };
        let text = held_message(1939, &[h]);
        assert!(!text.chars().any(crate::text::is_unsafe_char), "{text:?}");
        assert!(text.contains("x\\e[2J\\r[hub] ok"), "{text}");
    }
}
