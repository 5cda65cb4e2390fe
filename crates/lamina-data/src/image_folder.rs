//! Image folders: `root/<class>/<image>`, one sub-folder per class, classes numbered in sorted
//! folder-name order (torchvision's `ImageFolder` layout). PNG, JPEG and BMP are decoded by the
//! `image` crate, recognised by their content, not their extension.

use crate::file::read_file;
use crate::{InMemoryDataset, LabelData};
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat};
use lamina_core::{Error, Result};
use std::path::{Path, PathBuf};

/// How to turn the images of a folder into samples of shape `[channels, h, w]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFolderOptions {
    /// Output `(height, width)`: each image is resized, keeping its aspect ratio, until it just
    /// covers this size (the short side fits), then the centre is cropped.
    pub size: (usize, usize),
    /// 1 (grey) or 3 (RGB). An alpha channel is dropped and not counted. Channels are counted
    /// on the decoded image: a paletted BMP decodes as RGB even when its palette is grey.
    pub channels: usize,
    /// Per-channel mean subtracted after scaling pixels to `[0, 1]`; empty for 0.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean; empty for 1.
    pub std: Vec<f32>,
    /// An image whose channel count is not `channels` is an error; otherwise it is converted.
    pub strict_channels: bool,
}

impl Default for ImageFolderOptions {
    fn default() -> Self {
        ImageFolderOptions {
            size: (32, 32),
            channels: 3,
            mean: Vec::new(),
            std: Vec::new(),
            strict_channels: false,
        }
    }
}

impl ImageFolderOptions {
    fn check(&self) -> Result<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::Spec(format!(
                "image channels must be 1 or 3, got {}",
                self.channels
            )));
        }
        if self.size.0 == 0 || self.size.1 == 0 {
            return Err(Error::Spec(format!(
                "image size {:?} has a zero side",
                self.size
            )));
        }
        for (what, v) in [("mean", &self.mean), ("std", &self.std)] {
            if !v.is_empty() && v.len() != self.channels {
                return Err(Error::Spec(format!(
                    "{} {what} values for {} channels",
                    v.len(),
                    self.channels
                )));
            }
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::Spec(format!(
                "image std {s} must be a positive number"
            )));
        }
        Ok(())
    }
}

/// Lists the entries of `dir` that `keep` accepts, sorted by name. Hidden entries (names starting
/// with a dot, such as `.DS_Store`) are skipped.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let io = |e: std::io::Error| Error::Io(format!("cannot list {}: {e}", dir.display()));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if !hidden && keep(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every image under `root/<class>/`. Errors name the file: a file that is not a PNG, JPEG
/// or BMP image, an image with the wrong channel count when `strict_channels`, a class folder
/// without images. Files directly in `root` are ignored.
pub fn read_image_folder(
    root: impl AsRef<Path>,
    options: &ImageFolderOptions,
) -> Result<InMemoryDataset> {
    let root = root.as_ref();
    options.check()?;
    let classes = sorted_entries(root, |p| p.is_dir())?;
    if classes.is_empty() {
        return Err(Error::Input(format!(
            "{}: no class sub-folders",
            root.display()
        )));
    }
    let (h, w) = options.size;
    let mut x = Vec::new();
    let mut labels = Vec::new();
    let mut names = Vec::new();
    for (k, dir) in classes.iter().enumerate() {
        let files = sorted_entries(dir, |p| p.is_file())?;
        if files.is_empty() {
            return Err(Error::Input(format!(
                "{}: class folder has no images",
                dir.display()
            )));
        }
        for file in &files {
            let img = decode(file)?;
            let sample = to_sample(&img, options)
                .map_err(|why| Error::Input(format!("{}: {why}", file.display())))?;
            x.extend(sample);
            labels.push(k as i32);
        }
        names.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    InMemoryDataset::new(x, &[options.channels, h, w], LabelData::Classes(labels))?
        .with_class_names(names)
}

/// One image file as a sample of shape `[channels, h, w]` (resized, cropped and normalised as
/// the options say); errors name the file.
pub fn read_image(file: impl AsRef<Path>, options: &ImageFolderOptions) -> Result<Vec<f32>> {
    let file = file.as_ref();
    options.check()?;
    let img = decode(file)?;
    to_sample(&img, options).map_err(|why| Error::Input(format!("{}: {why}", file.display())))
}

/// The image files directly in `dir` (sorted by name, hidden files skipped).
pub fn image_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    sorted_entries(dir.as_ref(), |p| p.is_file())
}

/// Decodes one image file; errors name it.
fn decode(file: &Path) -> Result<DynamicImage> {
    let bytes = read_file(file)?;
    let source = file.display();
    let format = image::guess_format(&bytes)
        .ok()
        .filter(|f| matches!(f, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp))
        .ok_or_else(|| Error::Input(format!("{source}: not an image (PNG, JPEG or BMP)")))?;
    image::load_from_memory_with_format(&bytes, format)
        .map_err(|e| Error::Input(format!("{source}: cannot decode the {format:?} image: {e}")))
}

/// Channel count, resize, centre crop, scaling to `[0, 1]` and normalisation, laid out `[C, H, W]`.
fn to_sample(
    img: &DynamicImage,
    options: &ImageFolderOptions,
) -> std::result::Result<Vec<f32>, String> {
    let color = img.color();
    let has = if color.has_color() { 3 } else { 1 };
    if options.strict_channels && has != options.channels {
        return Err(format!(
            "image has {has} channel(s) ({color:?}), expected {}",
            options.channels
        ));
    }
    let (h, w) = options.size;
    let (ih, iw) = (img.height() as usize, img.width() as usize);
    if ih == 0 || iw == 0 {
        return Err("image has no pixels".into());
    }
    // Scale so the image just covers h × w (the short side fits), then cut out the centre.
    let scale = (h as f64 / ih as f64).max(w as f64 / iw as f64);
    let nh = ((ih as f64 * scale).round() as usize).max(h);
    let nw = ((iw as f64 * scale).round() as usize).max(w);
    let resized = if (nh, nw) == (ih, iw) {
        img.clone()
    } else {
        img.resize_exact(nw as u32, nh as u32, FilterType::Triangle)
    };
    let cropped = resized.crop_imm(
        ((nw - w) / 2) as u32,
        ((nh - h) / 2) as u32,
        w as u32,
        h as u32,
    );
    let c = options.channels;
    let raw: Vec<u8> = if c == 1 {
        cropped.to_luma8().into_raw()
    } else {
        cropped.to_rgb8().into_raw()
    };
    let mut out = vec![0f32; c * h * w];
    for (p, px) in raw.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            let mean = options.mean.get(ch).copied().unwrap_or(0.0);
            let std = options.std.get(ch).copied().unwrap_or(1.0);
            out[ch * h * w + p] = (v as f32 / 255.0 - mean) / std;
        }
    }
    Ok(out)
}
