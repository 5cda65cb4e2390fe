//! lamina-data: readers against small files written here, the bad-input table, the bundled sets'
//! sizes and known values, standardisation, splits, augmentation and the DataLoader.

use flate2::{write::GzEncoder, Compression};
use lamina_data::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty folder under the system temp dir, unique per process and call.
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "lamina-data-test-{}-{k}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes `text` as a CSV file named `name` in a fresh folder and reads it.
fn csv(name: &str, text: &str, options: &CsvOptions) -> lamina_core::Result<InMemoryDataset> {
    let dir = temp_dir("csv");
    let path = dir.join(name);
    write(&path, text.as_bytes());
    read_csv(&path, options)
}

fn classes(d: &InMemoryDataset) -> Vec<i32> {
    match d.labels() {
        LabelData::Classes(c) => c.clone(),
        other => panic!("expected classes, got {other:?}"),
    }
}

fn targets(d: &InMemoryDataset) -> Vec<f32> {
    match d.labels() {
        LabelData::Targets { values, .. } => values.clone(),
        other => panic!("expected targets, got {other:?}"),
    }
}

/// A data set whose sample `i` is `[i]` with class `i % 3`: batches show which samples they hold.
fn indexed(n: usize) -> InMemoryDataset {
    let x = (0..n).map(|i| i as f32).collect();
    InMemoryDataset::new(
        x,
        &[1],
        LabelData::Classes((0..n).map(|i| (i % 3) as i32).collect()),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------- CSV

#[test]
fn csv_without_header_label_last() {
    let d = csv(
        "plain.csv",
        "1,2,0\n3.5,4,1\n\n5,-6,2\n",
        &CsvOptions::default(),
    )
    .unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.sample_shape(), &[2]);
    assert_eq!(d.x(), &[1.0, 2.0, 3.5, 4.0, 5.0, -6.0]);
    assert_eq!(classes(&d), vec![0, 1, 2]);
    assert_eq!(d.class_names(), None);
    assert_eq!(d.num_classes(), Some(3));
}

#[test]
fn csv_header_and_label_column_variants() {
    let text = "label,a,b\n1,10,20\n0,11,21\n";
    // auto-detected header, label first
    let first = CsvOptions {
        label_column: LabelColumn::First,
        ..Default::default()
    };
    let d = csv("h.csv", text, &first).unwrap();
    assert_eq!(d.x(), &[10.0, 20.0, 11.0, 21.0]);
    assert_eq!(classes(&d), vec![1, 0]);
    // by name
    let by_name = CsvOptions {
        label_column: LabelColumn::Name("label".into()),
        ..Default::default()
    };
    assert_eq!(csv("h.csv", text, &by_name).unwrap(), d);
    // by index, with an explicit header
    let opts = CsvOptions {
        header: Header::Present,
        label_column: LabelColumn::Index(1),
        label_kind: LabelKind::Targets,
        ..Default::default()
    };
    let t = csv("h.csv", text, &opts).unwrap();
    assert_eq!(t.x(), &[1.0, 20.0, 0.0, 21.0]);
    assert_eq!(targets(&t), vec![10.0, 11.0]);
    assert_eq!(t.target_shape(), &[] as &[usize]);
    // quoted header names and a semicolon delimiter
    let quoted = "\"x 1\";\"the \"\"label\"\"\"\n0.5;2\n";
    let opts = CsvOptions {
        delimiter: ';',
        label_column: LabelColumn::Name("the \"label\"".into()),
        ..Default::default()
    };
    let q = csv("q.csv", quoted, &opts).unwrap();
    assert_eq!((q.x(), classes(&q)), (&[0.5f32][..], vec![2]));
    // a header forced absent on numeric text keeps the first row
    let opts = CsvOptions {
        header: Header::Absent,
        ..Default::default()
    };
    assert_eq!(csv("n.csv", "1,0\n2,1\n", &opts).unwrap().len(), 2);
}

#[test]
fn csv_string_and_float_text_classes() {
    let text = "w,h,species\n1,2,virginica\n3,4,setosa\n5,6,versicolor\n7,8,setosa\n";
    let d = csv("iris.csv", text, &CsvOptions::default()).unwrap();
    assert_eq!(
        d.class_names().unwrap(),
        &["setosa", "versicolor", "virginica"]
    );
    assert_eq!(classes(&d), vec![2, 0, 1, 0]);
    assert_eq!(d.num_classes(), Some(3));
    let d = csv("f.csv", "1,3.0\n2,0.0\n3,1e0\n", &CsvOptions::default()).unwrap();
    assert_eq!(classes(&d), vec![3, 0, 1]);
}

#[test]
fn csv_gzip_and_whitespace_delimiter() {
    let dir = temp_dir("gz");
    let path = dir.join("t.csv.gz");
    write(&path, &gzip(b"a b target\n1  2\t0.5\n3 4 -1.25\n"));
    let opts = CsvOptions {
        delimiter: ' ',
        label_kind: LabelKind::Targets,
        ..Default::default()
    };
    let d = read_csv(&path, &opts).unwrap();
    assert_eq!(d.x(), &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(targets(&d), vec![0.5, -1.25]);
}

// ------------------------------------------------------------------------------ bad-input table

fn png(path: &Path, w: u32, h: u32, rgb: bool) {
    if rgb {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 7]))
            .save(path)
            .unwrap();
    } else {
        image::GrayImage::from_fn(w, h, |x, _| image::Luma([x as u8 * 20]))
            .save(path)
            .unwrap();
    }
}

/// Every bad input is an `Err` whose message names the file (or line) and what was wrong.
#[test]
fn bad_input_table() {
    let dir = temp_dir("bad");
    let p = |name: &str| dir.join(name);
    let opts = CsvOptions::default();
    let gray = ImageFolderOptions {
        size: (4, 4),
        channels: 1,
        strict_channels: true,
        ..Default::default()
    };

    // image folders
    std::fs::create_dir_all(p("rgb/cat")).unwrap();
    png(&p("rgb/cat/a.png"), 4, 4, true);
    std::fs::create_dir_all(p("empty/cat")).unwrap();
    std::fs::create_dir_all(p("empty/dog")).unwrap();
    png(&p("empty/cat/a.png"), 4, 4, false);
    std::fs::create_dir_all(p("text/cat")).unwrap();
    write(&p("text/cat/notes.txt"), b"not an image");
    std::fs::create_dir_all(p("noclasses")).unwrap();
    // IDX
    let mut idx = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
    idx.extend([1u8; 10]); // 2 images of 3×3 need 18 bytes
    write(&p("trunc-images"), &idx);
    write(&p("trunc-images.gz"), &gzip(&idx));
    let full = gzip(&[&idx[..16], &[1u8; 18]].concat());
    write(&p("cut.gz"), &full[..full.len() / 2]);
    write(&p("magic"), &[1, 2, 3, 4, 0, 0, 0, 0]);
    write(&p("labels-as-images"), &[0, 0, 8, 1, 0, 0, 0, 1, 5]);
    write(&p("f32"), &[0, 0, 0x0D, 1, 0, 0, 0, 0]);
    write(&p("extra"), &[0, 0, 8, 1, 0, 0, 0, 1, 5, 6]);
    // CSV files
    write(&p("malformed.csv"), b"a,b,label\n1,2,0\n3,x,1\n");
    write(&p("short.csv"), b"1,2,0\n3,4,1\n5,1\n");
    write(&p("empty-field.csv"), b"1,2,0\n,4,1\n");
    write(&p("nan.csv"), b"1,2,0\n4,NaN,1\n");
    write(&p("frac.csv"), b"1,2,0\n3,4,1.5\n");
    write(&p("neg.csv"), b"1,2,0\n3,4,-1\n");
    write(&p("quote.csv"), b"1,2,0\n\"3,4,1\n");
    write(&p("blank.csv"), b"\n\n");
    write(&p("onecol.csv"), b"1\n2\n");

    let by_name = CsvOptions {
        label_column: LabelColumn::Name("target".into()),
        ..Default::default()
    };
    let index9 = CsvOptions {
        label_column: LabelColumn::Index(9),
        ..Default::default()
    };
    let rows: Vec<(&str, lamina_core::Result<InMemoryDataset>, Vec<&str>)> = vec![
        (
            "missing file",
            read_csv(p("nope.csv"), &opts),
            vec!["cannot read", "nope.csv"],
        ),
        (
            "malformed row",
            read_csv(p("malformed.csv"), &opts),
            vec![
                "malformed.csv line 3",
                "column 2 (\"b\")",
                "\"x\" is not a number",
            ],
        ),
        (
            "short row",
            read_csv(p("short.csv"), &opts),
            vec!["short.csv line 3", "2 fields, expected 3"],
        ),
        (
            "empty field",
            read_csv(p("empty-field.csv"), &opts),
            vec!["line 2, column 1", "empty"],
        ),
        (
            "NaN",
            read_csv(p("nan.csv"), &opts),
            vec!["line 2, column 2", "not a finite number"],
        ),
        (
            "fractional class",
            read_csv(p("frac.csv"), &opts),
            vec!["line 2, column 3", "\"1.5\" is not a class index"],
        ),
        (
            "negative class",
            read_csv(p("neg.csv"), &opts),
            vec!["line 2", "\"-1\" is not a class index"],
        ),
        (
            "unclosed quote",
            read_csv(p("quote.csv"), &opts),
            vec!["quote.csv line 2", "quoted field is not closed"],
        ),
        (
            "no rows",
            read_csv(p("blank.csv"), &opts),
            vec!["blank.csv", "no data rows"],
        ),
        (
            "one column",
            read_csv(p("onecol.csv"), &opts),
            vec!["onecol.csv line 1", "1 column"],
        ),
        (
            "missing label column",
            read_csv(p("malformed.csv"), &by_name),
            vec!["no label column \"target\"", "[\"a\", \"b\", \"label\"]"],
        ),
        (
            "label index out of range",
            read_csv(p("short.csv"), &index9),
            vec!["label column index 9", "3 columns"],
        ),
        (
            "wrong-channel image",
            read_image_folder(p("rgb"), &gray),
            vec!["a.png", "3 channel(s)", "expected 1"],
        ),
        (
            "empty class folder",
            read_image_folder(p("empty"), &gray),
            vec!["dog", "class folder has no images"],
        ),
        (
            "non-image file",
            read_image_folder(p("text"), &gray),
            vec!["notes.txt", "not an image"],
        ),
        (
            "no class folders",
            read_image_folder(p("noclasses"), &gray),
            vec!["no class sub-folders"],
        ),
        (
            "missing folder",
            read_image_folder(p("nowhere"), &gray),
            vec!["cannot list", "nowhere"],
        ),
        (
            "bad channels option",
            read_image_folder(
                p("rgb"),
                &ImageFolderOptions {
                    channels: 2,
                    ..gray.clone()
                },
            ),
            vec!["channels must be 1 or 3"],
        ),
        (
            "truncated IDX",
            read_idx_dataset(p("trunc-images"), p("extra")),
            vec!["trunc-images", "truncated", "need 18 bytes", "has 10"],
        ),
        (
            "truncated gzip IDX",
            read_idx_dataset(p("trunc-images.gz"), p("extra")),
            vec!["trunc-images.gz", "truncated"],
        ),
        (
            "cut gzip stream",
            read_idx_dataset(p("cut.gz"), p("extra")),
            vec!["cut.gz", "gzip stream is truncated or corrupt"],
        ),
        (
            "bad IDX magic",
            read_idx_dataset(p("magic"), p("extra")),
            vec!["magic", "not an IDX file"],
        ),
        (
            "IDX of the wrong rank",
            read_idx_dataset(p("labels-as-images"), p("extra")),
            vec!["must have 3 dimension(s), the file has 1"],
        ),
        (
            "missing IDX file",
            read_idx_dataset(p("none-images"), p("extra")),
            vec!["cannot read", "none-images"],
        ),
    ];
    for (what, result, needles) in rows {
        let msg = match result {
            Ok(_) => panic!("{what}: expected an error"),
            Err(e) => e.to_string(),
        };
        for n in needles {
            assert!(msg.contains(n), "{what}: {msg:?} does not contain {n:?}");
        }
    }
    let msg = read_idx_labels(p("f32")).unwrap_err().to_string();
    assert!(
        msg.contains("element type 0x0d (f32) is not supported"),
        "{msg}"
    );
    let msg = read_idx_labels(p("extra")).unwrap_err().to_string();
    assert!(msg.contains("1 bytes after the 1 bytes of data"), "{msg}");
    // error kinds: files are Io, content is Input
    assert!(matches!(
        read_csv(p("nope.csv"), &opts),
        Err(lamina_core::Error::Io(_))
    ));
    assert!(matches!(
        read_csv(p("malformed.csv"), &opts),
        Err(lamina_core::Error::Input(_))
    ));
    let msg = bundled("iris").unwrap_err().to_string();
    assert!(msg.contains("digits, breast_cancer, diabetes"), "{msg}");
}

// ------------------------------------------------------------------------------------- bundled

#[test]
fn bundled_digits() {
    let b = bundled("digits").unwrap();
    let d = &b.dataset;
    assert_eq!((d.len(), d.sample_shape()), (1797, &[64usize][..]));
    assert_eq!(b.feature_shape, vec![64]);
    assert_eq!(d.num_classes(), Some(10));
    assert_eq!(b.class_names.as_ref().unwrap().len(), 10);
    let first: Vec<f32> = [
        0., 0., 5., 13., 9., 1., 0., 0., 0., 0., 13., 15., 10., 15., 5., 0.,
    ]
    .iter()
    .map(|v| v / 16.0)
    .collect();
    assert_eq!(&d.x()[..16], &first[..]);
    let c = classes(d);
    assert_eq!(&c[..3], &[0, 1, 2]);
    assert!(d.x().iter().all(|&v| (0.0..=1.0).contains(&v)));
    // scikit-learn's class counts
    let count = |k| c.iter().filter(|&&l| l == k).count();
    assert_eq!((count(0), count(1), count(5)), (178, 182, 182));
}

#[test]
fn bundled_breast_cancer_and_diabetes() {
    let b = bundled("breast-cancer").unwrap();
    let d = &b.dataset;
    assert_eq!((d.len(), d.sample_shape()), (569, &[30usize][..]));
    assert_eq!(b.class_names.as_deref().unwrap(), &["malignant", "benign"]);
    assert_eq!(d.class_names().unwrap(), &["malignant", "benign"]);
    assert_eq!(&d.x()[..4], &[17.99, 10.38, 122.8, 1001.0]);
    let c = classes(d);
    assert_eq!(c[0], 0);
    assert_eq!(c.iter().filter(|&&l| l == 1).count(), 357, "benign samples");

    let b = bundled("diabetes").unwrap();
    let d = &b.dataset;
    assert_eq!((d.len(), d.sample_shape()), (442, &[10usize][..]));
    assert_eq!(b.class_names, None);
    assert!(!d.has_classes());
    assert_eq!(
        &d.x()[..10],
        &[59.0, 2.0, 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0]
    );
    let y = targets(d);
    assert_eq!(&y[..3], &[151.0, 75.0, 141.0]);
    let mean = y.iter().map(|&v| v as f64).sum::<f64>() / 442.0;
    assert!((mean - 152.133).abs() < 1e-3, "{mean}");
}

// --------------------------------------------------------------------------- standardisation

#[test]
fn standardizer_uses_training_statistics() {
    let train = InMemoryDataset::new(
        vec![1., 10., 3., 10., 5., 10.],
        &[2],
        LabelData::Classes(vec![0, 1, 0]),
    )
    .unwrap();
    let s = Standardizer::fit(&train).unwrap();
    let sd = (8.0f32 / 3.0).sqrt();
    assert_eq!(s.mean, vec![3.0, 10.0]);
    assert!((s.std[0] - sd).abs() < 1e-6);
    assert_eq!(s.std[1], 1.0, "a constant feature gets std 1");
    let z = s.apply(&train).unwrap();
    let want = [-2.0 / sd, 0.0, 0.0, 0.0, 2.0 / sd, 0.0];
    for (a, b) in z.x().iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{:?}", z.x());
    }
    assert_eq!(z.labels(), train.labels());
    let test = InMemoryDataset::new(vec![7., 12.], &[2], LabelData::Classes(vec![1])).unwrap();
    let zt = s.apply(&test).unwrap();
    assert!(
        (zt.x()[0] - 4.0 / sd).abs() < 1e-6 && zt.x()[1] == 2.0,
        "{:?}",
        zt.x()
    );
    let wide = InMemoryDataset::new(vec![1., 2., 3.], &[3], LabelData::Classes(vec![0])).unwrap();
    assert!(s
        .apply(&wide)
        .unwrap_err()
        .to_string()
        .contains("3 features"));
    // standardised breast-cancer training features have mean 0 and std 1
    let bc = bundled("breast_cancer").unwrap().dataset;
    let (tr, _) = train_test_split(&bc, 0.25, 1).unwrap();
    let z = Standardizer::fit(&tr).unwrap().apply(&tr).unwrap();
    let refit = Standardizer::fit(&z).unwrap();
    assert!(
        refit.mean.iter().all(|m| m.abs() < 1e-4),
        "{:?}",
        refit.mean
    );
    assert!(
        refit.std.iter().all(|s| (s - 1.0).abs() < 1e-4),
        "{:?}",
        refit.std
    );
}

// -------------------------------------------------------------------------------------- splits

#[test]
fn splits_are_sized_disjoint_and_deterministic() {
    let d = indexed(10)
        .with_class_names(vec!["a".into(), "b".into(), "c".into()])
        .unwrap();
    let (tr, te) = train_test_split(&d, 0.25, 7).unwrap();
    assert_eq!((tr.len(), te.len()), (7, 3), "ceil(0.25 · 10) test samples");
    let mut all: Vec<f32> = tr.x().iter().chain(te.x()).copied().collect();
    all.sort_by(f32::total_cmp);
    assert_eq!(
        all,
        (0..10).map(|i| i as f32).collect::<Vec<_>>(),
        "disjoint and complete"
    );
    assert_eq!(tr.class_names(), d.class_names(), "class names survive");
    for (part, _) in [(&tr, 0), (&te, 1)] {
        for (x, c) in part.x().iter().zip(classes(part)) {
            assert_eq!(*x as i32 % 3, c, "labels travel with their samples");
        }
    }
    assert_eq!(
        train_test_split(&d, 0.25, 7).unwrap(),
        (tr.clone(), te.clone()),
        "same seed, same split"
    );
    assert_ne!(
        train_test_split(&d, 0.25, 8).unwrap().1,
        te,
        "another seed, another split"
    );
    // the head/tail of shuffled(n, seed, 0)
    let order = shuffled(10, 7, 0);
    assert_eq!(
        tr.x(),
        order[..7].iter().map(|&i| i as f32).collect::<Vec<_>>()
    );

    let (a, b, c) = train_val_test_split(&indexed(20), 0.2, 0.1, 3).unwrap();
    assert_eq!((a.len(), b.len(), c.len()), (14, 4, 2));
    let mut all: Vec<f32> = a.x().iter().chain(b.x()).chain(c.x()).copied().collect();
    all.sort_by(f32::total_cmp);
    assert_eq!(all, (0..20).map(|i| i as f32).collect::<Vec<_>>());
    for bad in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(train_test_split(&d, bad, 0).is_err(), "fraction {bad}");
    }
    assert!(train_val_test_split(&d, 0.5, 0.5, 0)
        .unwrap_err()
        .to_string()
        .contains("no training samples"));
}

/// `shuffled` is the function lamina-train's `fit` always used: same orders for the same seeds.
#[test]
fn shuffled_matches_the_trainers_original_order() {
    fn original(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
        let mut s = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut idx: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        idx
    }
    for (n, seed, epoch) in [
        (0, 0, 0),
        (1, 5, 1),
        (10, 0, 0),
        (1797, 0, 0),
        (100, 42, 3),
        (57, u64::MAX, 9),
    ] {
        assert_eq!(shuffled(n, seed, epoch), original(n, seed, epoch));
    }
    let mut p = shuffled(100, 1, 1);
    assert_ne!(p, (0..100).collect::<Vec<_>>());
    p.sort();
    assert_eq!(p, (0..100).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------- IDX

fn idx_bytes(kind_rank: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, kind_rank];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

#[test]
fn idx_raw_and_gzip() {
    let dir = temp_dir("idx");
    let pixels: Vec<u8> = (0..18).map(|i| (i * 15) as u8).collect();
    let images = idx_bytes(3, &[3, 2, 3], &pixels);
    let labels = idx_bytes(1, &[3], &[7, 0, 9]);
    write(&dir.join("img"), &images);
    write(&dir.join("lab"), &labels);
    write(&dir.join("img.gz"), &gzip(&images));
    write(&dir.join("lab.gz"), &gzip(&labels));
    let im = read_idx_images(dir.join("img")).unwrap();
    assert_eq!((im.count, im.rows, im.cols), (3, 2, 3));
    assert_eq!(im.pixels, pixels);
    assert_eq!(read_idx_images(dir.join("img.gz")).unwrap(), im);
    assert_eq!(read_idx_labels(dir.join("lab.gz")).unwrap(), vec![7, 0, 9]);
    let d = idx_dataset(&im, &read_idx_labels(dir.join("lab")).unwrap()).unwrap();
    assert_eq!(d.sample_shape(), &[1, 2, 3]);
    assert_eq!(classes(&d), vec![7, 0, 9]);
    assert_eq!(d.x()[1], 15.0 / 255.0);
    assert_eq!(d.x()[17], 1.0);
    assert_eq!(
        read_idx_dataset(dir.join("img.gz"), dir.join("lab")).unwrap(),
        d
    );
    let msg = idx_dataset(&im, &[1, 2]).unwrap_err().to_string();
    assert!(msg.contains("3 images but 2 labels"), "{msg}");
}

// ------------------------------------------------------------------------------- image folders

#[test]
fn image_folder_reads_resizes_and_normalises() {
    let root = temp_dir("images");
    for class in ["dog", "cat"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
    }
    // cat/a.png: 8 wide × 4 high, left half 0, right half 255 → no resize, centre crop keeps
    // columns 2..6
    image::GrayImage::from_fn(8, 4, |x, _| image::Luma([if x < 4 { 0 } else { 255 }]))
        .save(root.join("cat/a.png"))
        .unwrap();
    // cat/b.bmp: constant 51 (0.2), 8 × 8 → resized to 4 × 4, still constant
    image::GrayImage::from_pixel(8, 8, image::Luma([51]))
        .save(root.join("cat/b.bmp"))
        .unwrap();
    // dog/c.jpg: RGB, converted to grey unless strict
    image::RgbImage::from_pixel(6, 6, image::Rgb([200, 100, 50]))
        .save(root.join("dog/c.jpg"))
        .unwrap();
    write(&root.join("README.txt"), b"files at the root are ignored");
    write(&root.join("cat/.DS_Store"), b"hidden files are skipped");

    let opts = ImageFolderOptions {
        size: (4, 4),
        channels: 1,
        mean: vec![0.5],
        std: vec![0.25],
        ..Default::default()
    };
    let d = read_image_folder(&root, &opts).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.sample_shape(), &[1, 4, 4]);
    assert_eq!(d.class_names().unwrap(), &["cat", "dog"]);
    assert_eq!(classes(&d), vec![0, 0, 1]);
    let norm = |v: f32| (v - 0.5) / 0.25;
    assert_eq!(&d.x()[..4], &[norm(0.0), norm(0.0), norm(1.0), norm(1.0)]);
    for v in &d.x()[16..32] {
        assert!((v - norm(0.2)).abs() < 1e-6, "{:?}", &d.x()[16..32]);
    }
    // strict: the RGB JPEG is refused (a grey BMP would be too: BMP palettes decode as RGB)
    let strict_root = temp_dir("strict");
    for (class, file) in [("cat", "a.png"), ("dog", "c.jpg")] {
        std::fs::create_dir_all(strict_root.join(class)).unwrap();
        std::fs::copy(
            root.join(class).join(file),
            strict_root.join(class).join(file),
        )
        .unwrap();
    }
    let strict = ImageFolderOptions {
        strict_channels: true,
        ..opts.clone()
    };
    let msg = read_image_folder(&strict_root, &strict)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("c.jpg") && msg.contains("3 channel(s)"),
        "{msg}"
    );
    let strict_rgb = ImageFolderOptions {
        channels: 3,
        mean: vec![],
        std: vec![],
        ..strict
    };
    let msg = read_image_folder(&strict_root, &strict_rgb)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("a.png") && msg.contains("expected 3"), "{msg}");

    // RGB: channels-first planes
    let rgb = ImageFolderOptions {
        size: (2, 3),
        channels: 3,
        ..Default::default()
    };
    let d = read_image_folder(&root, &rgb).unwrap();
    assert_eq!(d.sample_shape(), &[3, 2, 3]);
    let dog = &d.x()[2 * 18..3 * 18];
    for (plane, want) in dog.chunks(6).zip([200.0f32, 100.0, 50.0]) {
        for v in plane {
            assert!(
                (v * 255.0 - want).abs() < 4.0,
                "JPEG keeps the colour roughly: {plane:?}"
            );
        }
    }
}

// ------------------------------------------------------------------------------- augmentation

fn ramp_images(n: usize, h: usize, w: usize) -> InMemoryDataset {
    let x = (0..n * h * w)
        .map(|v| (v % (h * w)) as f32 + 1.0 + (v / (h * w)) as f32 * 100.0)
        .collect();
    InMemoryDataset::new(x, &[1, h, w], LabelData::Classes(vec![0; n])).unwrap()
}

#[test]
fn augmentation_is_seeded_per_epoch_and_sample() {
    let (h, w) = (4, 5);
    let base = ramp_images(40, h, w);
    let plain = AugmentedDataset::new(base.clone(), Augment::default(), 1).unwrap();
    let gather = |d: &dyn Dataset, idx: &[usize], epoch: usize| {
        let (mut x, mut c, mut t) = (Vec::new(), Vec::new(), Vec::new());
        d.gather_epoch(idx, epoch, &mut x, &mut c, &mut t);
        x
    };
    let all: Vec<usize> = (0..40).collect();
    assert_eq!(
        gather(&plain, &all, 3),
        base.x(),
        "no augmentation: unchanged"
    );

    // flips: each sample is unchanged or mirrored, both happen
    let flip = AugmentedDataset::new(base.clone(), Augment { pad: 0, flip: true }, 1).unwrap();
    let x = gather(&flip, &all, 1);
    let mut flipped = 0;
    for (s, orig) in x.chunks(h * w).zip(base.x().chunks(h * w)) {
        let mirrored: Vec<f32> = orig
            .chunks(w)
            .flat_map(|r| r.iter().rev().copied())
            .collect();
        if s == mirrored.as_slice() {
            flipped += 1;
        } else {
            assert_eq!(s, orig);
        }
    }
    assert!((10..=30).contains(&flipped), "{flipped} of 40 flipped");

    // crops: every sample is its original shifted by (dy, dx) in -2..=2 with zeros outside
    let crop = AugmentedDataset::new(
        base.clone(),
        Augment {
            pad: 2,
            flip: false,
        },
        1,
    )
    .unwrap();
    let x = gather(&crop, &all, 1);
    let mut shifts = std::collections::HashSet::new();
    for (s, orig) in x.chunks(h * w).zip(base.x().chunks(h * w)) {
        let found = (-2isize..=2)
            .flat_map(|dy| (-2isize..=2).map(move |dx| (dy, dx)))
            .find(|&(dy, dx)| {
                (0..h * w).all(|p| {
                    let (y, xx) = ((p / w) as isize + dy, (p % w) as isize + dx);
                    let want = if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                        orig[y as usize * w + xx as usize]
                    } else {
                        0.0
                    };
                    s[p] == want
                })
            });
        shifts.insert(found.expect("a shifted copy"));
    }
    assert!(shifts.len() > 5, "{shifts:?}");

    // a sample's draw depends on (seed, epoch, index) only, not on the batch it is in
    let both = AugmentedDataset::new(base.clone(), Augment { pad: 1, flip: true }, 9).unwrap();
    let alone = gather(&both, &[17], 4);
    let in_batch = gather(&both, &[3, 17, 5], 4);
    assert_eq!(alone, &in_batch[h * w..2 * h * w]);
    assert_ne!(
        gather(&both, &all, 4),
        gather(&both, &all, 5),
        "each epoch draws anew"
    );
    // plain gather (evaluation) is unaugmented
    let (mut x, mut c, mut t) = (Vec::new(), Vec::new(), Vec::new());
    both.gather(&all, &mut x, &mut c, &mut t);
    assert_eq!(x, base.x());
    // the loader augments, the same with any number of workers
    let load = |workers, augment| {
        let o = LoaderOptions {
            batch_size: 7,
            workers,
            augment,
            seed: 2,
            ..Default::default()
        };
        DataLoader::new(&both, o).unwrap().collect_epoch(4)
    };
    assert_eq!(load(0, true), load(2, true));
    assert_ne!(load(0, true), load(0, false));
    assert!(AugmentedDataset::new(indexed(3), Augment::default(), 0)
        .unwrap_err()
        .to_string()
        .contains("[C, H, W]"));
}

// --------------------------------------------------------------------------------- DataLoader

#[test]
fn loader_visits_every_sample_once_in_shuffled_order() {
    let d = indexed(103);
    let options = LoaderOptions {
        batch_size: 10,
        seed: 5,
        workers: 0,
        ..Default::default()
    };
    let loader = DataLoader::new(&d, options).unwrap();
    assert_eq!(loader.batches_per_epoch(), 11);
    let batches = loader.collect_epoch(2);
    assert_eq!(batches.len(), 11);
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(
        seen,
        shuffled(103, 5, 2),
        "order equals shuffled(n, seed, epoch)"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..103).collect::<Vec<_>>(),
        "every sample exactly once"
    );
    for (k, b) in batches.iter().enumerate() {
        assert_eq!(b.index, k);
        assert_eq!(
            b.x,
            b.indices.iter().map(|&i| i as f32).collect::<Vec<_>>(),
            "x holds the batch's samples"
        );
        assert_eq!(
            b.labels(),
            Labels::Classes(
                &b.indices
                    .iter()
                    .map(|&i| (i % 3) as i32)
                    .collect::<Vec<_>>()
            )
        );
        assert_eq!(b.x_shape, vec![b.len(), 1]);
        assert_eq!(b.label_shape, vec![b.len()]);
    }
    // the last partial batch is a real, smaller batch
    let last = batches.last().unwrap();
    assert_eq!(
        (last.len(), last.x_shape.clone(), last.x.len()),
        (3, vec![3, 1], 3)
    );
    // another epoch, another order
    let next: Vec<usize> = loader
        .collect_epoch(3)
        .iter()
        .flat_map(|b| b.indices.clone())
        .collect();
    assert_ne!(next, seen);
    // without shuffling: 0..n
    let plain = DataLoader::new(
        &d,
        LoaderOptions {
            shuffle: false,
            batch_size: 50,
            ..Default::default()
        },
    )
    .unwrap();
    let order: Vec<usize> = plain
        .collect_epoch(1)
        .iter()
        .flat_map(|b| b.indices.clone())
        .collect();
    assert_eq!(order, (0..103).collect::<Vec<_>>());
}

#[test]
fn loader_drop_last() {
    let d = indexed(103);
    let loader = DataLoader::new(
        &d,
        LoaderOptions {
            batch_size: 10,
            drop_last: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(loader.batches_per_epoch(), 10);
    let batches = loader.collect_epoch(1);
    assert_eq!(batches.len(), 10);
    assert!(batches.iter().all(|b| b.len() == 10));
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, shuffled(103, 0, 1)[..100]);
}

#[test]
fn prefetching_workers_give_the_same_batches() {
    let d = indexed(257);
    let run = |workers, prefetch| {
        let o = LoaderOptions {
            batch_size: 16,
            seed: 11,
            workers,
            prefetch,
            ..Default::default()
        };
        DataLoader::new(&d, o).unwrap().collect_epoch(7)
    };
    let sequential = run(0, 0);
    assert_eq!(sequential.len(), 17);
    assert_eq!(run(2, 4), sequential);
    assert_eq!(run(1, 0), sequential);
    assert_eq!(run(3, 1), sequential);
    assert_eq!(run(64, 2), sequential, "more workers than batches");
    // stopping early does not hang the workers
    let o = LoaderOptions {
        batch_size: 4,
        workers: 2,
        prefetch: 1,
        ..Default::default()
    };
    let first = DataLoader::new(&d, o)
        .unwrap()
        .epoch(1, |b| b.take(2).map(|b| b.index).collect::<Vec<_>>());
    assert_eq!(first, vec![0, 1]);
}

#[test]
fn loader_targets_explicit_order_and_errors() {
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let y: Vec<f32> = (0..12).map(|v| -(v as f32)).collect();
    let d = InMemoryDataset::new(
        x,
        &[2],
        LabelData::Targets {
            values: y,
            shape: vec![2],
        },
    )
    .unwrap();
    let loader = DataLoader::new(
        &d,
        LoaderOptions {
            batch_size: 4,
            workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let got = loader
        .with_order(&[5, 0, 3], 1, |b| b.collect::<Vec<_>>())
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].x, vec![10.0, 11.0, 0.0, 1.0, 6.0, 7.0]);
    assert_eq!(got[0].x_shape, vec![3, 2]);
    assert_eq!(got[0].label_shape, vec![3, 2]);
    assert_eq!(
        got[0].labels(),
        Labels::Targets(&[-10.0, -11.0, -0.0, -1.0, -6.0, -7.0])
    );
    let err = loader
        .with_order(&[1, 6], 1, |b| b.count())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sample index 6 is outside the data set of 6"),
        "{err}"
    );
    assert!(DataLoader::new(
        &d,
        LoaderOptions {
            batch_size: 0,
            ..Default::default()
        }
    )
    .is_err());
    // the iterator knows how many batches are left
    let lens = loader.epoch(1, |b| {
        let first = b.len();
        b.next();
        (first, b.len())
    });
    assert_eq!(lens, (2, 1));
}

/// Loading overlaps the consumer's work: with a 2 ms gather and 2 ms of consumer work per batch,
/// one prefetching worker takes clearly less time than loading inline (benches/prefetch.rs
/// measures it properly).
#[test]
fn prefetching_overlaps_loading_with_compute() {
    struct Slow(InMemoryDataset);
    impl Dataset for Slow {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn sample_shape(&self) -> &[usize] {
            self.0.sample_shape()
        }
        fn target_shape(&self) -> &[usize] {
            self.0.target_shape()
        }
        fn has_classes(&self) -> bool {
            self.0.has_classes()
        }
        fn gather(&self, indices: &[usize], x: &mut Vec<f32>, c: &mut Vec<i32>, t: &mut Vec<f32>) {
            std::thread::sleep(std::time::Duration::from_millis(4));
            self.0.gather(indices, x, c, t)
        }
    }
    let d = Slow(indexed(20 * 4));
    let time = |workers| {
        let loader = DataLoader::new(
            &d,
            LoaderOptions {
                batch_size: 4,
                workers,
                ..Default::default()
            },
        )
        .unwrap();
        let start = std::time::Instant::now();
        loader.epoch(1, |batches| {
            batches.for_each(|_| std::thread::sleep(std::time::Duration::from_millis(4)))
        });
        start.elapsed().as_secs_f64()
    };
    let (inline, prefetched) = (time(0), time(1));
    // 20 batches: about 160 ms inline, about 84 ms prefetched
    assert!(
        prefetched < inline * 0.8,
        "prefetched {prefetched:.3}s vs inline {inline:.3}s"
    );
}

#[test]
fn in_memory_dataset_class_names_are_checked() {
    let d = indexed(6);
    assert!(d
        .clone()
        .with_class_names(vec!["a".into(), "b".into()])
        .unwrap_err()
        .to_string()
        .contains("label 2"));
    let targets = InMemoryDataset::new(
        vec![1.0],
        &[1],
        LabelData::Targets {
            values: vec![1.0],
            shape: vec![],
        },
    )
    .unwrap();
    assert_eq!(targets.num_classes(), None);
    assert!(targets.with_class_names(vec![]).is_err());
}
