//! The `lamina` binary end to end: every subcommand on the bundled data, and the bad-input table
//! (a clear message and a non-zero exit code, never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lamina(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the lamina binary runs")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lamina-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn summary_of_every_example_spec() {
    for (spec, want) in [
        ("examples/digits_mlp.json", "Total parameters: 9,610"),
        ("examples/digits_cnn.json", "Conv2D"),
        ("examples/breast_cancer.json", "Sigmoid"),
        ("examples/diabetes.json", "[32,1]"),
    ] {
        let o = lamina(&["summary", spec]);
        assert!(o.status.success(), "{spec}: {}", text(&o));
        assert!(text(&o).contains(want), "{spec}: {}", text(&o));
    }
}

#[test]
fn train_eval_predict_round_trip() {
    let out = temp("digits");
    let o = lamina(&[
        "train",
        "examples/digits_mlp.json",
        "--epochs",
        "3",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap()).unwrap();
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.85, "{v}");
    for f in [
        "checkpoint.safetensors",
        "history.csv",
        "metrics.json",
        "spec.json",
        "report.html",
        "loss.png",
        "loss.svg",
        "confusion.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing in {}", out.display());
    }
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 4, "{history}");

    let ckpt = out.join("checkpoint.safetensors");
    let e = lamina(&["eval", ckpt.to_str().unwrap(), "--json"]);
    assert!(e.status.success(), "{}", text(&e));
    let ev: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&e.stdout).trim()).unwrap();
    assert_eq!(
        ev["test_accuracy"], v["test_accuracy"],
        "eval of the checkpoint reproduces the run's test accuracy"
    );

    let onnx = out.join("model.onnx");
    let x = lamina(&[
        "export-onnx",
        ckpt.to_str().unwrap(),
        onnx.to_str().unwrap(),
    ]);
    assert!(x.status.success(), "{}", text(&x));
    assert!(
        std::fs::metadata(&onnx).unwrap().len() > 9610 * 4,
        "the ONNX file holds the weights"
    );

    let rows = out.join("rows.csv");
    std::fs::write(
        &rows,
        format!(
            "{}\n{}\n",
            vec!["0"; 64].join(","),
            vec!["0.5"; 64].join(",")
        ),
    )
    .unwrap();
    let p = lamina(&[
        "predict",
        ckpt.to_str().unwrap(),
        rows.to_str().unwrap(),
        "--json",
    ]);
    assert!(p.status.success(), "{}", text(&p));
    let pv: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&p.stdout).trim()).unwrap();
    assert_eq!(pv.as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(out);
}

/// Checkpoints during training: the spec's `train.checkpoint` section with a flag overriding one
/// key; the run folder keeps the last K periodic files and the best one, which `eval` reads.
#[test]
fn checkpoints_during_training() {
    let out = temp("ckpt");
    let mut spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/digits_mlp.json")).unwrap(),
    )
    .unwrap();
    spec["train"]["checkpoint"] =
        serde_json::json!({ "every": 1, "keep_last": 1, "keep_best": "val_accuracy" });
    let spec_path = out.join("digits_ckpt.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let o = lamina(&[
        "train",
        spec_path.to_str().unwrap(),
        "--epochs",
        "3",
        "--keep-last",
        "2",
        "--out",
        out.join("run").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("checkpoints in"), "{}", text(&o));
    let dir = out.join("run/checkpoints");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files[0].starts_with("best-epoch-000"), "{files:?}");
    assert_eq!(
        &files[1..],
        ["epoch-0002.safetensors", "epoch-0003.safetensors"]
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run/spec.json")).unwrap()).unwrap();
    assert_eq!(
        saved["train"]["checkpoint"],
        serde_json::json!({ "every": 1, "keep_last": 2, "keep_best": "val_accuracy" })
    );
    let e = lamina(&["eval", dir.join(&files[0]).to_str().unwrap(), "--json"]);
    assert!(e.status.success(), "{}", text(&e));
    assert!(text(&e).contains("test_accuracy"), "{}", text(&e));
    let _ = std::fs::remove_dir_all(out);
}

/// The tensors of a safetensors fixture holding F64 values, by name, with their shapes.
fn f64_tensors(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<f64>)> {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let data = &b[8 + n..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            assert_eq!(v["dtype"], "F64");
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let (lo, hi) = (
                v["data_offsets"][0].as_u64().unwrap() as usize,
                v["data_offsets"][1].as_u64().unwrap() as usize,
            );
            let vals = data[lo..hi]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k.clone(), (shape, vals))
        })
        .collect()
}

#[test]
fn import_onnx_of_a_pytorch_export_predicts_what_torch_computed() {
    let out = temp("import-onnx");
    let fixtures = root().join("crates/lamina-onnx/tests/fixtures");
    let ckpt = out.join("mlp.safetensors");
    let o = lamina(&[
        "import-onnx",
        fixtures.join("mlp_legacy.onnx").to_str().unwrap(),
        "-o",
        ckpt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("BatchNorm"), "{}", text(&o));
    let golden = f64_tensors(&fixtures.join("mlp.safetensors"));
    let (xs, x) = &golden["x"];
    let rows = out.join("rows.csv");
    let csv: String = x
        .chunks(xs[1])
        .map(|r| {
            r.iter()
                .map(|v| format!("{}", *v as f32))
                .collect::<Vec<_>>()
                .join(",")
                + "\n"
        })
        .collect();
    std::fs::write(&rows, csv).unwrap();
    let p = lamina(&[
        "predict",
        ckpt.to_str().unwrap(),
        rows.to_str().unwrap(),
        "--json",
    ]);
    assert!(p.status.success(), "{}", text(&p));
    let pv: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&p.stdout).trim()).unwrap();
    let got: Vec<f64> = pv
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let (_, want) = &golden["y"];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs torch {w}");
    }
    let bad = lamina(&[
        "import-onnx",
        rows.to_str().unwrap(),
        "-o",
        ckpt.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("ONNX import: not an ONNX model"),
        "{}",
        text(&bad)
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn bench_prints_json_rows() {
    let o = lamina(&[
        "bench",
        "--model",
        "seed_mlp",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--seconds",
        "0.2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(v["model"], "seed_mlp");
    assert!(v["us_per_step"].as_f64().unwrap() > 0.0);
    // one block of 10 steps at least, and blocks until 0.2 s were timed
    assert!(v["steps"].as_u64().unwrap() >= 10, "{v}");
    assert!(v["timed_seconds"].as_f64().unwrap() >= 0.2, "{v}");
}

#[test]
fn bad_input_gives_a_clear_error_and_a_nonzero_exit() {
    let dir = temp("bad");
    let w = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let bad_row = w("bad_rows.csv", "1,2,0\n3,4,1\n5,x,0\n");
    let bad_row_spec = w(
        "bad_rows.json",
        &format!(
            r#"{{"input_shape":[4,2],"layers":[{{"type":"Dense","name":"d","config":{{"units":2,"use_bias":true}}}}],"data":{{"source":"{bad_row}"}}}}"#
        ),
    );
    let no_label = w("no_label.csv", "a,b,c\n1,2,0\n3,4,1\n");
    let no_label_spec = w(
        "no_label.json",
        &format!(
            r#"{{"input_shape":[4,2],"layers":[{{"type":"Dense","name":"d","config":{{"units":2,"use_bias":true}}}}],"data":{{"source":"{no_label}","label_column":"target"}}}}"#
        ),
    );
    let misfit = w(
        "misfit.json",
        r#"{"input_shape":[32,10],"layers":[{"type":"Dense","name":"d","config":{"units":10,"use_bias":true}}],"data":{"source":"digits"},"train":{"epochs":1}}"#,
    );
    let malformed = w(
        "malformed.json",
        r#"{"input_shape":[32,10],"layers":[{"type":"Dense""#,
    );
    let typo = w(
        "typo.json",
        r#"{"input_shape":[32,64],"layers":[{"type":"Dense","name":"d","config":{"units":10,"use_bias":true}}],"train":{"learnin_rate":0.1}}"#,
    );
    let ckpt_spec = |name: &str, section: &str| {
        w(
            name,
            &format!(
                r#"{{"input_shape":[32,64],"layers":[{{"type":"Dense","name":"d","config":{{"units":10,"use_bias":true}}}}],"train":{{"checkpoint":{section}}}}}"#
            ),
        )
    };
    let ckpt_string = ckpt_spec("ckpt.json", r#"{"every":"5"}"#);
    let ckpt_typo = ckpt_spec("ckpt_typo.json", r#"{"evry":5}"#);
    let ckpt_goal = ckpt_spec(
        "ckpt_goal.json",
        r#"{"keep_best":"val_loss","goal":"lowest"}"#,
    );
    let digits = "examples/digits_mlp.json";
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["train", digits, "--checkpoint-every", "0"],
            vec!["checkpoint policy: every must be ≥ 1 epoch, got 0"],
        ),
        (
            vec!["train", digits, "--keep-last", "0"],
            vec!["keep_last must be ≥ 1, got 0"],
        ),
        (
            vec!["train", digits, "--keep-best", "val_los"],
            vec!["keep_best metric \"val_los\" is not a history metric (one of train_loss"],
        ),
        (
            vec!["train", digits, "--keep-best", "val_mse"],
            vec!["\"val_mse\" is not measured in a Classification problem"],
        ),
        (
            vec![
                "train",
                digits,
                "--keep-best",
                "val_loss",
                "--best-goal",
                "up",
            ],
            vec!["must be \"min\" or \"max\", got \"up\""],
        ),
        (
            vec!["train", &ckpt_string],
            vec!["ckpt.json: train.checkpoint.every must be an integer ≥ 1, got \"5\""],
        ),
        (
            vec!["train", &ckpt_typo],
            vec![
                "train.checkpoint: unknown key \"evry\" (known: every, keep_last, keep_best, goal)",
            ],
        ),
        (
            vec!["train", &ckpt_goal],
            vec!["train.checkpoint.goal must be \"min\" or \"max\", got \"lowest\""],
        ),
        (
            vec!["train", "no/such/spec.json"],
            vec!["no/such/spec.json"],
        ),
        (vec!["train", &malformed], vec!["malformed JSON"]),
        (vec!["train", &typo], vec!["learnin_rate", "unknown key"]),
        (
            vec![
                "train",
                "examples/digits_mlp.json",
                "--data",
                "nonexistent.csv",
            ],
            vec!["nonexistent.csv", "not a bundled name"],
        ),
        (vec!["train", &bad_row_spec], vec!["line 3"]),
        (
            vec!["train", &no_label_spec],
            vec!["no_label.csv", "target"],
        ),
        (vec!["train", &misfit], vec!["[64]", "[10]"]),
        (
            vec!["train", "examples/digits_mlp.json", "--optimizer", "adamax"],
            vec!["unknown optimizer 'adamax'"],
        ),
        (
            vec!["eval", "missing.safetensors"],
            vec!["missing.safetensors"],
        ),
        (
            vec!["bench", "--model", "resnet"],
            vec!["unknown benchmark model 'resnet'"],
        ),
        (
            vec!["bench", "--model", "seed_mlp", "--seconds=-1"],
            vec!["--seconds must be a finite number of seconds ≥ 0, not -1"],
        ),
    ];
    for (args, wants) in cases {
        let o = lamina(&args);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded: {t}");
        assert!(!t.contains("panicked"), "{args:?} panicked: {t}");
        for want in wants {
            assert!(t.contains(want), "{args:?}: '{t}' lacks '{want}'");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Image folders train (one sub-folder per class) and predict (a folder or one file); a colour
/// image for a grey model and an empty class folder are clear errors.
#[test]
fn image_folders_train_and_predict() {
    let dir = temp("images");
    let data = dir.join("shapes");
    for (class, bright_left) in [("left", true), ("right", false)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..12u8 {
            let img = image::GrayImage::from_fn(8, 8, |x, _| {
                let lit = (x < 4) == bright_left;
                image::Luma([if lit { 200 + i } else { 20 + i }])
            });
            img.save(data.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let spec = dir.join("images.json");
    std::fs::write(
        &spec,
        format!(
            r#"{{"input_shape":[4,1,8,8],"layers":[{{"type":"Flatten","name":"f"}},{{"type":"Dense","name":"out","config":{{"units":2,"use_bias":true}}}}],
               "data":{{"source":"{}","test_fraction":0.25,"val_fraction":0.0}},"train":{{"epochs":20,"batch_size":4,"learning_rate":0.05}}}}"#,
            data.display()
        ),
    )
    .unwrap();
    let out = dir.join("run");
    let o = lamina(&[
        "train",
        spec.to_str().unwrap(),
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["test_accuracy"].as_f64(), Some(1.0), "{v}");
    let ckpt = out.join("checkpoint.safetensors");
    let p = lamina(&[
        "predict",
        ckpt.to_str().unwrap(),
        data.join("right").to_str().unwrap(),
        "--json",
    ]);
    assert!(p.status.success(), "{}", text(&p));
    let pv: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&p.stdout).trim()).unwrap();
    assert!(
        pv.as_array().unwrap().iter().all(|r| r["class"] == 1),
        "{pv}"
    );
    let one = lamina(&[
        "predict",
        ckpt.to_str().unwrap(),
        data.join("left/3.png").to_str().unwrap(),
        "--json",
    ]);
    assert!(text(&one).contains("\"class\":0"), "{}", text(&one));

    // a colour image where the model takes one channel
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .save(data.join("left/colour.png"))
        .unwrap();
    let e = lamina(&[
        "train",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !e.status.success() && text(&e).contains("colour.png"),
        "{}",
        text(&e)
    );
    std::fs::remove_file(data.join("left/colour.png")).unwrap();
    // an empty class folder
    std::fs::create_dir_all(data.join("empty")).unwrap();
    let e = lamina(&[
        "train",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !e.status.success() && text(&e).contains("class folder has no images"),
        "{}",
        text(&e)
    );
    let _ = std::fs::remove_dir_all(dir);
}
