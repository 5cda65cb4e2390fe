//! CSV reader: numeric feature columns and one label column, from `.csv` or gzip-compressed
//! `.csv.gz` (recognised by the gzip magic bytes, not the name).
//!
//! Dialect: one record per line (blank lines are skipped), fields separated by `delimiter`
//! and optionally enclosed in double quotes (`""` inside quotes is a quote). A whitespace
//! delimiter (`' '` or `'\t'`) means "any run of spaces and tabs", for files such as
//! scikit-learn's diabetes data; quoting is then not recognised. Feature values must be finite
//! numbers: an empty field, text, NaN or infinity is an error naming the line and the column.

use crate::file::{into_text, read_maybe_gzip};
use crate::{InMemoryDataset, LabelData};
use lamina_core::{Error, Result};
use std::path::Path;

/// Whether the first record names the columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Header {
    /// A header when a feature field of the first record is not a number, or when the label
    /// column is chosen by name.
    #[default]
    Auto,
    Present,
    Absent,
}

/// Which column holds the label.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LabelColumn {
    #[default]
    Last,
    First,
    /// 0-based column index.
    Index(usize),
    /// Column named so in the header.
    Name(String),
}

/// What the label column means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LabelKind {
    /// Class indices: integers `0..k` (integral float text such as `3.0` too), or any text, in
    /// which case the distinct texts in sorted order are classes `0..k` and become the data set's
    /// class names.
    #[default]
    Classes,
    /// One float target per row (regression).
    Targets,
}

/// How to read a CSV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    pub header: Header,
    pub label_column: LabelColumn,
    pub label_kind: LabelKind,
    /// Field separator; whitespace means runs of spaces and tabs.
    pub delimiter: char,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: Header::Auto,
            label_column: LabelColumn::Last,
            label_kind: LabelKind::Classes,
            delimiter: ',',
        }
    }
}

/// Reads a CSV file (plain or gzip) into a data set of samples of shape `[features]`.
pub fn read_csv(path: impl AsRef<Path>, options: &CsvOptions) -> Result<InMemoryDataset> {
    let path = path.as_ref();
    let source = path.display().to_string();
    let text = into_text(read_maybe_gzip(path)?, &source)?;
    parse_csv(&text, &source, options)
}

/// Parses CSV text; `source` names it in errors (a file name, `<stdin>`).
pub fn parse_csv(text: &str, source: &str, options: &CsvOptions) -> Result<InMemoryDataset> {
    parse_csv_from_line(text, source, 1, options)
}

/// A record: its 1-based line number and fields (trimmed, unquoted).
struct Record {
    line: usize,
    fields: Vec<String>,
}

/// Splits one line into fields. Errors on an unterminated quote.
fn split_fields(line: &str, delimiter: char) -> std::result::Result<Vec<String>, String> {
    if delimiter.is_whitespace() {
        return Ok(line.split_whitespace().map(str::to_string).collect());
    }
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        if quoted {
            if ch == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(ch);
            }
        } else if ch == '"' && cur.trim().is_empty() {
            cur.clear();
            quoted = true;
        } else if ch == delimiter {
            fields.push(std::mem::take(&mut cur).trim().to_string());
        } else {
            cur.push(ch);
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(cur.trim().to_string());
    Ok(fields)
}

fn is_number(s: &str) -> bool {
    s.parse::<f64>().is_ok()
}

/// Parses CSV text whose first line is line `first_line` of `source` (for error messages when a
/// caller has consumed lines before, as the bundled breast-cancer header is).
pub(crate) fn parse_csv_from_line(
    text: &str,
    source: &str,
    first_line: usize,
    options: &CsvOptions,
) -> Result<InMemoryDataset> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = first_line + i;
        let fields = split_fields(line, options.delimiter)
            .map_err(|why| Error::Input(format!("{source} line {line_no}: {why}")))?;
        records.push(Record {
            line: line_no,
            fields,
        });
    }
    let Some(first) = records.first() else {
        return Err(Error::Input(format!("{source}: no data rows")));
    };
    let ncols = first.fields.len();
    if ncols < 2 {
        return Err(Error::Input(format!(
            "{source} line {}: {ncols} column(s); a data row needs at least one feature and the label (is the delimiter {:?} right?)",
            first.line, options.delimiter
        )));
    }
    // The label column by position, or its name, resolved once the header is known.
    let positional: std::result::Result<usize, &str> = match &options.label_column {
        LabelColumn::Last => Ok(ncols - 1),
        LabelColumn::First => Ok(0),
        LabelColumn::Index(i) if *i < ncols => Ok(*i),
        LabelColumn::Index(i) => {
            return Err(Error::Spec(format!(
                "{source}: label column index {i} is out of range: line {} has {ncols} columns",
                first.line
            )))
        }
        LabelColumn::Name(name) => Err(name),
    };
    let has_header = match options.header {
        Header::Present => true,
        Header::Absent => false,
        Header::Auto => match positional {
            Err(_) => true,
            Ok(label) => first
                .fields
                .iter()
                .enumerate()
                .any(|(c, f)| c != label && !is_number(f)),
        },
    };
    let (names, data) = if has_header {
        (Some(&records[0].fields), &records[1..])
    } else {
        (None, &records[..])
    };
    let label = match positional {
        Ok(c) => c,
        Err(want) => {
            let Some(names) = names else {
                return Err(Error::Spec(format!(
                    "{source}: label column {want:?} chosen by name, but the file has no header"
                )));
            };
            names.iter().position(|n| n == want).ok_or_else(|| {
                Error::Input(format!(
                    "{source}: no label column {want:?}; the header's columns are {names:?}"
                ))
            })?
        }
    };
    if data.is_empty() {
        return Err(Error::Input(format!(
            "{source}: no data rows after the header"
        )));
    }
    let describe = |c: usize| match names {
        Some(n) => format!("column {} ({:?})", c + 1, n[c]),
        None => format!("column {}", c + 1),
    };
    let nfeat = ncols - 1;
    let mut x = Vec::with_capacity(data.len() * nfeat);
    let mut raw_labels: Vec<(&str, usize)> = Vec::with_capacity(data.len());
    for r in data {
        if r.fields.len() != ncols {
            return Err(Error::Input(format!(
                "{source} line {}: {} fields, expected {ncols} (as in line {})",
                r.line,
                r.fields.len(),
                first.line
            )));
        }
        for (c, f) in r.fields.iter().enumerate() {
            if c == label {
                if f.is_empty() {
                    return Err(Error::Input(format!(
                        "{source} line {}, {}: the label is empty",
                        r.line,
                        describe(c)
                    )));
                }
                raw_labels.push((f, r.line));
                continue;
            }
            x.push(parse_value(f).map_err(|why| {
                Error::Input(format!("{source} line {}, {}: {why}", r.line, describe(c)))
            })?);
        }
    }
    let labels_at = describe(label);
    let (labels, class_names) = match options.label_kind {
        LabelKind::Targets => {
            let mut values = Vec::with_capacity(raw_labels.len());
            for (f, line) in &raw_labels {
                values.push(parse_value(f).map_err(|why| {
                    Error::Input(format!("{source} line {line}, {labels_at}: {why}"))
                })?);
            }
            (
                LabelData::Targets {
                    values,
                    shape: vec![],
                },
                None,
            )
        }
        LabelKind::Classes => class_labels(&raw_labels, source, &labels_at)?,
    };
    let ds = InMemoryDataset::new(x, &[nfeat], labels)?;
    match class_names {
        Some(names) => ds.with_class_names(names),
        None => Ok(ds),
    }
}

/// A finite number, or why not.
fn parse_value(f: &str) -> std::result::Result<f32, String> {
    if f.is_empty() {
        return Err("the field is empty".into());
    }
    match f.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{f:?} is not a finite number")),
        Err(_) => Err(format!("{f:?} is not a number")),
    }
}

/// Class indices from label texts: numbers must be non-negative integers; if any label is not a
/// number, all are names, sorted, and index the sorted list.
fn class_labels(
    raw: &[(&str, usize)],
    source: &str,
    at: &str,
) -> Result<(LabelData, Option<Vec<String>>)> {
    if raw.iter().all(|(f, _)| is_number(f)) {
        let mut classes = Vec::with_capacity(raw.len());
        for (f, line) in raw {
            let v: f64 = f.parse().unwrap_or(f64::NAN);
            if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= i32::MAX as f64) {
                return Err(Error::Input(format!(
                    "{source} line {line}, {at}: label {f:?} is not a class index (a non-negative integer)"
                )));
            }
            classes.push(v as i32);
        }
        return Ok((LabelData::Classes(classes), None));
    }
    let mut names: Vec<String> = raw.iter().map(|(f, _)| f.to_string()).collect();
    names.sort();
    names.dedup();
    let classes = raw
        .iter()
        .map(|(f, _)| names.binary_search_by(|n| n.as_str().cmp(f)).unwrap_or(0) as i32)
        .collect();
    Ok((LabelData::Classes(classes), Some(names)))
}
