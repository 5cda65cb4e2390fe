//! The real data sets shipped in the repository's `data/` folder (scikit-learn's digits, breast
//! cancer and diabetes; see `data/README.md` for sources and licences), embedded in the binary
//! with `include_bytes!` (about 190 KB) so they load offline from any working directory.

use crate::csv::{parse_csv_from_line, CsvOptions, Header};
use crate::file::{gunzip_if_gzip, into_text};
use crate::{Dataset, InMemoryDataset, LabelData};
use lamina_core::{Error, Result};

const DIGITS: &[u8] = include_bytes!("../../../data/digits.csv.gz");
const BREAST_CANCER: &[u8] = include_bytes!("../../../data/breast_cancer.csv");
const DIABETES_X: &[u8] = include_bytes!("../../../data/diabetes_data_raw.csv.gz");
const DIABETES_Y: &[u8] = include_bytes!("../../../data/diabetes_target.csv.gz");

/// Names [`bundled`] knows.
pub const BUNDLED_NAMES: &[&str] = &["digits", "breast_cancer", "diabetes"];

/// A bundled data set and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundled {
    pub dataset: InMemoryDataset,
    /// Names of the classes (`None` for regression).
    pub class_names: Option<Vec<String>>,
    /// Shape of one sample.
    pub feature_shape: Vec<usize>,
    /// One paragraph: source, size, scaling, labels.
    pub description: &'static str,
}

/// Loads a bundled data set by name: `"digits"`, `"breast_cancer"` or `"diabetes"` (`-` works
/// for `_`, case is ignored).
///
/// - digits: 1,797 8×8 images flattened to 64 features, pixels scaled from 0..16 to [0, 1];
///   10 classes named "0".."9".
/// - breast_cancer: 569 samples × 30 raw features; classes 0 "malignant", 1 "benign".
/// - diabetes: 442 samples × 10 raw features (age, sex as 1/2, bmi, bp, s1..s6, unscaled, unlike
///   scikit-learn's default); float target, disease progression after one year.
pub fn bundled(name: &str) -> Result<Bundled> {
    match name.to_ascii_lowercase().replace('-', "_").as_str() {
        "digits" => digits(),
        "breast_cancer" => breast_cancer(),
        "diabetes" => diabetes(),
        _ => Err(Error::Spec(format!(
            "no bundled data set {name:?}; there are {}",
            BUNDLED_NAMES.join(", ")
        ))),
    }
}

fn embedded_text(bytes: &[u8], source: &str) -> Result<String> {
    into_text(gunzip_if_gzip(bytes.to_vec(), source)?, source)
}

fn digits() -> Result<Bundled> {
    let source = "digits.csv.gz";
    let options = CsvOptions {
        header: Header::Absent,
        ..Default::default()
    };
    let raw = parse_csv_from_line(&embedded_text(DIGITS, source)?, source, 1, &options)?;
    let x = raw.x().iter().map(|&p| p / 16.0).collect();
    let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let dataset = raw.with_x(x)?.with_class_names(names.clone())?;
    Ok(Bundled {
        feature_shape: dataset.sample_shape().to_vec(),
        dataset,
        class_names: Some(names),
        description:
            "Optical Recognition of Handwritten Digits (UCI, via scikit-learn): 1,797 8×8 \
                      grey images flattened row by row to 64 features, pixels scaled from 0..16 to \
                      [0, 1]; 10 classes, the digits 0-9.",
    })
}

fn breast_cancer() -> Result<Bundled> {
    let source = "breast_cancer.csv";
    let text = embedded_text(BREAST_CANCER, source)?;
    // scikit-learn's header: sample count, feature count, then the class names.
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let fields: Vec<&str> = head.trim().split(',').map(str::trim).collect();
    let bad_header = || {
        Error::Input(format!(
            "{source} line 1: expected `n_samples,n_features,class names…`, got {head:?}"
        ))
    };
    let (n, f) = match fields.as_slice() {
        [n, f, _, ..] => (
            n.parse::<usize>().map_err(|_| bad_header())?,
            f.parse::<usize>().map_err(|_| bad_header())?,
        ),
        _ => return Err(bad_header()),
    };
    let names: Vec<String> = fields[2..].iter().map(|s| s.to_string()).collect();
    let options = CsvOptions {
        header: Header::Absent,
        ..Default::default()
    };
    let dataset =
        parse_csv_from_line(body, source, 2, &options)?.with_class_names(names.clone())?;
    if dataset.len() != n || dataset.sample_size() != f {
        return Err(Error::Input(format!(
            "{source}: the header says {n} samples of {f} features, the file has {} of {}",
            dataset.len(),
            dataset.sample_size()
        )));
    }
    Ok(Bundled {
        feature_shape: dataset.sample_shape().to_vec(),
        dataset,
        class_names: Some(names),
        description: "Breast Cancer Wisconsin (Diagnostic) (UCI, via scikit-learn): 569 samples of 30 \
                      unscaled real features (mean, error and worst of ten cell-nucleus measurements); \
                      2 classes, 0 malignant and 1 benign. Standardise before training.",
    })
}

/// Rows of whitespace-separated numbers, each with `cols` values.
fn numeric_rows(text: &str, source: &str, cols: usize) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != cols {
            return Err(Error::Input(format!(
                "{source} line {}: {} fields, expected {cols}",
                i + 1,
                fields.len()
            )));
        }
        for (c, f) in fields.iter().enumerate() {
            match f.parse::<f32>() {
                Ok(v) if v.is_finite() => out.push(v),
                _ => {
                    return Err(Error::Input(format!(
                        "{source} line {}, column {}: {f:?} is not a number",
                        i + 1,
                        c + 1
                    )))
                }
            }
        }
    }
    Ok(out)
}

fn diabetes() -> Result<Bundled> {
    let x = numeric_rows(
        &embedded_text(DIABETES_X, "diabetes_data_raw.csv.gz")?,
        "diabetes_data_raw.csv.gz",
        10,
    )?;
    let y = numeric_rows(
        &embedded_text(DIABETES_Y, "diabetes_target.csv.gz")?,
        "diabetes_target.csv.gz",
        1,
    )?;
    let dataset = InMemoryDataset::new(
        x,
        &[10],
        LabelData::Targets {
            values: y,
            shape: vec![],
        },
    )?;
    Ok(Bundled {
        feature_shape: dataset.sample_shape().to_vec(),
        dataset,
        class_names: None,
        description: "Diabetes (Efron et al. 2004, via scikit-learn): 442 patients, 10 raw baseline \
                      features (age, sex coded 1/2, BMI, blood pressure, six serum measurements s1-s6), \
                      not the centred/scaled copy scikit-learn returns by default; the target is disease \
                      progression one year later (25-346). Standardise before training.",
    })
}
