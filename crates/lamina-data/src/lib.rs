//! lamina-data: data sets and loaders. The `Dataset` trait the trainer reads, an in-memory data
//! set, labels.

mod dataset;

pub use dataset::{Dataset, InMemoryDataset, LabelData, Labels};
