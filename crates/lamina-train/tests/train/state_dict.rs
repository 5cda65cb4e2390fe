//! PyTorch `load_state_dict` compatibility, checked against `tests/fixtures/state_dict.safetensors`
//! (written by `tools/golden/state_dict_check.py`, which also loads lamina's checkpoints into
//! torch with `strict=True`): lamina's checkpoints hold exactly torch's state_dict names, shapes
//! and dtypes (plus the lamina-only keys), and torch-initialised weights load into lamina and
//! predict what torch predicts.

use lamina_core::HostTensor;
use lamina_nn::{LayerRegistry, ModelSpec};
use lamina_ref::check::assert_close;
use lamina_train::*;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/state_dict.safetensors"
);

fn model(name: &str) -> ModelSpec {
    if name == "digits_cnn" {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/digits_cnn.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        return ModelSpec::from_json(&text, &LayerRegistry::new()).unwrap();
    }
    lamina_nn::zoo::model(name, true).unwrap()
}

fn trainer(m: &ModelSpec) -> ModelTrainer {
    ModelTrainer::new(
        m,
        TrainerConfig {
            batch_size: 4,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap()
}

fn temp(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-sd-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (name → (dtype, shape, bytes)) of a safetensors file.
type Raw = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn raw(bytes: &[u8]) -> Raw {
    SafeTensors::deserialize(bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

fn write_raw(path: &Path, map: &Raw) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, &None).unwrap()).unwrap();
}

fn f32_tensor((d, s, b): &(Dtype, Vec<usize>, Vec<u8>)) -> HostTensor {
    assert_eq!(*d, Dtype::F32);
    HostTensor::from_le_bytes(s, lamina_core::DType::F32, b).unwrap()
}

/// torch's state_dict of `name` from the fixture's metadata: (key, shape, dtype).
fn torch_keys(name: &str) -> Vec<(String, Vec<usize>, String)> {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    let mut keys: Vec<(String, Vec<usize>, String)> =
        serde_json::from_str(&meta[&format!("{name}.state_dict")]).unwrap();
    keys.sort();
    keys
}

/// The model's weights as torch initialised them (`NAME/<key>` in the fixture) in a plain
/// state_dict file, with the fixture's input and torch's output.
fn torch_state_dict(name: &str, path: &Path) -> (HostTensor, HostTensor) {
    let all = raw(&std::fs::read(FIXTURE).unwrap());
    let prefix = format!("{name}/");
    let sd: Raw = all
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
        .filter(|(k, _)| k != "x" && k != "y")
        .collect();
    write_raw(path, &sd);
    (
        f32_tensor(&all[&format!("{name}/x")]),
        f32_tensor(&all[&format!("{name}/y")]),
    )
}

/// Every model's checkpoint, lamina-only keys left out, has exactly torch's state_dict names,
/// shapes and dtypes (Linear `[out, in]`, Conv2d `[out, in, kh, kw]`, int64 scalar
/// `num_batches_tracked`).
#[test]
fn checkpoints_hold_exactly_torchs_state_dict() {
    let dir = temp("keys");
    for name in ["seed_mlp", "bn_mlp", "readme_cnn", "digits_cnn"] {
        let t = trainer(&model(name));
        let path = dir.join(format!("{name}.safetensors"));
        t.save_checkpoint(&path).unwrap();
        let file = raw(&std::fs::read(&path).unwrap());
        let mut ours: Vec<(String, Vec<usize>, String)> = file
            .iter()
            .filter(|(k, _)| !is_lamina_only(k))
            .map(|(k, (d, s, _))| {
                let dtype = match d {
                    Dtype::F32 => "float32",
                    Dtype::I64 => "int64",
                    other => panic!("{name}: {k} has dtype {other:?}"),
                };
                (k.clone(), s.clone(), dtype.to_string())
            })
            .collect();
        ours.sort();
        assert_eq!(ours, torch_keys(name), "{name}");
        // and what is left out is lamina's own: the random key and optimizer state
        assert!(
            file.contains_key("rng") && file.contains_key("optim.hyper"),
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Torch-initialised weights (BatchNorm statistics after three training-mode passes) load into
/// lamina with `load_state_dict` and predict torch's outputs to 1e-5; `num_batches_tracked`
/// comes along and survives a checkpoint round trip.
#[test]
fn torch_weights_load_and_predict_like_torch() {
    let dir = temp("load");
    for (name, tracked) in [("bn_mlp", 3), ("digits_cnn", 0)] {
        // digits_cnn has no BatchNorm: the count lives in the checkpoint's progress metadata
        let m = model(name);
        let mut t = trainer(&m);
        let path = dir.join(format!("{name}.torch.safetensors"));
        let (x, y) = torch_state_dict(name, &path);
        t.load_state_dict(&path).unwrap();
        assert_eq!(t.batches_tracked(), tracked, "{name}");
        let xs: Vec<f32> = x.to_f64().iter().map(|&v| v as f32).collect();
        let p = t.predict(&xs, x.shape()).unwrap();
        let got = HostTensor::f32(&p.shape, p.values.clone()).unwrap();
        assert_close(&got, &y, 1e-5, 1e-5, name);
        // a training step counts one more forward pass; a checkpoint keeps the count
        let labels = [0, 1, 2, 3];
        t.train_batch(&xs, x.shape(), &labels[..x.shape()[0]], &[x.shape()[0]])
            .unwrap();
        let ckpt = dir.join(format!("{name}.ckpt.safetensors"));
        t.save_checkpoint(&ckpt).unwrap();
        let mut back =
            ModelTrainer::load_checkpoint(&ckpt, &LayerRegistry::new(), Device::Cpu).unwrap();
        assert_eq!(back.batches_tracked(), tracked + 1, "{name}");
        // a lamina checkpoint is a state_dict too (its lamina-only keys are skipped)
        let mut fresh = trainer(&m);
        fresh.load_state_dict(&ckpt).unwrap();
        assert_eq!(
            fresh.predict(&xs, x.shape()).unwrap(),
            back.predict(&xs, x.shape()).unwrap(),
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Bad state_dicts: each is an error naming the file and the key, and the trainer is unchanged.
#[test]
fn bad_state_dicts_are_rejected() {
    let dir = temp("bad");
    let m = model("bn_mlp");
    let good = dir.join("good.safetensors");
    torch_state_dict("bn_mlp", &good);
    let base = raw(&std::fs::read(&good).unwrap());
    type Edit = fn(&mut Raw);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "missing key",
            |m| {
                m.remove("dense2.bias");
            },
            "tensor \"dense2.bias\" is missing",
        ),
        (
            "missing num_batches_tracked",
            |m| {
                m.remove("bn.num_batches_tracked");
            },
            "tensor \"bn.num_batches_tracked\" is missing",
        ),
        (
            "unexpected key",
            |m| {
                m.insert("dense9.weight".into(), (Dtype::F32, vec![1], vec![0; 4]));
            },
            "tensor \"dense9.weight\" does not belong to this model",
        ),
        (
            "transposed weight",
            |m| {
                m.get_mut("dense2.weight").unwrap().1 = vec![64, 128];
            },
            "tensor \"dense2.weight\" is f32[64,128], the model needs a float tensor of shape [128,64]",
        ),
        (
            "integer weight",
            |m| {
                m.get_mut("bn.bias").unwrap().0 = Dtype::I32;
            },
            "tensor \"bn.bias\" is i32[128], the model needs a float tensor",
        ),
        (
            "num_batches_tracked as a vector",
            |m| {
                m.insert("bn.num_batches_tracked".into(), (Dtype::I64, vec![1], vec![0; 8]));
            },
            "tensor \"bn.num_batches_tracked\" is i64[1], num_batches_tracked is an i64 scalar",
        ),
        (
            "negative num_batches_tracked",
            |m| {
                let v = (-5i64).to_le_bytes().to_vec();
                m.insert("bn.num_batches_tracked".into(), (Dtype::I64, vec![], v));
            },
            "tensor \"bn.num_batches_tracked\" is -5, a count cannot be negative",
        ),
        (
            "NaN running variance",
            |m| {
                m.get_mut("bn.running_var").unwrap().2[8..12]
                    .copy_from_slice(&f32::NAN.to_le_bytes());
            },
            "tensor \"bn.running_var\" holds NaN at element 2",
        ),
        (
            "int64 weights",
            |m| {
                m.insert("dense1.bias".into(), (Dtype::I64, vec![64], vec![0; 512]));
            },
            "tensor \"dense1.bias\" has dtype I64, expected f32, f64 or i32",
        ),
    ];
    let mut t = trainer(&m);
    let before: BTreeMap<String, HostTensor> = t
        .state_names()
        .into_iter()
        .map(|n| (n.clone(), t.state(&n).unwrap()))
        .collect();
    for (what, edit, want) in cases {
        let mut map = base.clone();
        edit(&mut map);
        let p = dir.join(format!("{}.safetensors", what.replace(' ', "_")));
        write_raw(&p, &map);
        let e = t.load_state_dict(&p).unwrap_err().to_string();
        assert!(
            e.contains(want) && e.contains(".safetensors"),
            "{what}: {e}"
        );
        for (n, v) in &before {
            assert_eq!(&t.state(n).unwrap(), v, "{what}: {n} changed");
        }
        assert_eq!(t.batches_tracked(), 0, "{what}");
    }
    // half-precision state_dicts load (cast to the trainer's dtype)
    let mut half = base.clone();
    for (_, (d, _, b)) in half.iter_mut().filter(|(_, (d, _, _))| *d == Dtype::F32) {
        *b = b
            .chunks_exact(4)
            .flat_map(|c| {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                ((v.to_bits() >> 16) as u16).to_le_bytes() // bf16 by truncation
            })
            .collect();
        *d = Dtype::BF16;
    }
    // and f16: 1.5 is 0x3E00, -0.25 is 0xB400
    let n = 128;
    let f16: Vec<u8> = (0..n)
        .flat_map(|i| if i % 2 == 0 { 0x3E00u16 } else { 0xB400 }.to_le_bytes())
        .collect();
    half.insert("bn.weight".into(), (Dtype::F16, vec![n], f16));
    let p = dir.join("bf16.safetensors");
    write_raw(&p, &half);
    t.load_state_dict(&p).unwrap();
    let w = t.state("dense1.weight").unwrap().to_f64();
    let want = f32_tensor(&base["dense1.weight"]).to_f64();
    for (a, b) in w.iter().zip(&want) {
        assert!((a - b).abs() <= b.abs() / 128.0, "bf16 weight {a} vs {b}");
    }
    let bn = t.state("bn.weight").unwrap().to_f64();
    assert_eq!(&bn[..4], &[1.5, -0.25, 1.5, -0.25]);

    // a checkpoint of a BatchNorm model needs its num_batches_tracked too
    let ckpt = dir.join("ckpt.safetensors");
    t.save_checkpoint(&ckpt).unwrap();
    let bytes = std::fs::read(&ckpt).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut map = raw(&bytes);
    map.remove("bn.num_batches_tracked");
    let views: Vec<(String, safetensors::tensor::TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    let cut = safetensors::tensor::serialize(views, header.metadata()).unwrap();
    std::fs::write(&ckpt, cut).unwrap();
    let e = ModelTrainer::load_checkpoint(&ckpt, &LayerRegistry::new(), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("ckpt.safetensors")
            && e.contains("tensor \"bn.num_batches_tracked\" is missing"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
