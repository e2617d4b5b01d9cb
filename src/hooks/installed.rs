//! Reading an installed hub unit back: which home and port it serves, who it runs as and
//! what `PATH` it was given, so a package upgrade can re-render it for the new binary
//! without asking anyone (a maintainer script has no one to ask).
//!
//! The unit file is the only record of how the operator set the hub up: the home and port
//! are in its argv (`serve --home H --port P`, as [`crate::hub_unit`] writes it), the account
//! in `User=`/`UserName`, and any `PARACHUTE_EXTRA_PATH` entries at the front of `PATH`.
//! Units written by the upstream TypeScript hub (`<bun> <cli.ts> serve`, with
//! `PARACHUTE_HOME` and `PORT` in the environment) are read too, so an upgrade moves such a
//! box onto this binary's unit (upstream W4/W33: its units were never refreshed).
//!
//! The file itself is read back by its backend ([`ServiceManager::read_installed`], with
//! the same escaping model as its renderer); this module only interprets what it says.

use std::path::{Path, PathBuf};

use parachute_manager::{InstalledUnit, Scope, UnitSpec};

use crate::model::home::Home;

/// What an installed hub unit says about the hub it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledHub {
    /// The unit as its backend read it back.
    pub unit: InstalledUnit,
}

impl InstalledHub {
    /// The hub's view of an installed unit.
    pub fn new(unit: InstalledUnit) -> InstalledHub {
        InstalledHub { unit }
    }

    /// The account the unit runs as, when set.
    pub fn run_as_user(&self) -> Option<&str> {
        self.unit.run_as_user.as_deref()
    }

    /// The home the unit serves: `--home H` in argv, else `PARACHUTE_HOME` in its environment.
    pub fn home(&self) -> Result<Home, String> {
        let raw = flag_value(&self.unit.argv, "--home")
            .or_else(|| self.unit.env_var("PARACHUTE_HOME").map(str::to_owned));
        let raw = raw.ok_or_else(|| {
            "its command has no --home and its environment no PARACHUTE_HOME, so the home it serves is unknown"
                .to_owned()
        })?;
        Home::new(&raw).map_err(|e| format!("its home {raw:?} cannot be used: {e}"))
    }

    /// The port the unit serves: `--port P` in argv, else `PORT`, else the default 1939.
    pub fn port(&self) -> Result<u16, String> {
        match flag_value(&self.unit.argv, "--port").or_else(|| self.unit.env_var("PORT").map(str::to_owned)) {
            None => Ok(crate::model::names::HUB_PORT),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("its port {p:?} is not a port number (1-65535)")),
            },
        }
    }

    /// The user home its `PATH` was built for, and the operator's extra `PATH` entries (those
    /// that [`crate::hub_unit::hub_path`] would not add by itself), in their order.
    pub fn path_parts(&self) -> (Option<PathBuf>, Option<String>) {
        let Some(path) = self.unit.env_var("PATH") else { return (None, None) };
        let entries: Vec<&str> = path.split(':').filter(|s| !s.is_empty()).collect();
        // The home is the X with both X/.bun/bin and X/.local/bin (hub_path adds both), so an
        // extra entry that happens to end in .bun/bin is not taken for it.
        let bun: Vec<&str> = entries.iter().filter_map(|e| e.strip_suffix("/.bun/bin")).collect();
        let local: Vec<&str> = entries.iter().filter_map(|e| e.strip_suffix("/.local/bin")).collect();
        let user_home = bun
            .iter()
            .find(|h| local.contains(h))
            .or(bun.first())
            .or(local.first())
            .filter(|h| h.starts_with('/'))
            .map(PathBuf::from);
        let standard = crate::hub_unit::hub_path(user_home.as_deref(), None);
        let standard: std::collections::HashSet<&str> = standard.split(':').collect();
        let extra: Vec<&str> = entries.into_iter().filter(|e| !standard.contains(e)).collect();
        (user_home, (!extra.is_empty()).then(|| extra.join(":")))
    }

    /// The hub spec this binary would install in place of this unit: same home, port,
    /// account and extra `PATH` entries, running `exec`. `fallback_user_home` is used for
    /// `PATH` when the unit's own `PATH` does not say whose home it was built for.
    pub fn respec(
        &self,
        exec: &Path,
        scope: Scope,
        fallback_user_home: Option<&Path>,
    ) -> Result<UnitSpec, String> {
        let home = self.home()?;
        let port = self.port()?;
        let (user_home, extra) = self.path_parts();
        let user_home = user_home.as_deref().or(fallback_user_home);
        let run_as = match scope {
            Scope::System => self.run_as_user(),
            Scope::User => None,
        };
        Ok(crate::hub_unit::hub_unit_spec(&home, port, exec, user_home, extra.as_deref(), run_as))
    }
}

/// The value after `flag` (`--home H`) or in `--home=H`, the last one winning as in clap.
fn flag_value(argv: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == flag {
            found = it.next().cloned();
        } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        }
    }
    found
}
