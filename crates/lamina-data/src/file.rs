//! Reading a file whole, and undoing gzip when the bytes say so (magic `1f 8b`), whatever the
//! file is called.

use flate2::read::GzDecoder;
use lamina_core::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The file's bytes; an `Error::Io` naming the path when it cannot be read.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))
}

/// True when `bytes` start with the gzip magic number.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// `bytes` decompressed when they are gzip, else unchanged. `source` names them in errors.
pub(crate) fn gunzip_if_gzip(bytes: Vec<u8>, source: &str) -> Result<Vec<u8>> {
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    GzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::Input(format!(
                "{source}: gzip stream is truncated or corrupt ({e})"
            ))
        })?;
    Ok(out)
}

/// The file's bytes, decompressed when gzip.
pub(crate) fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    gunzip_if_gzip(read_file(path)?, &path.display().to_string())
}

/// The bytes as text; an `Error::Input` naming `source` and the offset of the first bad byte.
pub(crate) fn into_text(bytes: Vec<u8>, source: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        Error::Input(format!(
            "{source}: not UTF-8 text (bad byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}
