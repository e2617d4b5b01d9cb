//! Stale per-module units (`parachute-<short>.service`, `computer.parachute.<short>`) left
//! by the era before the hub supervised its modules. Left enabled, one starts at the next
//! boot or login and fights the supervised hub for its module's port (upstream hub#522).
//!
//! They are disabled durably through [`ServiceManager::disable`] (not just stopped: upstream
//! W24 booted a LaunchAgent out and it came back at the next login), looked up by exact
//! name, never enumerated. Candidates are the five first-party shorts plus every module in
//! services.json (upstream covered only the five), minus the hub and anything that could
//! name the Cloudflare connector. Never fatal: a failure becomes a warning line naming the
//! unit.

use parachute_manager::{Change, ErrorKind, ServiceManager, UnitId};

use super::legacy::Target;

/// First-party module shorts that shipped per-module units.
pub const FIRST_PARTY: &[&str] = &["notes", "app", "vault", "scribe", "surface"];

/// Whether a short is protected (the hub itself, the connector).
fn protected(short: &str) -> bool {
    short == "hub"
        || short == "cloudflared"
        || short.starts_with("cloudflared-")
        || short.starts_with("cloudflared.")
}

/// The unit ids to disable, sorted, without duplicates.
pub fn candidates(targets: &[Target]) -> Vec<UnitId> {
    let mut ids: Vec<UnitId> = FIRST_PARTY
        .iter()
        .copied()
        .chain(targets.iter().filter_map(|t| t.module.as_ref().map(|m| m.as_str())))
        .filter(|s| !protected(s))
        .filter_map(|s| UnitId::new(s).ok())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The name an operator knows the unit by on this manager.
pub fn display<M: ServiceManager>(manager: &M, id: &UnitId) -> String {
    manager.display_name(id)
}

/// Disables every candidate; returns the names disabled and warning lines.
pub async fn disable<M: ServiceManager>(manager: &M, targets: &[Target]) -> (Vec<String>, Vec<String>) {
    let mut disabled = Vec::new();
    let mut warnings = Vec::new();
    for id in candidates(targets) {
        match manager.disable(&id).await {
            Ok(Change::Changed) => disabled.push(display(manager, &id)),
            Ok(Change::AlreadyInPlace) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!(
                "could not disable the stale unit {} ({}); disable it yourself so it cannot fight the hub for its port",
                display(manager, &id),
                e.message
            )),
        }
    }
    (disabled, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::names::ModuleName;
    use std::path::PathBuf;

    fn t(name: &str) -> Target {
        Target {
            name: name.into(),
            module: Some(ModuleName::parse(name).unwrap()),
            port: 1,
            pidfile: PathBuf::new(),
            names: vec![],
            install_dir: None,
            hub_port: 1939,
        }
    }

    #[test]
    fn candidates_cover_first_party_and_services_json_but_never_hub_or_connector() {
        let ids: Vec<String> =
            candidates(&[t("vault"), t("acme-widget"), t("cloudflared"), t("hub"), t("we%ird")])
                .into_iter()
                .map(|i| i.to_string())
                .collect();
        assert_eq!(ids, ["acme-widget", "app", "notes", "scribe", "surface", "vault"]);
    }
}
