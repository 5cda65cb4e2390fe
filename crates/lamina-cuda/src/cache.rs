//! Persistent on-disk cache of NVRTC output (sm_90 CUBIN), so a fresh process skips the compiles an
//! earlier one did. Entries are keyed by a stable hash of (source, arch, options, NVRTC version),
//! written atomically (temporary file, then rename) and checked against a checksum of their body
//! when read: a corrupt, truncated or unreadable entry is ignored (the caller recompiles and
//! overwrites it).

use std::path::{Path, PathBuf};

/// First word of every entry, so a file of something else is never taken for PTX.
const MAGIC: &str = "lamina-cubin-v1";

/// Stable 64-bit FNV-1a over the parts, each followed by its length (so parts cannot run into each
/// other). `DefaultHasher` is not used: its output may change between Rust releases, and these
/// keys outlive the process.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for p in parts {
        p.iter().copied().for_each(&mut eat);
        (p.len() as u64)
            .to_le_bytes()
            .into_iter()
            .for_each(&mut eat);
    }
    h
}

/// The cache folder from the environment: `$LAMINA_CACHE_DIR` (empty turns the cache off), else
/// `$XDG_CACHE_HOME/lamina/cuda`, else `$HOME/.cache/lamina/cuda`; `None` when none is set.
pub(crate) fn dir_from(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(d) = var("LAMINA_CACHE_DIR") {
        return (!d.is_empty()).then(|| PathBuf::from(d));
    }
    if let Some(x) = var("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(Path::new(&x).join("lamina").join("cuda"));
    }
    var("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".cache").join("lamina").join("cuda"))
}

/// The cache folder of this process (looked up once).
pub(crate) fn dir() -> Option<&'static Path> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| dir_from(|k| std::env::var(k).ok()))
        .as_deref()
}

fn entry(dir: &Path, key: u64) -> PathBuf {
    dir.join(format!("{key:016x}.cubin"))
}

/// The code stored under `key`, or `None` when it is missing, unreadable or fails its checksum.
pub(crate) fn read(dir: &Path, key: u64) -> Option<Vec<u8>> {
    let mut data = std::fs::read(entry(dir, key)).ok()?;
    let nl = data.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&data[..nl]).ok()?;
    let (magic, sum) = head.split_once(' ')?;
    if magic != MAGIC || u64::from_str_radix(sum, 16).ok()? != stable_hash(&[&data[nl + 1..]]) {
        return None;
    }
    data.drain(..=nl);
    Some(data)
}

/// Stores `code` under `key`: written to a temporary file of this process and thread, then renamed
/// over the entry, so a concurrent reader sees either the old entry, the new one or none.
pub(crate) fn write(dir: &Path, key: u64, code: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        "{key:016x}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut text = format!("{MAGIC} {:016x}\n", stable_hash(&[code])).into_bytes();
    text.extend_from_slice(code);
    let r = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, entry(dir, key)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lamina-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn damaged_entries_are_ignored_and_rewritten() {
        // binary, with newlines and zeros in it
        let code: &[u8] = b"\x7fELF\0\n\x01\x02 body\n\0";
        // (what is done to the entry after a good write, whether it must still read back)
        type Damage = fn(&Path);
        let cases: [(&str, Damage, bool); 7] = [
            ("intact", |_| {}, true),
            ("missing", |p| std::fs::remove_file(p).unwrap(), false),
            (
                "truncated",
                |p| {
                    let t = std::fs::read(p).unwrap();
                    std::fs::write(p, &t[..t.len() - 3]).unwrap()
                },
                false,
            ),
            (
                "flipped byte",
                |p| {
                    let mut t = std::fs::read(p).unwrap();
                    let n = t.len() - 2;
                    t[n] ^= 1;
                    std::fs::write(p, t).unwrap()
                },
                false,
            ),
            (
                "not utf-8",
                |p| std::fs::write(p, [0xff, 0xfe, b'\n', 0]).unwrap(),
                false,
            ),
            (
                "no header",
                |p| std::fs::write(p, "just ptx").unwrap(),
                false,
            ),
            (
                "a folder",
                |p| {
                    std::fs::remove_file(p).unwrap();
                    std::fs::create_dir(p).unwrap()
                },
                false,
            ),
        ];
        for (i, (what, damage, survives)) in cases.into_iter().enumerate() {
            let d = scratch(&format!("damage{i}"));
            let key = stable_hash(&[what.as_bytes()]);
            write(&d, key, code).unwrap();
            damage(&entry(&d, key));
            let got = read(&d, key);
            assert_eq!(got.as_deref(), survives.then_some(code), "{what}");
            if got.is_none() && what != "a folder" {
                // the recompiled PTX replaces the damaged entry
                write(&d, key, code).unwrap();
                assert_eq!(read(&d, key).as_deref(), Some(code), "{what} rewritten");
            }
            // no temporary files are left behind
            let left: Vec<_> = std::fs::read_dir(&d)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(left.is_empty(), "{what}: {left:?}");
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn keys_and_folders() {
        // every part of the key changes it; moving bytes between parts changes it too
        let base = stable_hash(&[b"src", b"sm_90", b"-O3", b"13.0"]);
        for other in [
            stable_hash(&[b"src2", b"sm_90", b"-O3", b"13.0"]),
            stable_hash(&[b"src", b"sm_80", b"-O3", b"13.0"]),
            stable_hash(&[b"src", b"sm_90", b"", b"13.0"]),
            stable_hash(&[b"src", b"sm_90", b"-O3", b"12.8"]),
            stable_hash(&[b"srcs", b"m_90", b"-O3", b"13.0"]),
        ] {
            assert_ne!(base, other);
        }
        // FNV-1a of nothing is its offset basis: the hash is fixed across builds
        assert_eq!(stable_hash(&[]), 0xcbf2_9ce4_8422_2325);
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        const ALL: &[(&str, &str)] = &[
            ("LAMINA_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(dir_from(env(ALL)), Some(PathBuf::from("/c")));
        assert_eq!(
            dir_from(env(&ALL[1..])),
            Some(PathBuf::from("/x/lamina/cuda"))
        );
        assert_eq!(
            dir_from(env(&ALL[2..])),
            Some(PathBuf::from("/h/.cache/lamina/cuda"))
        );
        assert_eq!(
            dir_from(env(&[("LAMINA_CACHE_DIR", ""), ("HOME", "/h")])),
            None
        );
        assert_eq!(dir_from(env(&[])), None);
    }
}
