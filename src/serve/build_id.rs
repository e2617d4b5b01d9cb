//! The running image's build identity, for `/health`'s `buildId`: after an in-place
//! upgrade (issue 17) the pid, the nonce and often the version are unchanged, and this is
//! how a client or a test tells which binary answers.
//!
//! On Linux it is the ELF `NT_GNU_BUILD_ID` note of `/proc/self/exe` (the image actually
//! running, even after the file at its path was replaced), read from the program headers
//! only: a few kilobytes, never a hash of the whole binary. `None` when the image has no
//! such note or is not ELF (macOS).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::OnceLock;

/// The running image's build id, read once.
pub fn current() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| of_file(Path::new("/proc/self/exe"))).as_deref()
}

/// The GNU build id of the ELF file at `path`, as lowercase hex.
pub fn of_file(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).ok()?;
    // 64-bit little-endian ELF only (every Linux target this hub ships for).
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let (phoff, phentsize, phnum) =
        (u64_at(&eh, 32), usize::from(u16_at(&eh, 54)), usize::from(u16_at(&eh, 56)));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut ph).ok()?;
    const PT_NOTE: u32 = 4;
    const NT_GNU_BUILD_ID: u32 = 3;
    for entry in ph.chunks_exact(phentsize) {
        if u32_at(entry, 0) != PT_NOTE {
            continue;
        }
        let (off, size) = (u64_at(entry, 8), u64_at(entry, 32));
        if size > 64 * 1024 {
            continue;
        }
        let mut notes = vec![0u8; usize::try_from(size).ok()?];
        f.seek(SeekFrom::Start(off)).ok()?;
        f.read_exact(&mut notes).ok()?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let (namesz, descsz, kind) =
                (u32_at(&notes, at) as usize, u32_at(&notes, at + 4) as usize, u32_at(&notes, at + 8));
            let name_at = at + 12;
            let desc_at = name_at + namesz.next_multiple_of(4);
            let end = desc_at + descsz.next_multiple_of(4);
            if end > notes.len() {
                break;
            }
            if kind == NT_GNU_BUILD_ID && notes[name_at..name_at + namesz] == *b"GNU\0" {
                return Some(notes[desc_at..desc_at + descsz].iter().map(|b| format!("{b:02x}")).collect());
            }
            at = end;
        }
    }
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_the_note_and_sees_a_patched_copy_differ() {
        let exe = std::env::current_exe().unwrap();
        let id = of_file(&exe).expect("the test binary has a GNU build id (the linker's --build-id)");
        assert!(id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(current(), Some(id.as_str()), "/proc/self/exe is this very file");

        // A copy with one byte of the id changed reads as that other id.
        let mut bytes = std::fs::read(&exe).unwrap();
        let raw: Vec<u8> =
            (0..id.len()).step_by(2).map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap()).collect();
        let at = bytes.windows(raw.len()).position(|w| w == raw).unwrap();
        bytes[at] ^= 0xff;
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        std::fs::write(&copy, &bytes).unwrap();
        let other = of_file(&copy).unwrap();
        assert_ne!(other, id);
        assert_eq!(other[2..], id[2..]);

        assert_eq!(of_file(Path::new("/etc/hostname")), None, "not ELF");
    }
}
