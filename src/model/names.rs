//! Module names: the row-name → short-name mapping, the [`ModuleName`] newtype that makes a
//! short safe to use as a path component, and the canonical port table.
//!
//! A services.json row carries a manifest name (`parachute-vault`); the supervisor, the
//! home layout and the CLI key everything by a *short* (`vault`). The mapping is a fixed
//! table of first-party names and legacy aliases; every other row keeps its own name as its
//! key. That includes multi-instance vault rows (`parachute-vault-<x>`): collapsing them onto
//! `vault` would make two rows share one pidfile directory and one supervisor slot
//! (upstream W35), so they stay distinct and the boot plan enforces one process per port.
//!
//! A short reaches the file system (`<home>/<short>/.env`), so [`ModuleName`] is the only way
//! to get one into a path: it is checked once, at the boundary, and cannot be built invalid.

use std::fmt;

/// The hub's own canonical port: the default of `serve --port`, of the unit and of the
/// client when `hub-instance.json` names none.
pub const HUB_PORT: u16 = 1939;

/// What the hub's `GET /health` says in `service`: tells a hub from anything else on the
/// port.
pub const HUB_SERVICE: &str = "parachute-hub";

/// Canonical ports of the fixed-port modules (and the hub). 1941, 1945 and 1947–1949 are
/// reserved upstream and deliberately absent.
pub const CANONICAL_PORTS: &[(&str, u16)] = &[
    ("hub", HUB_PORT),
    ("vault", 1940),
    ("notes", 1942),
    ("scribe", 1943),
    ("app", 1944),
    ("surface", 1946),
];

/// First-party manifest names and legacy aliases → short. Anything else keeps its name.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("parachute-vault", "vault"),
    ("parachute-scribe", "scribe"),
    ("parachute-notes", "notes"),
    // Notes was called Lens before the rename; old rows still carry the old manifest name.
    ("parachute-lens", "notes"),
    ("parachute-surface", "surface"),
    ("parachute-app", "app"),
];

/// Longest accepted short, in bytes. A path component may be 255 bytes; the pidfile name
/// (`<short>.pid`) and log name add a suffix, so leave room.
pub const MAX_SHORT_LEN: usize = 200;

/// The key a services.json row is supervised under.
///
/// First-party manifest names and legacy aliases map to their short (`parachute-vault` →
/// `vault`, `parachute-lens` → `notes`); everything else, including `parachute-vault-<x>`
/// rows and third-party modules, keeps its full name.
///
/// ```
/// use parachute::model::names::short_name_for;
/// assert_eq!(short_name_for("parachute-vault"), "vault");
/// assert_eq!(short_name_for("parachute-lens"), "notes");
/// assert_eq!(short_name_for("parachute-vault-work"), "parachute-vault-work");
/// assert_eq!(short_name_for("acme-widget"), "acme-widget");
/// ```
pub fn short_name_for(row_name: &str) -> String {
    SHORT_NAMES.iter().find(|(n, _)| *n == row_name).map_or(row_name, |(_, s)| s).to_owned()
}

/// The canonical port of a fixed-port short (`hub`, `vault`, …), if it has one.
pub fn canonical_port(short: &str) -> Option<u16> {
    CANONICAL_PORTS.iter().find(|(s, _)| *s == short).map(|(_, p)| *p)
}

/// Whether a row name is a vault row (`parachute-vault` or `parachute-vault-*`): the only
/// rows allowed to share a port in services.json.
pub fn is_vault_row(row_name: &str) -> bool {
    row_name == "parachute-vault" || row_name.strip_prefix("parachute-vault-").is_some_and(|r| !r.is_empty())
}

/// Why a string cannot be a [`ModuleName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} cannot be used as a module name: {reason}. Rename the services.json row.")]
pub struct NameError {
    /// The rejected value (shown escaped, so a newline in it cannot forge a log line).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A module short that is safe to use as one path component and as one line of text.
///
/// Rejected: the empty string; anything over [`MAX_SHORT_LEN`] bytes; a leading `.` (so
/// `.`, `..` and hidden names are impossible) or `-` (`--help`); `/` and `\`; NUL, any other
/// control character (newline, tab, DEL, …), any whitespace, and the invisible or
/// direction-changing format characters of [`crate::text::is_format_char`]. Everything else is accepted,
/// including `%`, `$`, quotes and XML specials: they are harmless in a file name, and the
/// formats where they are not (URLs, unit files, plists) escape at their own boundary.
///
/// ```
/// use parachute::model::names::ModuleName;
/// for ok in ["vault", "parachute-vault-work", "acme_widget.v2", "100%", "$HOME", "it's", "<a&b>", "\"q\""] {
///     assert!(ModuleName::parse(ok).is_ok(), "{ok}");
/// }
/// for bad in ["", ".", "..", ".hidden", "a/b", "../etc", "a\\b", "a\nb", "a\rb", "a\0b", "a b", "tab\t", "\u{7f}", "--help", "-x", "a\u{202e}b", "\u{feff}vault", "v\u{200b}ault"] {
///     assert!(ModuleName::parse(bad).is_err(), "{bad:?}");
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleName(String);

impl ModuleName {
    /// Checks `value` and wraps it.
    pub fn parse(value: &str) -> Result<ModuleName, NameError> {
        let reason = if value.is_empty() {
            Some("it is empty")
        } else if value.len() > MAX_SHORT_LEN {
            Some("it is longer than 200 bytes")
        } else if value.starts_with('.') {
            Some("it starts with '.'")
        } else if value.starts_with('-') {
            Some("it starts with '-' (it would read as an option)")
        } else if value.contains(['/', '\\']) {
            Some("it contains a path separator")
        } else if value.chars().any(char::is_control) {
            Some("it contains a control character (newline, NUL, …)")
        } else if value.chars().any(crate::text::is_format_char) {
            Some("it contains an invisible or direction-changing character (U+200B, U+202E, U+FEFF, …)")
        } else if value.chars().any(char::is_whitespace) {
            Some("it contains whitespace")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(NameError { value: value.to_owned(), reason }),
            None => Ok(ModuleName(value.to_owned())),
        }
    }

    /// The short for a services.json row name ([`short_name_for`], then checked).
    pub fn for_row(row_name: &str) -> Result<ModuleName, NameError> {
        ModuleName::parse(&short_name_for(row_name))
    }

    /// The short as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ModuleName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ModuleName {
    type Error = NameError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        ModuleName::parse(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_party_names_and_legacy_aliases_map_to_shorts() {
        for (row, short) in [
            ("parachute-vault", "vault"),
            ("parachute-scribe", "scribe"),
            ("parachute-notes", "notes"),
            ("parachute-lens", "notes"),
            ("parachute-surface", "surface"),
            ("parachute-app", "app"),
        ] {
            assert_eq!(short_name_for(row), short);
        }
    }

    #[test]
    fn multi_vault_and_third_party_rows_keep_their_name_w35() {
        assert_eq!(short_name_for("parachute-vault-work"), "parachute-vault-work");
        assert_eq!(short_name_for("parachute-runner"), "parachute-runner");
        assert_eq!(short_name_for("vault"), "vault");
        assert_eq!(
            short_name_for("Parachute-Vault"),
            "Parachute-Vault",
            "the mapping is exact, not case-folded"
        );
    }

    #[test]
    fn canonical_ports_table() {
        let expect = [
            ("hub", 1939),
            ("vault", 1940),
            ("notes", 1942),
            ("scribe", 1943),
            ("app", 1944),
            ("surface", 1946),
        ];
        for (s, p) in expect {
            assert_eq!(canonical_port(s), Some(p), "{s}");
        }
        assert_eq!(canonical_port("parachute-vault-work"), None);
        assert_eq!(canonical_port("acme"), None);
    }

    #[test]
    fn vault_rows() {
        assert!(is_vault_row("parachute-vault"));
        assert!(is_vault_row("parachute-vault-work"));
        assert!(!is_vault_row("parachute-vault-"));
        assert!(!is_vault_row("vault"));
        assert!(!is_vault_row("parachute-vaultx"));
    }

    #[test]
    fn name_error_names_the_value_escaped() {
        let e = ModuleName::parse("evil\nname").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(r#""evil\nname""#), "{msg}");
        assert!(!msg.contains('\n'), "a hostile value must not break the message into lines: {msg}");
        assert!(ModuleName::parse(&"a".repeat(MAX_SHORT_LEN)).is_ok());
        assert!(ModuleName::parse(&"a".repeat(MAX_SHORT_LEN + 1)).is_err());
    }

    proptest::proptest! {
        /// Whatever is accepted is exactly one ordinary path component.
        #[test]
        fn accepted_names_are_one_normal_path_component(s in "\\PC{0,12}|[./\\\\a-z\\n\\x00 ]{0,6}") {
            if let Ok(n) = ModuleName::parse(&s) {
                let comps: Vec<_> = std::path::Path::new(n.as_str()).components().collect();
                proptest::prop_assert_eq!(comps.len(), 1);
                proptest::prop_assert!(matches!(comps[0], std::path::Component::Normal(_)));
            }
        }
    }

    #[test]
    fn for_row_maps_then_checks() {
        assert_eq!(ModuleName::for_row("parachute-vault").unwrap().as_str(), "vault");
        assert!(ModuleName::for_row("../../etc").is_err());
    }
}
