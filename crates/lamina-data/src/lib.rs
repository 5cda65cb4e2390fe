//! lamina-data: data sets and loaders.
//!
//! - [`Dataset`], the trait the trainer reads, with [`InMemoryDataset`] and the label types.
//! - Readers, each returning an [`InMemoryDataset`], with errors that name the file, the line or
//!   sample and what was wrong: [`read_csv`] (`.csv`, `.csv.gz`), IDX files of MNIST-style sets
//!   ([`read_idx_images`], [`read_idx_labels`], [`idx_dataset`]) and image folders
//!   ([`read_image_folder`]).
//! - [`bundled`]: scikit-learn's digits, breast cancer and diabetes sets, embedded in the binary.
//! - [`Standardizer`], [`train_test_split`], [`train_val_test_split`].
//! - [`AugmentedDataset`]: seeded random crops and flips, drawn per epoch when batches are gathered.
//! - [`DataLoader`]: seeded per-epoch shuffling and batching with background prefetching, the
//!   loop `ModelTrainer::fit` runs on.
//!
//! Every random choice (shuffles, splits, augmentation) comes from [`SplitMix64`] through
//! [`shuffled`], so a seed fixes it on every platform.

mod augment;
mod bundled;
mod csv;
mod dataset;
mod file;
mod idx;
mod image_folder;
mod loader;
mod order;
mod split;
mod standardize;

pub use augment::{Augment, AugmentedDataset};
pub use bundled::{bundled, Bundled, BUNDLED_NAMES};
pub use csv::{parse_csv, read_csv, CsvOptions, Header, LabelColumn, LabelKind};
pub use dataset::{Dataset, InMemoryDataset, LabelData, Labels};
pub use idx::{
    idx_dataset, parse_idx_images, parse_idx_labels, read_idx_dataset, read_idx_images,
    read_idx_labels, IdxImages,
};
pub use image_folder::{image_files, read_image, read_image_folder, ImageFolderOptions};
pub use loader::{Batch, Batches, DataLoader, LoaderOptions};
pub use order::{shuffled, SplitMix64};
pub use split::{train_test_split, train_val_test_split};
pub use standardize::Standardizer;
