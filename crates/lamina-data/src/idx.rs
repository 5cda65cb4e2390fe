//! IDX files, the format of MNIST and Fashion-MNIST: magic `00 00 <type> <rank>`, `rank`
//! big-endian u32 dimensions, then the values. Files may be raw or gzip (recognised by the magic
//! bytes). Only unsigned-byte data (type `0x08`), as those sets use, is read.

use crate::file::{gunzip_if_gzip, read_file};
use crate::{InMemoryDataset, LabelData};
use lamina_core::{Error, Result};
use std::path::Path;

/// The images of an IDX file: `count` images of `rows × cols` bytes, row-major, one after another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads an IDX image file (rank 3: count, rows, cols).
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let path = path.as_ref();
    parse_idx_images(read_file(path)?, &path.display().to_string())
}

/// Reads an IDX label file (rank 1: count).
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    parse_idx_labels(read_file(path)?, &path.display().to_string())
}

/// Parses the bytes of an IDX image file (raw or gzip); `source` names it in errors.
pub fn parse_idx_images(bytes: Vec<u8>, source: &str) -> Result<IdxImages> {
    let (dims, pixels) = parse_idx(bytes, source, 3, "images")?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(Error::Input(format!(
            "{source}: images of {}×{} pixels",
            dims[1], dims[2]
        )));
    }
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Parses the bytes of an IDX label file (raw or gzip); `source` names it in errors.
pub fn parse_idx_labels(bytes: Vec<u8>, source: &str) -> Result<Vec<u8>> {
    Ok(parse_idx(bytes, source, 1, "labels")?.1)
}

/// Images scaled from bytes to `[0, 1]` as samples of shape `[1, rows, cols]`, with the labels as
/// class indices.
pub fn idx_dataset(images: &IdxImages, labels: &[u8]) -> Result<InMemoryDataset> {
    if images.count != labels.len() {
        return Err(Error::Input(format!(
            "{} images but {} labels",
            images.count,
            labels.len()
        )));
    }
    let x = images.pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let classes = labels.iter().map(|&l| l as i32).collect();
    InMemoryDataset::new(
        x,
        &[1, images.rows, images.cols],
        LabelData::Classes(classes),
    )
}

/// [`idx_dataset`] of the two files.
pub fn read_idx_dataset(
    images: impl AsRef<Path>,
    labels: impl AsRef<Path>,
) -> Result<InMemoryDataset> {
    let (img_path, label_path) = (images.as_ref(), labels.as_ref());
    let images = read_idx_images(img_path)?;
    let labels = read_idx_labels(label_path)?;
    idx_dataset(&images, &labels).map_err(|e| {
        Error::Input(format!(
            "{} and {}: {e}",
            img_path.display(),
            label_path.display()
        ))
    })
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// The dimensions and the data of an unsigned-byte IDX file of rank `rank`.
fn parse_idx(
    bytes: Vec<u8>,
    source: &str,
    rank: usize,
    what: &str,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = gunzip_if_gzip(bytes, source)?;
    let err = |msg: String| Error::Input(format!("{source}: {msg}"));
    if bytes.len() < 4 {
        return Err(err(format!(
            "truncated: {} bytes, an IDX header needs at least 4",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(format!(
            "not an IDX file (magic bytes {:02x} {:02x} {:02x} {:02x}, expected 00 00 08 0{rank})",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    let (code, got_rank) = (bytes[2], bytes[3] as usize);
    if code != 0x08 {
        return Err(err(format!(
            "IDX element type 0x{code:02x} ({}) is not supported; only unsigned bytes (0x08) are",
            type_name(code)
        )));
    }
    if got_rank != rank {
        return Err(err(format!(
            "IDX {what} must have {rank} dimension(s), the file has {got_rank}"
        )));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(err(format!(
            "truncated: {} bytes, the IDX header needs {header}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let need = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(format!("dimensions {dims:?} are too large")))?;
    let have = bytes.len() - header;
    if have < need {
        return Err(err(format!(
            "truncated: the header's dimensions {dims:?} need {need} bytes of data, the file has {have}"
        )));
    }
    if have > need {
        return Err(err(format!(
            "{} bytes after the {need} bytes of data that the dimensions {dims:?} describe",
            have - need
        )));
    }
    let mut data = bytes;
    data.drain(..header);
    Ok((dims, data))
}
