//! The checkpoint callback: which files every-N / keep-K / best-by-metric policies leave, that
//! each file is exactly the trainer of its epoch, and that bad policies are clear errors.

use lamina_core::HostTensor;
use lamina_nn::{LayerRegistry, ModelBuilder, ModelSpec};
use lamina_train::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn model() -> ModelSpec {
    ModelBuilder::new(&[8, 4])
        .dense(6, true, "h")
        .batch_norm(1e-5, 0.1, true, "bn")
        .relu("r")
        .dense(3, true, "out")
        .compile()
        .unwrap()
}

fn trainer() -> ModelTrainer {
    ModelTrainer::new(
        &model(),
        TrainerConfig {
            batch_size: 8,
            learning_rate: 0.05,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap()
}

/// 16 samples of 4 features, 3 classes.
fn samples() -> (Vec<f32>, Vec<i32>) {
    let x: Vec<f32> = (0..64).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
    (x, (0..16).map(|i| i % 3).collect())
}

fn data() -> InMemoryDataset {
    let (x, y) = samples();
    InMemoryDataset::new(x, &[4], LabelData::Classes(y)).unwrap()
}

fn temp(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-mc-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every buffer, the step count and num_batches_tracked: what "the trainer of an epoch" means.
type Snapshot = (BTreeMap<String, HostTensor>, u64, u64);

fn snapshot(t: &ModelTrainer) -> Snapshot {
    let state = t
        .state_names()
        .into_iter()
        .map(|n| (n.clone(), t.state(&n).unwrap()))
        .collect();
    (state, t.steps(), t.batches_tracked())
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The epoch a checkpoint file name carries.
fn epoch_of(name: &str) -> usize {
    name.trim_end_matches(".safetensors")
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every file left is a whole checkpoint equal to the trainer at the end of its epoch.
fn check_files_match(dir: &Path, snaps: &BTreeMap<usize, Snapshot>, what: &str) {
    for f in files(dir) {
        let t = ModelTrainer::load_checkpoint(dir.join(&f), &LayerRegistry::new(), Device::Cpu)
            .unwrap_or_else(|e| panic!("{what}: {f}: {e}"));
        assert!(
            snapshot(&t) == snaps[&epoch_of(&f)],
            "{what}: {f} differs from its epoch"
        );
    }
}

fn log(epoch: usize, val_loss: f64, val_accuracy: f64) -> EpochLog {
    EpochLog {
        epoch,
        train_loss: 1.0,
        train_accuracy: Some(0.5),
        train_mse: None,
        val_loss: Some(val_loss),
        val_accuracy: Some(val_accuracy),
        val_mse: None,
        lr: 0.05,
        seconds: 0.0,
    }
}

/// Policies against scripted epoch logs (the metric values are the row's; between epochs the
/// trainer takes a real step, so every epoch's weights differ): the files left, and each one
/// loading as exactly its epoch's trainer.
#[test]
fn policies_keep_the_right_files() {
    let min = |m: &str| Some((m.to_string(), Goal::Min));
    let max = |m: &str| Some((m.to_string(), Goal::Max));
    let nan = f64::NAN;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        &str,
        Option<usize>,
        Option<usize>,
        Option<(String, Goal)>,
        Vec<f64>,
        Vec<&str>,
    )> = vec![
        (
            "every epoch, all kept",
            Some(1),
            None,
            None,
            vec![0.5; 4],
            vec![
                "epoch-0001.safetensors",
                "epoch-0002.safetensors",
                "epoch-0003.safetensors",
                "epoch-0004.safetensors",
            ],
        ),
        (
            "every 3rd",
            Some(3),
            None,
            None,
            vec![0.5; 7],
            vec!["epoch-0003.safetensors", "epoch-0006.safetensors"],
        ),
        (
            "every epoch, last 2",
            Some(1),
            Some(2),
            None,
            vec![0.5; 5],
            vec!["epoch-0004.safetensors", "epoch-0005.safetensors"],
        ),
        (
            "every 2nd, last 1",
            Some(2),
            Some(1),
            None,
            vec![0.5; 5],
            vec!["epoch-0004.safetensors"],
        ),
        (
            "best val_loss (min), a tie keeps the earlier",
            None,
            None,
            min("val_loss"),
            vec![0.9, 0.5, 0.7, 0.4, 0.4],
            vec!["best-epoch-0004.safetensors"],
        ),
        (
            "best val_accuracy (max)",
            None,
            None,
            max("val_accuracy"),
            vec![0.5, 0.8, 0.7, 0.8],
            vec!["best-epoch-0002.safetensors"],
        ),
        (
            "best val_loss by max goal",
            None,
            None,
            max("val_loss"),
            vec![0.9, 0.5, 1.7, 0.4],
            vec!["best-epoch-0003.safetensors"],
        ),
        (
            "NaN never improves",
            None,
            None,
            min("val_loss"),
            vec![nan, 0.5, nan, 0.6],
            vec!["best-epoch-0002.safetensors"],
        ),
        (
            "every 2nd, last 1, and the best",
            Some(2),
            Some(1),
            min("val_loss"),
            vec![0.3, 0.5, 0.2, 0.6],
            vec!["best-epoch-0003.safetensors", "epoch-0004.safetensors"],
        ),
        (
            "the best epoch is also a periodic one",
            Some(1),
            Some(1),
            min("val_loss"),
            vec![0.3, 0.1, 0.2],
            vec!["best-epoch-0002.safetensors", "epoch-0003.safetensors"],
        ),
    ];
    let (x, y) = samples();
    let (x, y) = (&x[..32], &y[..8]);
    for (i, (what, every, keep_last, keep_best, values, want)) in rows.into_iter().enumerate() {
        let dir = temp(&format!("row{i}"));
        let mut cb = ModelCheckpoint::new(CheckpointPolicy {
            dir: dir.clone(),
            every,
            keep_last,
            keep_best,
        })
        .unwrap();
        let mut t = trainer();
        let mut history = History::default();
        let mut snaps = BTreeMap::new();
        for (e, &v) in values.iter().enumerate() {
            t.train_batch(x, &[8, 4], y, &[8]).unwrap();
            // the value is both the loss and the accuracy: each row reads one of them
            history.epochs.push(log(e + 1, v, v));
            cb.after_epoch(&t, &history).unwrap();
            snaps.insert(e + 1, snapshot(&t));
        }
        assert_eq!(files(&dir), want, "{what}");
        check_files_match(&dir, &snaps, what);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Records the trainer after every epoch (as the checkpoint callback sees it).
struct Recorder(std::sync::Arc<std::sync::Mutex<BTreeMap<usize, Snapshot>>>);

impl Callback for Recorder {
    fn after_epoch(&mut self, t: &ModelTrainer, h: &History) -> lamina_core::Result<()> {
        let epoch = h.epochs.last().unwrap().epoch;
        self.0.lock().unwrap().insert(epoch, snapshot(t));
        Ok(())
    }
}

/// Through `fit`: the best file is the epoch with the lowest validation loss in the history, and
/// resuming from it gives exactly that epoch's trainer (weights, optimizer state, counters).
#[test]
fn fit_keeps_the_best_epoch_exactly() {
    let dir = temp("fit");
    let (train, val) = (data(), data().subset(&[0, 3, 5, 7, 9, 11, 13, 15]));
    let snaps = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let saver = ModelCheckpoint::new(CheckpointPolicy {
        every: Some(1),
        keep_last: Some(2),
        keep_best: Some(("val_loss".into(), Goal::Min)),
        ..CheckpointPolicy::new(&dir)
    })
    .unwrap();
    let mut t = trainer();
    let h = t
        .fit(
            &train,
            Some(&val),
            FitOptions {
                epochs: 6,
                callbacks: vec![Box::new(Recorder(snaps.clone())), Box::new(saver)],
                ..Default::default()
            },
        )
        .unwrap();
    let losses: Vec<f64> = h.epochs.iter().map(|e| e.val_loss.unwrap()).collect();
    let best = 1
        + (0..losses.len())
            .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
            .unwrap();
    assert_eq!(
        files(&dir),
        vec![best_file_name(best), epoch_file_name(5), epoch_file_name(6)],
        "val losses {losses:?}"
    );
    assert_eq!(
        best_checkpoint_in(&dir),
        Some(dir.join(best_file_name(best)))
    );
    assert_eq!(
        latest_checkpoint_in(&dir),
        Some(dir.join(epoch_file_name(6)))
    );
    let snaps = snaps.lock().unwrap();
    check_files_match(&dir, &snaps, "fit");
    assert_eq!(
        snaps[&6],
        snapshot(&t),
        "the last epoch's file is the trainer fit returns"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad policies: each is a clear error — at construction for the policy alone, before the first
/// epoch for a metric this run cannot measure, and from `fit` for a folder that cannot be written.
#[test]
fn bad_policies_are_clear_errors() {
    let dir = temp("bad");
    let p = |every, keep_last, best: Option<&str>| CheckpointPolicy {
        every,
        keep_last,
        keep_best: best.map(|m| (m.to_string(), Goal::of(m))),
        ..CheckpointPolicy::new(&dir)
    };
    let cases: Vec<(&str, CheckpointPolicy, &str)> = vec![
        ("every 0", p(Some(0), None, None), "every must be ≥ 1 epoch, got 0"),
        ("keep 0", p(Some(1), Some(0), None), "keep_last must be ≥ 1, got 0 (leave it out to keep every checkpoint)"),
        ("keep without every", p(None, Some(3), Some("val_loss")), "keep_last 3 needs every"),
        ("unknown metric", p(Some(1), None, Some("val_los")), "keep_best metric \"val_los\" is not a history metric (one of train_loss, train_accuracy"),
        ("nothing to save", p(None, None, None), "it saves nothing"),
    ];
    for (what, policy, want) in cases {
        let e = ModelCheckpoint::new(policy).err().expect(what).to_string();
        assert!(
            e.contains("checkpoint policy") && e.contains(want),
            "{what}: {e}"
        );
    }
    let e = Goal::parse("smallest").unwrap_err().to_string();
    assert!(
        e.contains("must be \"min\" or \"max\", got \"smallest\""),
        "{e}"
    );

    // errors that need the run: no epoch is trained, no file written
    let a_file = dir.join("not-a-folder");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&a_file, b"x").unwrap();
    let runs: Vec<(&str, CheckpointPolicy, bool, &str)> = vec![
        (
            "val_loss without validation",
            p(Some(1), None, Some("val_loss")),
            false,
            "keep_best metric \"val_loss\" needs a validation set, and fit has none",
        ),
        (
            "mse of a classification",
            p(Some(1), None, Some("val_mse")),
            true,
            "keep_best metric \"val_mse\" is not measured in a Classification problem",
        ),
        (
            "folder is a file",
            CheckpointPolicy::new(&a_file),
            true,
            "not-a-folder",
        ),
    ];
    for (what, policy, validation, want) in runs {
        let mut t = trainer();
        let d = data();
        let cb = ModelCheckpoint::new(policy).unwrap();
        let e = t
            .fit(
                &d,
                validation.then_some(&d as &dyn Dataset),
                FitOptions {
                    epochs: 2,
                    callbacks: vec![Box::new(cb)],
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{what}: {e}");
        let trained = t.steps();
        assert!(
            trained == 0 || what == "folder is a file",
            "{what}: {trained} steps before the error"
        );
    }
    assert_eq!(files(&dir), vec!["not-a-folder"]);
    let _ = std::fs::remove_dir_all(&dir);
}
