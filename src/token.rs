//! The operator token: the bearer secret that guards the control API's module operations.
//!
//! `parachute serve` mints it on first start (256 bits from the OS RNG, hex) into
//! `<home>/operator.token` with mode 0600, and the CLI verbs read the same file. Whoever can
//! read the file may drive the hub, which is exactly the trust boundary of the home itself.
//! The token is compared in constant time and never printed (its `Debug` is redacted).

use std::fmt;
use std::path::{Path, PathBuf};

use rand::TryRngCore;
use subtle::ConstantTimeEq;

/// Bytes of entropy in a minted token.
const TOKEN_BYTES: usize = 32;

/// Shortest token accepted from an existing file (in characters).
const MIN_TOKEN_CHARS: usize = 32;

/// Largest token file the CLI reads: a minted one is 65 bytes.
const MAX_TOKEN_FILE: u64 = 4096;

/// Why the token could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token file: no hub has been started on this home yet.
    #[error(
        "there is no operator token at {} — start the hub once (`parachute serve` or `parachute unit start`) to create it",
        path.display()
    )]
    Missing {
        /// The expected path.
        path: PathBuf,
    },
    /// The file exists but does not hold a usable token.
    #[error(
        "the operator token file {} is malformed ({reason}); delete it and restart `parachute serve` to mint a new one",
        path.display()
    )]
    Malformed {
        /// The token file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is not one this user may trust with the secret (a symlink, not a regular
    /// file, too large, or, when running as root, not owned by the home's owner).
    #[error("refusing to use the operator token file {}: {reason}", path.display())]
    Untrusted {
        /// The token file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading, writing or tightening the file failed.
    #[error("the operator token file could not be accessed: {0}")]
    Io(#[from] parachute_fsx::Error),
    /// The OS random number generator failed (should never happen on a sane system).
    #[error("the OS random number generator failed while minting the operator token: {0}")]
    Rng(String),
}

/// What [`OperatorToken::load_or_mint`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The token.
    pub token: OperatorToken,
    /// Whether it was read or minted.
    pub origin: Origin,
    /// The write that failed: a minted token that is not on disk yet, or an existing file
    /// whose mode could not be tightened to 0600.
    pub unwritten: Option<parachute_fsx::Error>,
}

/// A loaded operator token.
#[derive(Clone)]
pub struct OperatorToken {
    value: String,
    /// The uid owning the file it was read from (the hub's user); `None` when minted here.
    owner: Option<u32>,
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OperatorToken(<redacted>)")
    }
}

/// Whether [`OperatorToken::load_or_create`] found a token or minted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The file existed and held a valid token.
    Existing,
    /// A new token was written.
    Minted,
}

impl OperatorToken {
    /// The CLI's read (see the module doc); a missing file is [`TokenError::Missing`].
    /// `home_owner` is the uid owning the home directory; as root the file must be its.
    pub fn read(path: &Path, home_owner: u32) -> Result<OperatorToken, TokenError> {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let untrusted = |reason: String| TokenError::Untrusted { path: path.to_path_buf(), reason };
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TokenError::Missing { path: path.to_path_buf() });
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(untrusted("it is a symbolic link, which is never followed".to_owned()));
            }
            Err(e) => return Err(untrusted(format!("it cannot be opened ({e})"))),
        };
        let meta = file.metadata().map_err(|e| untrusted(format!("it cannot be inspected ({e})")))?;
        if !meta.file_type().is_file() {
            return Err(untrusted("it is not a regular file".to_owned()));
        }
        if meta.len() > MAX_TOKEN_FILE {
            return Err(untrusted(format!(
                "it is {} bytes; a token file is under {MAX_TOKEN_FILE}",
                meta.len()
            )));
        }
        if nix::unistd::geteuid().is_root() && meta.uid() != home_owner {
            return Err(untrusted(format!(
                "it belongs to uid {}, not to uid {home_owner} who owns the home; as root, only the home owner's token is used",
                meta.uid()
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE)
            .read_to_end(&mut bytes)
            .map_err(|e| untrusted(format!("it cannot be read ({e})")))?;
        let mut token = parse(path, &bytes)?;
        token.owner = Some(meta.uid());
        Ok(token)
    }

    /// The uid owning the file the token was read from: the user the hub runs as.
    pub fn owner(&self) -> Option<u32> {
        self.owner
    }

    /// Loads the token, minting it (mode 0600) when the file is absent. An existing file
    /// with looser permissions is tightened to 0600, since it is a secret.
    #[cfg(test)]
    pub fn load_or_create(path: &Path) -> Result<(OperatorToken, Origin), TokenError> {
        let loaded = OperatorToken::load_or_mint(path)?;
        match loaded.unwritten {
            Some(e) => Err(TokenError::Io(e)),
            None => Ok((loaded.token, loaded.origin)),
        }
    }

    /// [`Self::load_or_create`] for a hub that must run even when its home cannot be
    /// written (full or read-only): a failed write does not lose the token, it is handed
    /// back in [`Loaded::unwritten`] (a minted token then lives in memory only until
    /// [`Self::write_to`] succeeds). Reading and parsing errors are still errors.
    pub fn load_or_mint(path: &Path) -> Result<Loaded, TokenError> {
        if let Some(bytes) = parachute_fsx::read_optional(path)? {
            let token = parse(path, &bytes)?;
            // Same bytes, so this only rewrites when the mode is wrong.
            let unwritten = parachute_fsx::write_atomic_with(path, &bytes, Self::write_options()).err();
            return Ok(Loaded { token, origin: Origin::Existing, unwritten });
        }
        let token = OperatorToken::mint()?;
        let unwritten = token.write_to(path).err();
        Ok(Loaded { token, origin: Origin::Minted, unwritten })
    }

    /// Writes the token to `path` (atomically, mode 0600, parents created).
    pub fn write_to(&self, path: &Path) -> Result<(), parachute_fsx::Error> {
        parachute_fsx::write_atomic_with(path, format!("{}\n", self.value).as_bytes(), Self::write_options())
            .map(drop)
    }

    fn write_options() -> parachute_fsx::WriteOptions {
        parachute_fsx::WriteOptions { mode: 0o600, create_parents: true }
    }

    /// A fresh random token (not written anywhere).
    pub fn mint() -> Result<OperatorToken, TokenError> {
        Ok(OperatorToken { value: random_hex(TOKEN_BYTES)?, owner: None })
    }

    /// The secret, for an `Authorization: Bearer` header.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether `presented` equals the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        // `ct_eq` on slices of different lengths is false without comparing contents; the
        // length of a token is not a secret.
        bool::from(self.value.as_bytes().ct_eq(presented))
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<OperatorToken, TokenError> {
    let malformed =
        |reason: &str| TokenError::Malformed { path: path.to_path_buf(), reason: reason.to_owned() };
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("it is not UTF-8 text"))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(malformed("it is empty"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed("it holds whitespace or control characters inside the token"));
    }
    if value.len() < MIN_TOKEN_CHARS {
        return Err(malformed(&format!(
            "it is {} characters long; at least {MIN_TOKEN_CHARS} are required",
            value.len()
        )));
    }
    Ok(OperatorToken { value: value.to_owned(), owner: None })
}

/// `n` bytes from the OS RNG, as lowercase hex.
pub(crate) fn random_hex(n: usize) -> Result<String, TokenError> {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng.try_fill_bytes(&mut buf).map_err(|e| TokenError::Rng(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn minted_token_is_256_bits_of_hex_with_mode_0600_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("operator.token");
        let (t, origin) = OperatorToken::load_or_create(&p).unwrap();
        assert_eq!(origin, Origin::Minted);
        assert_eq!(t.expose().len(), 64);
        assert!(t.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, origin) = OperatorToken::load_or_create(&p).unwrap();
        assert_eq!(origin, Origin::Existing);
        assert_eq!(again.expose(), t.expose());
        assert_ne!(OperatorToken::mint().unwrap().expose(), t.expose());
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("operator.token");
        std::fs::write(&p, format!("{}\n", "a".repeat(64))).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (t, _) = OperatorToken::load_or_create(&p).unwrap();
        assert_eq!(t.expose(), "a".repeat(64));
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn malformed_files_are_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("operator.token");
        for bad in [
            "",
            "   \n",
            "short",
            "has space inside the token value ok ok ok",
            "\u{7f}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ] {
            std::fs::write(&p, bad).unwrap();
            let err = OperatorToken::load_or_create(&p).unwrap_err();
            assert!(matches!(err, TokenError::Malformed { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("operator.token"), "{err}");
            assert_eq!(std::fs::read_to_string(&p).unwrap(), bad, "a malformed file must not be overwritten");
        }
    }

    #[test]
    fn missing_is_reported_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = OperatorToken::read(&dir.path().join("operator.token"), 0).unwrap_err();
        assert!(matches!(err, TokenError::Missing { .. }));
        assert!(err.to_string().contains("parachute serve"), "{err}");
    }

    #[test]
    fn the_client_read_follows_no_link_and_reads_no_special_or_huge_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(dir.path()).unwrap().uid();
        let secret = dir.path().join("secret.key");
        std::fs::write(&secret, format!("{}\n", "k".repeat(40))).unwrap();
        let p = dir.path().join("operator.token");
        std::os::unix::fs::symlink(&secret, &p).unwrap();
        let err = OperatorToken::read(&p, me).unwrap_err();
        assert!(
            matches!(err, TokenError::Untrusted { .. }) && err.to_string().contains("symbolic link"),
            "{err}"
        );
        std::fs::remove_file(&p).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = OperatorToken::read(&p, me).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "a FIFO must not block: {err}");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "a".repeat(10_000)).unwrap();
        assert!(OperatorToken::read(&p, me).unwrap_err().to_string().contains("10000 bytes"));
        std::fs::write(&p, format!("{}\n", "a".repeat(64))).unwrap();
        let t = OperatorToken::read(&p, me).unwrap();
        assert_eq!((t.expose(), t.owner()), ("a".repeat(64).as_str(), Some(me)));
        if nix::unistd::geteuid().is_root() {
            // Root reading a home another user owns: that user's file only.
            let err = OperatorToken::read(&p, me + 54_321).unwrap_err();
            assert!(err.to_string().contains("not to uid"), "{err}");
        }
    }

    #[test]
    fn matching_is_exact() {
        let t = OperatorToken { value: "ab".repeat(32), owner: None };
        assert!(t.matches("ab".repeat(32).as_bytes()));
        assert!(!t.matches("ab".repeat(31).as_bytes()));
        assert!(!t.matches(format!("{}x", "ab".repeat(32)).as_bytes()));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "OperatorToken(<redacted>)");
    }
}
