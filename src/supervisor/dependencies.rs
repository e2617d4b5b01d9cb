//! What a `missing_dependency` start error tells a person about the missing binary: why a
//! module needs it, where its docs are and how to install it.
//!
//! Upstream's `startError` for a missing binary carries `why`, `docs_url`, `install`
//! (per platform) and `sysadmin_hint`, and its clients render an install card from them.
//! The facts depend only on the binary's name, so they are looked up here, both when the
//! error is recorded (its one-line description) and when it is serialized (the wire
//! fields): [`StartErrorKind::MissingDependency`](super::StartErrorKind) stays just the
//! binary. Only runtimes modules are started with are listed; any other binary gets the
//! unregistered shape (`why`/`docs_url` null, `install` empty).

use serde::{Deserialize, Serialize};

/// Upstream's `sysadmin_hint` for a binary a module cannot run without.
pub const SYSADMIN_HINT: &str = "Or ask your system administrator to install it for you.";

/// A known binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The file name modules run (`bun`).
    pub binary: &'static str,
    /// Completes "… is required to ___".
    pub why: &'static str,
    /// Where its installation is documented.
    pub docs_url: Option<&'static str>,
    /// The install recipe per platform.
    pub install: InstallRecipes<&'static str>,
}

/// Install commands per platform (`\n` between alternatives); each absent where there is
/// no recipe. On the wire, `{darwin?, linux?, generic?}`, `{}` when nothing is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstallRecipes<S> {
    /// macOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub darwin: Option<S>,
    /// Linux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<S>,
    /// Anywhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<S>,
}

impl<S: AsRef<str>> InstallRecipes<S> {
    /// The recipe for the platform this binary runs on, else the generic one.
    pub fn here(&self) -> Option<&str> {
        let own = if cfg!(target_os = "macos") { &self.darwin } else { &self.linux };
        own.as_ref().or(self.generic.as_ref()).map(AsRef::as_ref)
    }
}

const BUN_INSTALL: &str = "curl -fsSL https://bun.sh/install | bash";

/// The registry. Kept small: the runtimes and programs module start commands name.
const KNOWN: &[Known] = &[
    Known {
        binary: "bun",
        why: "run modules written in TypeScript (most Parachute modules)",
        docs_url: Some("https://bun.sh/docs/installation"),
        install: InstallRecipes {
            darwin: Some("brew install oven-sh/bun/bun"),
            linux: Some(BUN_INSTALL),
            generic: Some(BUN_INSTALL),
        },
    },
    Known {
        binary: "parachute-vault",
        why: "run the vault module",
        docs_url: None,
        install: InstallRecipes {
            darwin: None,
            linux: None,
            generic: Some("bun add -g @openparachute/vault"),
        },
    },
    Known {
        binary: "node",
        why: "run modules written for Node.js",
        docs_url: Some("https://nodejs.org/en/download"),
        install: InstallRecipes {
            darwin: Some("brew install node"),
            linux: Some("sudo apt-get install nodejs\nsudo dnf install nodejs"),
            generic: None,
        },
    },
    Known {
        binary: "python3",
        why: "run modules written in Python",
        docs_url: Some("https://www.python.org/downloads/"),
        install: InstallRecipes {
            darwin: Some("brew install python"),
            linux: Some("sudo apt-get install python3\nsudo dnf install python3"),
            generic: None,
        },
    },
];

/// The registry entry for `binary` (matched on its file name: `/opt/bin/bun` is `bun`).
pub fn lookup(binary: &str) -> Option<&'static Known> {
    let name = binary.rsplit('/').next().unwrap_or(binary);
    KNOWN.iter().find(|k| k.binary == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_by_file_name_and_unknown_binaries_have_no_entry() {
        assert_eq!(lookup("bun").unwrap().binary, "bun");
        assert_eq!(lookup("/home/op/.bun/bin/bun").unwrap().binary, "bun");
        assert!(lookup("parachute-definitely-missing").is_none());
        assert!(lookup("").is_none());
        for k in KNOWN {
            assert!(k.install.here().is_some(), "{} has no recipe for this platform", k.binary);
        }
    }

    #[test]
    fn recipes_serialize_with_only_the_platforms_known() {
        let r = lookup("parachute-vault").unwrap().install;
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"generic":"bun add -g @openparachute/vault"}"#);
        assert_eq!(serde_json::to_string(&InstallRecipes::<String>::default()).unwrap(), "{}");
    }
}
