//! lamina-train's test binary: training trajectories against PyTorch (every optimizer, every
//! loss, bn_mlp, readme_cnn), the bad-input table, accumulation, clipping, schedules, modes, and
//! the digits data set.

use lamina_core::{DType, HostTensor};
use lamina_nn::{ModelBuilder, ModelSpec};
use lamina_ref::check::assert_close;
use lamina_train::*;
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[path = "train/model_checkpoint.rs"]
mod model_checkpoint;
#[path = "train/state_dict.rs"]
mod state_dict;

fn fixtures() -> &'static BTreeMap<String, HostTensor> {
    static FX: OnceLock<BTreeMap<String, HostTensor>> = OnceLock::new();
    FX.get_or_init(|| {
        lamina_ref::fixtures::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/train_steps.safetensors"
        ))
        .expect("run tools/golden/train_steps.py")
    })
}

/// The seed example: DESIGN's seed_mlp with its final softmax (trained on the logits).
fn seed_model() -> ModelSpec {
    ModelBuilder::new(&[32, 784])
        .dense(256, true, "dense1")
        .swish("swish1")
        .dense(128, true, "dense2")
        .swish("swish2")
        .dense(10, true, "output")
        .softmax(-1, "softmax")
        .compile()
        .unwrap()
}

fn cfg(optimizer: OptimizerType, lr: f64, dtype: DType) -> TrainerConfig {
    TrainerConfig {
        optimizer,
        learning_rate: lr,
        dtype,
        device: Device::Cpu,
        ..Default::default()
    }
}

/// Loads `<data>.init.*` into the trainer, runs the 5 batches `<data>.x<k>`, and compares the
/// losses with `<case>.loss` and the parameters with `<case>.after.*`.
fn check_case(model: &ModelSpec, config: TrainerConfig, data: &str, case: &str) {
    let fx = fixtures();
    let dtype = config.dtype;
    let mut t = ModelTrainer::new(model, config).unwrap();
    for p in model.params() {
        let v = &fx[&format!("{data}.init.{}", p.path)];
        t.set_state(&p.path, &v.cast(dtype).unwrap()).unwrap();
    }
    let want = fx[&format!("{case}.loss")].to_f64();
    let (lt, wt) = if dtype == DType::F64 {
        (1e-9, 1e-8)
    } else {
        (1e-5, 1e-4)
    };
    for (k, &w) in want.iter().enumerate() {
        let x = &fx[&format!("{data}.x{k}")];
        let y = &fx[&format!("{data}.y{k}")];
        let xv: Vec<f32> = x.to_f64().iter().map(|&v| v as f32).collect();
        let r = match y.dtype() {
            DType::I32 => t.train_batch(
                &xv,
                x.shape(),
                y.to_f64()
                    .iter()
                    .map(|&v| v as i32)
                    .collect::<Vec<_>>()
                    .as_slice(),
                y.shape(),
            ),
            _ => t.train_batch(
                &xv,
                x.shape(),
                y.to_f64()
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<_>>()
                    .as_slice(),
                y.shape(),
            ),
        }
        .unwrap_or_else(|e| panic!("{case} step {k}: {e}"));
        let rel = (r.loss - w).abs() / w.abs();
        assert!(
            rel <= lt,
            "{case} {dtype} step {k}: loss {} vs PyTorch {w} (relative {rel:e})",
            r.loss
        );
    }
    let prefix = format!("{case}.after.");
    for (key, v) in fx
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
    {
        let name = &key[prefix.len()..];
        if dtype == DType::F32 && case == "bn_mlp" && name == "dense2.bias" {
            // BatchNorm subtracts the batch mean, so this bias has an exactly zero gradient; what
            // is left is rounding noise (~1e-9 in f32, ~1e-17 in f64) that Adam normalises into
            // steps of size lr in f32 but not in f64. Nothing to compare.
            continue;
        }
        let (path, rows) = match name.strip_suffix(".rows") {
            Some(p) => (p, Some(v.shape()[0])),
            None => (name, None),
        };
        let mut got = t.state(path).unwrap();
        if let Some(r) = rows {
            let per: usize = got.shape()[1..].iter().product();
            let mut s = got.shape().to_vec();
            s[0] = r;
            got = HostTensor::from_f64(&s, got.dtype(), &got.to_f64()[..r * per]).unwrap();
        }
        // f64 runs: 1e-8 (1e-7 where the fixture stored f32 rows); f32 runs: 1e-4, the issue's bound
        // (Adam's m/√v turns the f32 rounding of tiny gradients into visible update differences)
        let (rtol, atol) = match (dtype, v.dtype()) {
            (DType::F64, DType::F32) => (1e-7, 1e-10),
            (DType::F64, _) => (wt, 1e-10),
            _ => (wt, 1e-4),
        };
        assert_close(&got, v, rtol, atol, &format!("{case} {dtype} {key}"));
    }
}

fn optimizer_cases() -> Vec<(&'static str, TrainerConfig)> {
    use OptimizerType::*;
    let c = |o, lr| cfg(o, lr, DType::F64);
    vec![
        ("sgd", c(Sgd, 0.1)),
        (
            "sgd_momentum",
            TrainerConfig {
                momentum: 0.9,
                dampening: 0.1,
                weight_decay: 1e-3,
                ..c(Sgd, 0.05)
            },
        ),
        (
            "sgd_nesterov",
            TrainerConfig {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 1e-3,
                ..c(Sgd, 0.05)
            },
        ),
        ("adam", c(Adam, 1e-3)),
        (
            "adam_wd",
            TrainerConfig {
                weight_decay: 1e-2,
                ..c(Adam, 1e-3)
            },
        ),
        (
            "adamw",
            TrainerConfig {
                weight_decay: 1e-2,
                ..c(AdamW, 1e-3)
            },
        ),
        ("rmsprop", c(RmsProp, 1e-3)),
        (
            "rmsprop_centered",
            TrainerConfig {
                rms_alpha: 0.9,
                momentum: 0.5,
                centered: true,
                weight_decay: 1e-3,
                ..c(RmsProp, 1e-3)
            },
        ),
        ("adagrad", c(AdaGrad, 1e-2)),
        (
            "adagrad_decay_wd",
            TrainerConfig {
                lr_decay: 0.1,
                weight_decay: 1e-3,
                ..c(AdaGrad, 1e-2)
            },
        ),
        ("adadelta", c(AdaDelta, 1.0)),
        (
            "adadelta_wd",
            TrainerConfig {
                rho: 0.8,
                weight_decay: 1e-3,
                ..c(AdaDelta, 1.0)
            },
        ),
        ("nadam", c(NAdam, 2e-3)),
        (
            "nadam_wd",
            TrainerConfig {
                weight_decay: 1e-2,
                ..c(NAdam, 2e-3)
            },
        ),
        (
            "lbfgs",
            TrainerConfig {
                lbfgs_max_iter: 5,
                lbfgs_history: 10,
                ..c(Lbfgs, 1.0)
            },
        ),
    ]
}

#[test]
fn every_optimizer_matches_pytorch_in_f64() {
    for (name, config) in optimizer_cases() {
        check_case(&seed_model(), config, "opt", &format!("opt.{name}"));
    }
}

#[test]
fn every_optimizer_matches_pytorch_in_f32() {
    for (name, config) in optimizer_cases() {
        if name == "lbfgs" {
            continue; // line-search decisions on f32 losses may branch differently; f64 is exact
        }
        check_case(
            &seed_model(),
            TrainerConfig {
                dtype: DType::F32,
                ..config
            },
            "opt",
            &format!("opt.{name}"),
        );
    }
}

fn tiny(k: usize, sigmoid: bool) -> ModelSpec {
    let b = ModelBuilder::new(&[16, 6])
        .dense(8, true, "dense1")
        .relu("relu1")
        .dense(k, true, "output");
    (if sigmoid { b.sigmoid("sig") } else { b })
        .compile()
        .unwrap()
}

#[test]
fn every_loss_matches_pytorch() {
    use LossFunction::*;
    let cases: Vec<(&str, usize, bool, LossFunction, ProblemType)> = vec![
        (
            "ce_probs",
            4,
            false,
            CrossEntropy,
            ProblemType::Classification,
        ),
        (
            "sparse_ce",
            4,
            false,
            SparseCrossEntropy,
            ProblemType::Classification,
        ),
        (
            "categorical",
            4,
            false,
            CategoricalCrossEntropy,
            ProblemType::Classification,
        ),
        (
            "bce",
            1,
            true,
            BinaryCrossEntropy,
            ProblemType::Classification,
        ),
        (
            "bce_logits",
            3,
            false,
            BceWithLogits,
            ProblemType::Classification,
        ),
        ("mse", 2, false, Mse, ProblemType::Regression),
        ("mae", 2, false, Mae, ProblemType::Regression),
        ("huber", 2, false, Huber(0.5), ProblemType::Regression),
    ];
    for dtype in [DType::F64, DType::F32] {
        for (name, k, sig, loss, problem) in &cases {
            let config = TrainerConfig {
                loss: *loss,
                problem: *problem,
                momentum: 0.9,
                batch_size: 16,
                ..cfg(OptimizerType::Sgd, 0.1, dtype)
            };
            let case = format!("loss.{name}");
            check_case(&tiny(*k, *sig), config, &case, &case);
        }
    }
}

#[test]
fn bn_mlp_and_readme_cnn_match_pytorch() {
    let bn = lamina_nn::zoo::model("bn_mlp", false).unwrap();
    let cnn = lamina_nn::zoo::model("readme_cnn", false).unwrap();
    for dtype in [DType::F64, DType::F32] {
        check_case(
            &bn,
            TrainerConfig {
                batch_size: 32,
                ..cfg(OptimizerType::Adam, 1e-3, dtype)
            },
            "bn_mlp",
            "bn_mlp",
        );
        check_case(
            &cnn,
            TrainerConfig {
                batch_size: 4,
                ..cfg(OptimizerType::Adam, 1e-3, dtype)
            },
            "readme_cnn",
            "readme_cnn",
        );
    }
}

fn small_problem() -> (ModelSpec, Vec<f32>, Vec<i32>) {
    let model = ModelBuilder::new(&[8, 4])
        .dense(16, true, "h")
        .relu("r")
        .dropout(0.25, "d")
        .dense(3, true, "out")
        .compile()
        .unwrap();
    let x: Vec<f32> = (0..32).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
    let y = vec![0, 1, 2, 0, 1, 2, 0, 1];
    (model, x, y)
}

fn snapshot(t: &ModelTrainer) -> BTreeMap<String, HostTensor> {
    t.state_names()
        .into_iter()
        .map(|n| (n.clone(), t.state(&n).unwrap()))
        .collect()
}

/// Bad input is rejected before anything runs, with a message that says what was expected and
/// what came; parameters, optimizer state and the random key are unchanged.
#[test]
fn bad_input_table_leaves_state_unchanged() {
    let (model, x, y) = small_problem();
    let mut t = ModelTrainer::new(
        &model,
        TrainerConfig {
            batch_size: 8,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    t.train_batch(&x, &[8, 4], &y, &[8]).unwrap();
    let before = snapshot(&t);
    let mut nan = x.clone();
    nan[5] = f32::NAN;
    let x64 = [0.0f32; 64];
    let y16 = [0i32; 16];
    // non-finite values past the first block of the vectorised check, and a fresh batch shape
    let mut inf = vec![0.5f32; 10_000];
    inf[9_001] = f32::NEG_INFINITY;
    let mut late_nan = x.clone();
    late_nan[31] = f32::NAN;
    let y2500 = vec![0i32; 2_500];
    // a batch large enough to be checked on several threads, bad values in two of its parts
    let mut big = vec![0.25f32; 1 << 20];
    big[700_001] = f32::NAN;
    big[900_000] = f32::INFINITY;
    let y_big = vec![0i32; 1 << 18];
    let cases: Vec<(&str, Result<BatchResult, lamina_core::Error>, Vec<&str>)> = vec![
        (
            "wrong input shape",
            t.train_batch(&x, &[8, 5], &y, &[8]),
            vec!["input shape [8,5]", "model's input [8,4]"],
        ),
        (
            "too few values",
            t.train_batch(&x[..30], &[8, 4], &y, &[8]),
            vec!["needs 32 values, got 30"],
        ),
        (
            "label count (the seed tutorial's Example 2)",
            t.train_batch(&x64, &[16, 4], &y, &[8]),
            vec!["a batch of 16 needs 16 labels", "got 8 labels"],
        ),
        (
            "label out of range",
            t.train_batch(&x, &[8, 4], &[0, 1, 2, 3, 0, 1, 2, 0], &[8]),
            vec!["label 3 is 3, outside 0..3"],
        ),
        (
            "negative label",
            t.train_batch(&x, &[8, 4], &[0, -1, 2, 0, 0, 1, 2, 0], &[8]),
            vec!["label 1 is -1"],
        ),
        (
            "NaN input",
            t.train_batch(&nan, &[8, 4], &y, &[8]),
            vec!["input value 5 is NaN"],
        ),
        (
            "NaN as the last input value",
            t.train_batch(&late_nan, &[8, 4], &y, &[8]),
            vec!["input value 31 is NaN"],
        ),
        (
            "infinity in a later block of a large batch",
            t.train_batch(&inf, &[2_500, 4], &y2500, &[2_500]),
            vec!["input value 9001 is -inf"],
        ),
        (
            "the first bad value of a batch checked in parts",
            t.train_batch(&big, &[1 << 18, 4], &y_big, &[1 << 18]),
            vec!["input value 700001 is NaN"],
        ),
        (
            "float targets for sparse CE",
            t.train_batch(&x, &[8, 4], &[0.0f32; 8], &[8]),
            vec!["takes class indices (&[i32]), got float targets"],
        ),
        (
            "evaluate with wrong label count",
            t.evaluate(&x64, &[16, 4], &y16[..8], &[8]),
            vec!["needs 16 labels"],
        ),
        (
            "empty batch",
            t.train_batch(&[], &[0, 4], &[] as &[i32], &[0]),
            vec!["any batch size ≥ 1"],
        ),
    ];
    for (what, r, wants) in cases {
        let err = r.expect_err(what).to_string();
        for w in wants {
            assert!(err.contains(w), "{what}: '{err}' lacks '{w}'");
        }
    }
    assert_eq!(snapshot(&t), before, "state changed after rejected batches");

    // regression problems refuse class indices; NaN targets are refused
    let reg = ModelBuilder::new(&[4, 2])
        .dense(1, true, "o")
        .compile()
        .unwrap();
    let mut r = ModelTrainer::new(
        &reg,
        TrainerConfig {
            loss: LossFunction::Mse,
            problem: ProblemType::Regression,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let e = r
        .train_batch(&[0.0; 8], &[4, 2], &[1, 2, 3, 4], &[4])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("takes float targets") && e.contains("got class indices"),
        "{e}"
    );
    let e = r
        .train_batch(&[0.0; 8], &[4, 2], &[1.0, f32::INFINITY, 0.0, 0.0], &[4])
        .unwrap_err()
        .to_string();
    assert!(e.contains("target 1 is inf"), "{e}");
    // invalid hyper-parameters are rejected at construction
    for (c, want) in [
        (
            TrainerConfig {
                beta1: 1.0,
                ..Default::default()
            },
            "beta1 and beta2 must be in [0, 1)",
        ),
        (
            TrainerConfig {
                learning_rate: -1.0,
                ..Default::default()
            },
            "learning_rate must be a finite number ≥ 0, got -1",
        ),
        (
            TrainerConfig {
                optimizer: OptimizerType::Sgd,
                nesterov: true,
                ..Default::default()
            },
            "Nesterov momentum needs momentum > 0",
        ),
        (
            TrainerConfig {
                loss: LossFunction::Huber(0.0),
                problem: ProblemType::Regression,
                ..Default::default()
            },
            "Huber delta must be > 0",
        ),
        (
            TrainerConfig {
                batch_size: 0,
                ..Default::default()
            },
            "batch_size must be ≥ 1",
        ),
        (
            TrainerConfig {
                device: Device::Cuda(99),
                ..Default::default()
            },
            "device cuda:99 asked for",
        ),
    ] {
        let e = ModelTrainer::new(&model, c).err().expect(want).to_string();
        assert!(e.contains(want), "'{e}' lacks '{want}'");
    }
}

#[test]
fn any_batch_size_and_evaluation_mode() {
    let (model, x, y) = small_problem();
    let mut t = ModelTrainer::new(
        &model,
        TrainerConfig {
            batch_size: 8,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    // a partial batch of 5 is a real batch of 5
    let r = t.train_batch(&x[..20], &[5, 4], &y[..5], &[5]).unwrap();
    assert_eq!(r.samples, 5);
    // evaluation is deterministic (dropout off) and predict works for any size
    let a = t.evaluate(&x, &[8, 4], &y, &[8]).unwrap();
    let b = t.evaluate(&x, &[8, 4], &y, &[8]).unwrap();
    assert_eq!(a, b);
    let p1 = t.predict(&x[..4], &[1, 4]).unwrap();
    let p8 = t.predict(&x, &[8, 4]).unwrap();
    assert_eq!(p1.shape, vec![1, 3]);
    assert_close(
        &HostTensor::f32(&[1, 3], p1.values.clone()).unwrap(),
        &HostTensor::f32(&[1, 3], p8.values[..3].to_vec()).unwrap(),
        1e-6,
        1e-7,
        "predict row 0",
    );
    // softmax-ending models predict probabilities; training on them uses the logits
    let sm = ModelBuilder::new(&[4, 4])
        .dense(3, true, "d")
        .softmax(-1, "s")
        .compile()
        .unwrap();
    let mut ts = ModelTrainer::new(
        &sm,
        TrainerConfig {
            batch_size: 4,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let p = ts.predict(&x[..16], &[4, 4]).unwrap();
    for row in p.values.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    // a single logit output (BCE with logits) splits the classes at 0, not at 0.5
    let logit = ModelBuilder::new(&[8, 4])
        .dense(1, true, "o")
        .compile()
        .unwrap();
    let mut tl = ModelTrainer::new(
        &logit,
        TrainerConfig {
            loss: LossFunction::BceWithLogits,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let pl = tl.predict(&x, &[8, 4]).unwrap();
    assert_eq!(pl.binary_threshold, 0.0);
    let want: Vec<usize> = pl.values.iter().map(|&v| (v > 0.0) as usize).collect();
    assert_eq!(pl.classes(), want);
    // two training steps draw different dropout masks: the same batch gives different losses
    let l1 = t.train_batch(&x, &[8, 4], &y, &[8]).unwrap().loss;
    let before = t.state("rng").unwrap().to_f64();
    let l2 = t.train_batch(&x, &[8, 4], &y, &[8]).unwrap().loss;
    assert_ne!(l1, l2);
    assert_eq!(t.state("rng").unwrap().to_f64()[1], before[1] + 1.0);
}

/// Accumulating the gradient of two half batches equals one step on the whole batch.
#[test]
fn gradient_accumulation_equals_a_full_batch() {
    let model = ModelBuilder::new(&[8, 4])
        .dense(6, true, "h")
        .tanh("t")
        .dense(3, true, "out")
        .compile()
        .unwrap();
    let (_, x, y) = small_problem();
    let base = TrainerConfig {
        batch_size: 8,
        dtype: DType::F64,
        ..cfg(OptimizerType::Sgd, 0.1, DType::F64)
    };
    let mut full = ModelTrainer::new(&model, base.clone()).unwrap();
    full.train_batch(&x, &[8, 4], &y, &[8]).unwrap();
    let mut acc = ModelTrainer::new(
        &model,
        TrainerConfig {
            accumulate_grad_batches: 2,
            ..base
        },
    )
    .unwrap();
    acc.train_batch(&x[..16], &[4, 4], &y[..4], &[4]).unwrap();
    assert_eq!(acc.steps(), 0, "no update after the first half");
    assert_eq!(
        acc.state("h.weight").unwrap(),
        full.model().initial_state(DType::F64).unwrap()["h.weight"]
    );
    acc.train_batch(&x[16..], &[4, 4], &y[4..], &[4]).unwrap();
    assert_eq!(acc.steps(), 1);
    for p in ["h.weight", "h.bias", "out.weight", "out.bias"] {
        assert_close(
            &acc.state(p).unwrap(),
            &full.state(p).unwrap(),
            1e-12,
            1e-14,
            p,
        );
    }
}

/// clip_grad_norm bounds the update: with SGD the step is lr·max_norm long when clipping acts.
#[test]
fn gradient_clipping() {
    let (model, x, y) = small_problem();
    let model = ModelBuilder::new(&model.input_shape)
        .dense(3, true, "out")
        .compile()
        .unwrap();
    let base = TrainerConfig {
        batch_size: 8,
        ..cfg(OptimizerType::Sgd, 1.0, DType::F64)
    };
    let mut t = ModelTrainer::new(
        &model,
        TrainerConfig {
            clip_grad_norm: Some(1e-3),
            ..base.clone()
        },
    )
    .unwrap();
    let init = model.initial_state(DType::F64).unwrap();
    t.train_batch(&x, &[8, 4], &y, &[8]).unwrap();
    let mut sq = 0.0;
    for p in ["out.weight", "out.bias"] {
        sq += t
            .state(p)
            .unwrap()
            .to_f64()
            .iter()
            .zip(init[p].to_f64())
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>();
    }
    assert!((sq.sqrt() - 1e-3).abs() < 1e-8, "step length {}", sq.sqrt());
    let mut v = ModelTrainer::new(
        &model,
        TrainerConfig {
            clip_grad_value: Some(1e-4),
            ..base
        },
    )
    .unwrap();
    v.train_batch(&x, &[8, 4], &y, &[8]).unwrap();
    let d: Vec<f64> = v
        .state("out.weight")
        .unwrap()
        .to_f64()
        .iter()
        .zip(init["out.weight"].to_f64())
        .map(|(a, b)| (a - b).abs())
        .collect();
    assert!(d.iter().all(|&x| x <= 1e-4 + 1e-12) && d.iter().any(|&x| x > 0.99e-4));
}

/// The learning rate lives in a device scalar the schedule writes: StepLR changes the weights.
#[test]
fn schedules_act_inside_the_compiled_step() {
    let (model, x, y) = small_problem();
    let run = |schedule: LrSchedule| {
        let mut t = ModelTrainer::new(
            &model,
            TrainerConfig {
                batch_size: 8,
                lr_schedule: schedule,
                schedule_step: ScheduleStep::Batch,
                ..cfg(OptimizerType::Sgd, 0.1, DType::F64)
            },
        )
        .unwrap();
        let mut lrs = Vec::new();
        for _ in 0..4 {
            lrs.push(t.learning_rate());
            t.train_batch(&x, &[8, 4], &y, &[8]).unwrap();
        }
        (t.state("h.weight").unwrap(), lrs)
    };
    let (w_const, lr_const) = run(LrSchedule::Constant);
    let (w_step, lr_step) = run(LrSchedule::Step {
        step_size: 2,
        gamma: 0.1,
    });
    assert_eq!(lr_const, vec![0.1; 4]);
    assert_close(
        &HostTensor::f64(&[4], lr_step).unwrap(),
        &HostTensor::f64(&[4], vec![0.1, 0.1, 0.01, 0.01]).unwrap(),
        1e-15,
        0.0,
        "StepLR",
    );
    assert_ne!(w_const, w_step);
}

fn digits() -> (InMemoryDataset, InMemoryDataset) {
    use std::io::Read;
    let f = std::fs::File::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/digits.csv.gz"
    ))
    .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut text)
        .unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Vec<f32> = line.split(',').map(|s| s.trim().parse().unwrap()).collect();
        x.extend(v[..64].iter().map(|p| p / 16.0));
        y.push(v[64] as i32);
    }
    let all = InMemoryDataset::new(x, &[64], LabelData::Classes(y)).unwrap();
    let order = shuffled(all.len(), 0, 0);
    let cut = all.len() * 4 / 5;
    (all.subset(&order[..cut]), all.subset(&order[cut..]))
}

/// DESIGN's acceptance model on scikit-learn's digits: 64-128-relu-10, Adam 1e-3, batch 32,
/// 30 epochs, fixed 80/20 split → at least 96% test accuracy.
#[test]
fn digits_mlp_reaches_96_percent() {
    let (train, test) = digits();
    let model = ModelBuilder::new(&[32, 64])
        .dense(128, true, "hidden")
        .relu("relu")
        .dense(10, true, "output")
        .compile()
        .unwrap();
    let mut t = ModelTrainer::new(
        &model,
        TrainerConfig {
            batch_size: 32,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let h = t
        .fit(
            &train,
            Some(&test),
            FitOptions {
                epochs: 30,
                ..Default::default()
            },
        )
        .unwrap();
    let last = h.epochs.last().unwrap();
    println!(
        "digits: train loss {:.4}, test accuracy {:.4}",
        last.train_loss,
        last.val_accuracy.unwrap()
    );
    assert!(last.val_accuracy.unwrap() >= 0.96, "{last:?}");
    assert!(h.epochs[0].train_loss > last.train_loss);
}

#[test]
fn early_stopping_stops() {
    let (train, test) = digits();
    let model = ModelBuilder::new(&[32, 64])
        .dense(10, true, "output")
        .compile()
        .unwrap();
    let mut t = ModelTrainer::new(
        &model,
        TrainerConfig {
            device: Device::Cpu,
            learning_rate: 0.5,
            optimizer: OptimizerType::Sgd,
            ..Default::default()
        },
    )
    .unwrap();
    let es = EarlyStopping::new(Monitor::ValLoss, 1, 10.0); // an improvement of 10 is never reached
    let h = t
        .fit(
            &train,
            Some(&test),
            FitOptions {
                epochs: 20,
                callbacks: vec![Box::new(es)],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        h.epochs.len(),
        2,
        "stops after one epoch without improvement"
    );
}

/// Save, load, continue: the loaded trainer continues exactly as the original (same process here;
/// the cross-process resume test belongs to the checkpoint issue).
#[test]
fn checkpoint_round_trip_resumes_exactly() {
    let (model, x, y) = small_problem();
    let config = TrainerConfig {
        batch_size: 8,
        lr_schedule: LrSchedule::reduce_on_plateau(),
        ..cfg(OptimizerType::Adam, 1e-2, DType::F32)
    };
    let mut a = ModelTrainer::new(&model, config).unwrap();
    for _ in 0..3 {
        a.train_batch(&x, &[8, 4], &y, &[8]).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("lamina-ckpt-{}", std::process::id()));
    let path = dir.join("ckpt.safetensors");
    a.save_checkpoint(&path).unwrap();
    let mut b = ModelTrainer::load_checkpoint(&path, &lamina_nn::LayerRegistry::new(), Device::Cpu)
        .unwrap();
    assert_eq!(snapshot(&a), snapshot(&b));
    for _ in 0..3 {
        let (ra, rb) = (
            a.train_batch(&x, &[8, 4], &y, &[8]).unwrap(),
            b.train_batch(&x, &[8, 4], &y, &[8]).unwrap(),
        );
        assert_eq!(ra, rb);
    }
    assert_eq!(snapshot(&a), snapshot(&b));
    // a truncated file is an error naming the file
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = ModelTrainer::load_checkpoint(&path, &lamina_nn::LayerRegistry::new(), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("ckpt.safetensors"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The batch of step `k` (deterministic, so an interrupted and an uninterrupted run see the same).
fn batch_of_step(k: u64) -> (Vec<f32>, Vec<i32>) {
    let x = (0..32)
        .map(|i| (((i as u64 * 7919 + k * 104729) % 97) as f32 / 48.5) - 1.0)
        .collect();
    let y = (0..8).map(|i| ((i as u64 + k) % 3) as i32).collect();
    (x, y)
}

fn resume_trainer() -> ModelTrainer {
    let (model, _, _) = small_problem(); // has dropout: the random key must resume too
    ModelTrainer::new(
        &model,
        TrainerConfig {
            batch_size: 8,
            seed: 3,
            ..cfg(OptimizerType::Adam, 1e-2, DType::F32)
        },
    )
    .unwrap()
}

fn run_steps(t: &mut ModelTrainer, n: u64) {
    for _ in 0..n {
        let (x, y) = batch_of_step(t.steps());
        t.train_batch(&x, &[8, 4], &y, &[8]).unwrap();
    }
}

/// 100 steps, save, load in a new process, 100 more steps: bit-identical to 200 uninterrupted
/// steps, dropout on.
#[test]
fn resume_in_a_new_process_is_bit_identical() {
    let dir = std::env::temp_dir().join(format!("lamina-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut whole = resume_trainer();
    run_steps(&mut whole, 200);
    let mut first = resume_trainer();
    run_steps(&mut first, 100);
    let (half, done) = (dir.join("half.safetensors"), dir.join("done.safetensors"));
    first.save_checkpoint(&half).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "resume_child",
            "--exact",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env("LAMINA_RESUME_FROM", &half)
        .env("LAMINA_RESUME_TO", &done)
        .status()
        .unwrap();
    assert!(status.success(), "the child process failed");
    let resumed =
        ModelTrainer::load_checkpoint(&done, &lamina_nn::LayerRegistry::new(), Device::Cpu)
            .unwrap();
    assert_eq!(resumed.steps(), 200);
    assert_eq!(
        snapshot(&resumed),
        snapshot(&whole),
        "parameters, optimizer state and the random key must be bit-identical"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
#[ignore = "the second half of resume_in_a_new_process_is_bit_identical, run in a child process"]
fn resume_child() {
    let from = std::env::var("LAMINA_RESUME_FROM")
        .expect("run by resume_in_a_new_process_is_bit_identical");
    let to =
        std::env::var("LAMINA_RESUME_TO").expect("run by resume_in_a_new_process_is_bit_identical");
    let mut t = ModelTrainer::load_checkpoint(&from, &lamina_nn::LayerRegistry::new(), Device::Cpu)
        .unwrap();
    assert_eq!(t.steps(), 100);
    run_steps(&mut t, 100);
    t.save_checkpoint(&to).unwrap();
}

/// Rewrites a checkpoint's tensors (keeping its metadata) through `edit`.
fn rewrite_checkpoint(
    from: &std::path::Path,
    to: &std::path::Path,
    edit: impl FnOnce(&mut BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let bytes = std::fs::read(from).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map: BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, safetensors::tensor::TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::tensor::serialize(views, header.metadata()).unwrap();
    std::fs::write(to, out).unwrap();
}

/// A raw safetensors file with the given header JSON and data bytes.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

/// Hostile checkpoint files: each gives an error naming the file (never a panic, never an
/// allocation beyond the file's size: the file is read once and the safetensors crate checks
/// header lengths and offsets before anything is decoded).
#[test]
fn hostile_checkpoints_are_rejected() {
    let dir = std::env::temp_dir().join(format!("lamina-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = ModelBuilder::new(&[2, 2])
        .dense(2, true, "d")
        .compile()
        .unwrap();
    let t = ModelTrainer::new(
        &model,
        TrainerConfig {
            batch_size: 2,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let good = dir.join("good.safetensors");
    t.save_checkpoint(&good).unwrap();
    let reg = lamina_nn::LayerRegistry::new();
    let load = |p: &std::path::Path| {
        ModelTrainer::load_checkpoint(p, &reg, Device::Cpu)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    load(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    // truncated at every byte offset
    let cut = dir.join("cut.safetensors");
    for n in 0..bytes.len() {
        std::fs::write(&cut, &bytes[..n]).unwrap();
        let e = load(&cut).expect_err(&format!("truncated at {n} of {}", bytes.len()));
        assert!(e.contains("cut.safetensors"), "truncated at {n}: {e}");
    }
    let f32x2 = [0u8; 8];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "header longer than the file",
            {
                let mut b = bytes.clone();
                b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                b
            },
            "not a safetensors checkpoint",
        ),
        (
            "out-of-bounds offsets",
            raw_file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,64]}}"#,
                &f32x2,
            ),
            "not a safetensors checkpoint",
        ),
        (
            "overlapping offsets",
            raw_file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0u8; 12],
            ),
            "not a safetensors checkpoint",
        ),
        (
            "dimensions whose product overflows",
            raw_file(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                &f32x2,
            ),
            "not a safetensors checkpoint",
        ),
        (
            "no lamina metadata",
            raw_file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &f32x2,
            ),
            "metadata has no \"format\"",
        ),
        (
            "not JSON",
            raw_file("[[[[", &[]),
            "not a safetensors checkpoint",
        ),
    ];
    for (what, b, want) in cases {
        let p = dir.join(format!("{}.safetensors", what.replace(' ', "_")));
        std::fs::write(&p, &b).unwrap();
        let e = load(&p).expect_err(what);
        assert!(
            e.contains(want) && e.contains(".safetensors"),
            "{what}: {e}"
        );
        // the same from bytes in memory (what the checkpoint_load fuzz target drives)
        let e = Inferencer::from_bytes(&b, &reg, Device::Cpu)
            .err()
            .expect(what)
            .to_string();
        assert!(
            e.contains(want) && e.starts_with("checkpoint: "),
            "{what}: {e}"
        );
    }
    type Edit = fn(&mut BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>);
    let edits: Vec<(&str, Edit, &str)> = vec![
        (
            "wrong shape",
            |m| {
                let e = m.get_mut("d.bias").unwrap();
                e.1 = vec![1, 2];
            },
            "state \"d.bias\" is f32[2], got f32[1,2]",
        ),
        (
            "wrong dtype",
            |m| {
                let e = m.get_mut("d.bias").unwrap();
                e.0 = safetensors::Dtype::I32;
            },
            "state \"d.bias\" is f32[2], got i32[2]",
        ),
        (
            "missing tensor",
            |m| {
                m.remove("d.weight");
            },
            "tensor \"d.weight\" is missing",
        ),
        (
            "optimizer scalars of the wrong length",
            |m| {
                let e = m.get_mut("optim.hyper").unwrap();
                e.1 = vec![5];
                e.2.truncate(20);
            },
            "\"optim.hyper\" has 5 values, expected 6",
        ),
        (
            "extra tensor",
            |m| {
                m.insert(
                    "stranger".into(),
                    (safetensors::Dtype::F32, vec![1], vec![0; 4]),
                );
            },
            "tensor \"stranger\" does not belong to this model",
        ),
        (
            "an int64 tensor other than num_batches_tracked",
            |m| {
                m.insert(
                    "d.steps".into(),
                    (safetensors::Dtype::I64, vec![], vec![0; 8]),
                );
            },
            "tensor \"d.steps\" has dtype I64, expected f32, f64 or i32",
        ),
        (
            "num_batches_tracked of a model without BatchNorm",
            |m| {
                m.insert(
                    "d.num_batches_tracked".into(),
                    (safetensors::Dtype::I64, vec![], vec![0; 8]),
                );
            },
            "tensor \"d.num_batches_tracked\" does not belong to this model",
        ),
        (
            "NaN weight",
            |m| {
                let e = m.get_mut("d.weight").unwrap();
                e.2[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
            },
            "tensor \"d.weight\" holds NaN at element 1",
        ),
    ];
    for (what, edit, want) in edits {
        let p = dir.join(format!("{}.safetensors", what.replace(' ', "_")));
        rewrite_checkpoint(&good, &p, edit);
        let e = load(&p).expect_err(what);
        assert!(e.contains(want), "{what}: {e}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An inference-only load predicts what the trainer predicts, for any batch size.
#[test]
fn inferencer_predicts_like_the_trainer() {
    let (model, x, y) = small_problem();
    let mut t = ModelTrainer::new(
        &model,
        TrainerConfig {
            batch_size: 8,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    t.train_batch(&x, &[8, 4], &y, &[8]).unwrap();
    let dir = std::env::temp_dir().join(format!("lamina-inf-{}", std::process::id()));
    let path = dir.join("c.safetensors");
    t.save_checkpoint(&path).unwrap();
    let mut inf = Inferencer::load(&path, Device::Cpu).unwrap();
    for n in [1, 3, 8] {
        assert_eq!(
            inf.predict(&x[..4 * n], &[n, 4]).unwrap(),
            t.predict(&x[..4 * n], &[n, 4]).unwrap()
        );
    }
    let e = inf.predict(&x[..8], &[2, 3]).unwrap_err().to_string();
    assert!(e.contains("does not match the model's input"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Killing the saving process at random moments: the file on disk is always a whole checkpoint
/// (the old or the new one) and loads.
#[test]
fn a_killed_save_leaves_a_loadable_checkpoint() {
    let dir = std::env::temp_dir().join(format!("lamina-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.safetensors");
    let t = resume_trainer();
    t.save_checkpoint(&path).unwrap();
    let mut rng = lamina_ref::check::TestRng::new(11);
    for round in 0..200 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "save_loop_child",
                "--exact",
                "--ignored",
                "--test-threads",
                "1",
            ])
            .env("LAMINA_SAVE_LOOP", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(rng.below(20_000) as u64));
        let _ = child.kill();
        let _ = child.wait();
        let loaded =
            ModelTrainer::load_checkpoint(&path, &lamina_nn::LayerRegistry::new(), Device::Cpu);
        assert!(
            loaded.is_ok(),
            "round {round}: {}",
            loaded.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
#[ignore = "the saving process that a_killed_save_leaves_a_loadable_checkpoint kills"]
fn save_loop_child() {
    let path = std::env::var("LAMINA_SAVE_LOOP")
        .expect("run by a_killed_save_leaves_a_loadable_checkpoint");
    let mut t = ModelTrainer::load_checkpoint(&path, &lamina_nn::LayerRegistry::new(), Device::Cpu)
        .unwrap();
    loop {
        run_steps(&mut t, 1);
        t.save_checkpoint(&path).unwrap();
    }
}

/// `submit_batch` (results read later, in blocks) gives `train_batch`'s results and state exactly,
/// for every way a step can run: Adam in f32, f64, gradient accumulation, L-BFGS (synchronous);
/// a rejected batch on that path changes nothing and says what was wrong.
#[test]
fn submitted_steps_equal_synchronous_steps() {
    let (model, x, y) = small_problem();
    let base = TrainerConfig {
        batch_size: 8,
        device: Device::Cpu,
        ..Default::default()
    };
    let cases = [
        ("adam f32", base.clone()),
        (
            "adam f64",
            TrainerConfig {
                dtype: DType::F64,
                ..base.clone()
            },
        ),
        (
            "accumulate 2",
            TrainerConfig {
                accumulate_grad_batches: 2,
                ..base.clone()
            },
        ),
        (
            "lbfgs",
            TrainerConfig {
                optimizer: OptimizerType::Lbfgs,
                learning_rate: 0.5,
                ..base.clone()
            },
        ),
    ];
    // batch k: the fixed batch with its values shifted by k
    let batch = |k: usize| -> Vec<f32> { x.iter().map(|v| v + k as f32 * 0.125).collect() };
    for (name, config) in cases {
        let mut sync = ModelTrainer::new(&model, config.clone()).unwrap();
        let want: Vec<BatchResult> = (0..7)
            .map(|k| sync.train_batch(&batch(k), &[8, 4], &y, &[8]).unwrap())
            .collect();
        let mut sub = ModelTrainer::new(&model, config).unwrap();
        let mut got = Vec::new();
        for k in 0..7 {
            sub.submit_batch(&batch(k), &[8, 4], &y, &[8]).unwrap();
            if k == 2 {
                got.push(sub.next_result().unwrap().unwrap());
            }
            if k == 4 {
                got.extend(sub.wait_results().unwrap());
            }
        }
        assert_eq!(sub.pending_results(), 2, "{name}");
        // a bad batch between submitted steps: rejected, nothing changes
        let before = snapshot(&sub);
        let mut nan = batch(7);
        nan[17] = f32::NAN;
        let e = sub.submit_batch(&nan, &[8, 4], &y, &[8]).unwrap_err();
        assert!(
            e.to_string().contains("input value 17 is NaN"),
            "{name}: {e}"
        );
        let e = sub
            .submit_batch(&batch(7), &[8, 4], &[0, 1, 2, 5, 0, 1, 2, 0], &[8])
            .unwrap_err();
        assert!(e.to_string().contains("label 3 is 5"), "{name}: {e}");
        assert_eq!(snapshot(&sub), before, "{name}: state changed");
        assert_eq!(sub.pending_results(), 2, "{name}");
        got.extend(sub.wait_results().unwrap());
        assert!(sub.next_result().is_none());
        assert_eq!(got, want, "{name}: results");
        assert_eq!(snapshot(&sub), snapshot(&sync), "{name}: state");
        assert_eq!(sub.steps(), sync.steps(), "{name}");
        assert_eq!(
            sub.device_bytes(),
            0,
            "{name}: the CPU holds no device memory"
        );
    }
}
