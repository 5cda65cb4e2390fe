//! The trainer on CUDA: 20 steps of every DESIGN §5 benchmark model give the CPU's loss curve
//! (strict f32, dropout masks drawn identically), no device memory grows over 10,000 steps, and
//! 1,000 trainers that are created and dropped give their memory back.

use super::common::{backend, download, serial, upload};
use lamina_cuda::CudaBackend;
use lamina_train::{Device, ModelTrainer, TrainerConfig};

/// Deterministic pseudo-random data in [-1, 1) and labels for `steps` batches of `model`.
fn batches(spec: &lamina_nn::ModelSpec, steps: usize) -> Vec<(Vec<f32>, Vec<i32>)> {
    let batch = spec.input_shape[0];
    let per: usize = spec.input_shape[1..].iter().product();
    let mut s = 0x9e37_79b9_u64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    (0..steps)
        .map(|k| {
            let x = (0..batch * per).map(|_| next()).collect();
            let y = (0..batch).map(|i| ((i * 7 + k) % 10) as i32).collect();
            (x, y)
        })
        .collect()
}

fn losses(name: &str, device: Device, data: &[(Vec<f32>, Vec<i32>)]) -> Vec<f64> {
    let spec = lamina_nn::zoo::model(name, true).unwrap();
    let batch = spec.input_shape[0];
    let mut t = ModelTrainer::new(
        &spec,
        TrainerConfig {
            batch_size: batch,
            device,
            seed: 3,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name} on {device:?}: {e}"));
    assert_eq!(t.device(), device);
    let shape: Vec<usize> = spec.input_shape.clone();
    data.iter()
        .map(|(x, y)| t.train_batch(x, &shape, y, &[batch]).unwrap().loss)
        .collect()
}

#[test]
fn benchmark_models_follow_the_cpu_loss_curve() {
    let _serial = serial();
    if backend("benchmark_models_follow_the_cpu_loss_curve").is_none() {
        return;
    }
    // strict f32 matmuls for the trainer's backend (read by CudaConfig::default)
    std::env::set_var("LAMINA_CUDA_TF32", "0");
    let mut failures = Vec::new();
    for name in lamina_nn::zoo::MODELS {
        // Adam's first steps move every parameter by about ±lr whatever the size of its
        // gradient, so where an exact gradient is 0 (bn_mlp's dense2 bias feeds BatchNorm) or
        // tiny, the sign of rounding noise decides, and two summation orders (CPU and CUDA, or
        // CPU and PyTorch) drift apart. Measured worst drifts over 20 steps on an H100: seed_mlp
        // 1.0e-7, bn_mlp 2.6e-4, readme_cnn 3.2e-4, wide_mlp 1.6e-4 (its loss jumps to 3.4 at step
        // 2). The bounds keep a margin above those; a wrong kernel gives differences of 1e-2 and up.
        let tol = match name {
            "seed_mlp" => 1e-4,
            "bn_mlp" => 2e-3,
            _ => 1e-3,
        };
        let spec = lamina_nn::zoo::model(name, true).unwrap();
        let data = batches(&spec, 20);
        let cpu = losses(name, Device::Cpu, &data);
        let cuda = losses(name, Device::Cuda(0), &data);
        let worst = cpu
            .iter()
            .zip(&cuda)
            .map(|(c, g)| (c - g).abs() / c.abs().max(1.0))
            .fold(0.0, f64::max);
        println!("{name}: worst relative loss difference {worst:.2e} (bound {tol:.0e})");
        if worst > tol {
            failures.push(format!("{name}: cpu {cpu:?}\n  cuda {cuda:?}"));
        }
        // the curve moved: the steps did train
        assert!(cuda[19] != cuda[0], "{name}: loss did not change");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// DESIGN's soak: 10,000 training steps allocate nothing (checked every 1,000).
#[test]
fn device_memory_does_not_grow() {
    let _serial = serial();
    let Some(probe) = backend("device_memory_does_not_grow") else {
        return;
    };
    let spec = lamina_nn::zoo::model("bn_mlp", true).unwrap();
    let data = batches(&spec, 1);
    let (x, y) = &data[0];
    let mut t = cuda_trainer(&spec);
    for _ in 0..5 {
        t.train_batch(x, &spec.input_shape, y, &[32]).unwrap();
    }
    // the optimised kernels replace the quick ones once (a module load), not during the count
    t.finish_compiling().unwrap();
    t.train_batch(x, &spec.input_shape, y, &[32]).unwrap();
    let before = probe.memory_used().unwrap();
    for k in 1..=10_000 {
        t.train_batch(x, &spec.input_shape, y, &[32]).unwrap();
        if k % 1000 == 0 {
            let now = probe.memory_used().unwrap();
            assert_eq!(before, now, "device memory grew over {k} steps");
        }
    }
}

/// 1,000 trainers created, stepped and dropped: each holds device memory while it lives and
/// gives all of it back.
#[test]
fn dropped_trainers_return_their_memory() {
    let _serial = serial();
    let Some(probe) = backend("dropped_trainers_return_their_memory") else {
        return;
    };
    let spec = lamina_nn::zoo::model("seed_mlp", true).unwrap();
    let data = batches(&spec, 1);
    let (x, y) = &data[0];
    let cycle = || {
        let mut t = cuda_trainer(&spec);
        for _ in 0..2 {
            t.train_batch(x, &spec.input_shape, y, &[32]).unwrap();
        }
        t.finish_compiling().unwrap();
        let during = probe.memory_used().unwrap();
        drop(t);
        during
    };
    cycle();
    let base = probe.memory_used().unwrap();
    for k in 0..1000 {
        let during = cycle();
        assert!(
            during > base,
            "cycle {k}: the trainer used no device memory"
        );
        let after = probe.memory_used().unwrap();
        assert_eq!(after, base, "cycle {k}: memory not returned");
    }
}

#[test]
fn auto_device_picks_cuda_when_present() {
    let _serial = serial();
    if CudaBackend::device_count() == 0 {
        println!("auto_device_picks_cuda_when_present: skipped: no CUDA device");
        return;
    }
    let spec = lamina_nn::zoo::model("seed_mlp", true).unwrap();
    let t = ModelTrainer::new(
        &spec,
        TrainerConfig {
            batch_size: 32,
            device: Device::Auto,
            ..Default::default()
        },
    )
    .unwrap();
    let want = match std::env::var("LAMINA_DEVICE").as_deref() {
        Ok("cpu") => Device::Cpu,
        _ => Device::Cuda(0),
    };
    assert_eq!(t.device(), want);
}

/// Trainers on several threads at once: their steps are captured while other threads allocate,
/// free and load modules, and every thread still gets the losses of a trainer alone.
#[test]
fn trainers_on_several_threads() {
    let _serial = serial();
    if backend("trainers_on_several_threads").is_none() {
        return;
    }
    let spec = lamina_nn::zoo::model("seed_mlp", true).unwrap();
    let data = batches(&spec, 3);
    let alone = losses("seed_mlp", Device::Cuda(0), &data);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..3)
                        .map(|_| losses("seed_mlp", Device::Cuda(0), &data))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for r in runs {
            for got in r.join().unwrap() {
                // scatter-adds (the cross-entropy gradient) add in a run-dependent order
                for (g, a) in got.iter().zip(&alone) {
                    assert!(
                        (g - a).abs() <= 1e-5 * a.abs(),
                        "{got:?} vs alone {alone:?}"
                    );
                }
            }
        }
    });
}

/// Steps submitted without waiting (`submit_batch`, results read in blocks) give exactly the
/// losses and state of synchronous steps: seed_mlp (its small inputs in one shared block per
/// turn) and a model with a 2 MB batch (buffers of its own per turn). A rejected batch in between, whose NaN sits past the first check block (so part of
/// it was already written into the staging memory), changes nothing.
#[test]
fn submitted_steps_give_the_synchronous_losses() {
    let _serial = serial();
    if backend("submitted_steps_give_the_synchronous_losses").is_none() {
        return;
    }
    let wide_input = lamina_nn::ModelBuilder::new(&[512, 1024])
        .dense(64, true, "h")
        .relu("r")
        .dropout(0.25, "d")
        .dense(10, true, "out")
        .compile()
        .unwrap();
    let models = [
        ("seed_mlp", lamina_nn::zoo::model("seed_mlp", true).unwrap()),
        ("512x1024 input", wide_input),
    ];
    for (name, spec) in models {
        let batch = spec.input_shape[0];
        let shape = spec.input_shape.clone();
        let data = batches(&spec, 12);
        let config = TrainerConfig {
            batch_size: batch,
            device: Device::Cuda(0),
            seed: 5,
            ..Default::default()
        };
        let mut sync = ModelTrainer::new(&spec, config.clone()).unwrap();
        let want: Vec<f64> = data
            .iter()
            .map(|(x, y)| sync.train_batch(x, &shape, y, &[batch]).unwrap().loss)
            .collect();
        let mut sub = ModelTrainer::new(&spec, config).unwrap();
        let mut got = Vec::new();
        for (k, (x, y)) in data.iter().enumerate() {
            if k == 6 {
                let before: Vec<_> = sub
                    .state_names()
                    .iter()
                    .map(|n| sub.state(n).unwrap())
                    .collect();
                let mut bad = x.clone();
                let at = bad.len() - 3;
                bad[at] = f32::NAN;
                let e = sub.submit_batch(&bad, &shape, y, &[batch]).unwrap_err();
                assert!(
                    e.to_string().contains(&format!("input value {at} is NaN")),
                    "{name}: {e}"
                );
                let after: Vec<_> = sub
                    .state_names()
                    .iter()
                    .map(|n| sub.state(n).unwrap())
                    .collect();
                assert_eq!(before, after, "{name}: a rejected batch changed the state");
            }
            sub.submit_batch(x, &shape, y, &[batch]).unwrap();
            if k % 5 == 4 {
                got.extend(sub.wait_results().unwrap().iter().map(|r| r.loss));
            }
        }
        got.extend(sub.wait_results().unwrap().iter().map(|r| r.loss));
        assert_eq!(got, want, "{name}: submitted against synchronous losses");
        for n in sync.state_names() {
            assert_eq!(
                sub.state(&n).unwrap(),
                sync.state(&n).unwrap(),
                "{name}: {n}"
            );
        }
    }
}

/// Quick start: a plan whose generated code no cache holds first runs quick builds, captured as
/// a graph; the optimised builds, compiled in the background, are swapped in (the graph captured
/// again) and compute the same values; a plan compiled after that gets them at once, and with
/// quick start off a plan is final from the start.
#[test]
fn quick_start_swaps_in_the_optimised_kernels() {
    use lamina_core::*;
    use lamina_cuda::CudaConfig;
    let _serial = serial();
    if backend("quick_start_swaps_in_the_optimised_kernels").is_none() {
        return;
    }
    let quick = |on: bool| {
        CudaBackend::new(CudaConfig {
            quick_start: on,
            ..Default::default()
        })
        .unwrap()
    };
    // a constant from the clock makes a source that no cache (process or disk) has seen
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let (rows, cols) = (64usize, 96usize);
    let plan_with = |c: f64| {
        let g = GraphBuilder::new();
        let x = g.input("x", &[rows, cols], DType::F32);
        let y = ((x * c).relu() + x.exp()).sum(&[1], false);
        Plan::compile(&g.finish(&[y]).unwrap()).unwrap()
    };
    let xv: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let input = HostTensor::f32(&[rows, cols], xv.clone()).unwrap();
    let check = |c: f64, out: &[HostTensor], when: &str| {
        let got = out[0].to_f64();
        for (r, g) in got.iter().enumerate() {
            let want: f64 = xv[r * cols..(r + 1) * cols]
                .iter()
                .map(|&v| (v as f64 * c).max(0.0) + (v as f64).exp())
                .sum();
            assert!(
                (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{when}: row {r}: {g} against {want}"
            );
        }
    };
    let c = 1.0 + (nanos % 1_000_000) as f64 * 1e-9;
    let plan = plan_with(c);
    let b = quick(true);
    let mut exe = b.compile(&plan).unwrap();
    if CudaBackend::has_quick_builds() {
        assert!(
            !exe.kernels_final(),
            "a never-seen plan starts on quick builds"
        );
    } else {
        println!(
            "quick_start_swaps_in_the_optimised_kernels: NVRTC before 12.8 has no quick builds"
        );
        assert!(
            exe.kernels_final(),
            "without quick builds a plan is final at once"
        );
    }
    // three runs (the first captures the step, the others replay it), each checked
    let run3 = |exe: &mut lamina_cuda::CudaExecutable, when: &str| {
        for k in 0..3 {
            let out = b.run(exe, &mut StateMap::new(), &[&input]).unwrap();
            check(c, &out, &format!("{when} run {k}"));
        }
        assert!(exe.is_captured(), "the {when} step is captured");
    };
    run3(&mut exe, "quick");
    b.finish_compiling(&mut exe).unwrap();
    assert!(
        exe.kernels_final(),
        "finish_compiling swaps in the optimised builds"
    );
    run3(&mut exe, "optimised");
    let again = b.compile(&plan).unwrap();
    assert!(again.kernels_final(), "the optimised build is cached now");
    // quick start off: final from the start
    let c2 = c + 0.5;
    let off = quick(false);
    let mut exe = off.compile(&plan_with(c2)).unwrap();
    assert!(exe.kernels_final(), "quick start off compiles fully");
    let out = off.run(&mut exe, &mut StateMap::new(), &[&input]).unwrap();
    check(c2, &out, "quick start off");
}

/// `device_bytes` is the exact sum of what an executable allocates (arena, the two turns of input
/// buffers, for a small input inside the shared block and for one of 1 MiB or more of its own), and a trainer's count covers its state and the
/// cuBLAS workspace without exceeding what the device saw allocated.
#[test]
fn device_bytes_count_the_allocations() {
    use lamina_core::*;
    let _serial = serial();
    let Some(b) = backend("device_bytes_count_the_allocations") else {
        return;
    };
    for (rows, landing) in [(4usize, false), (512, true)] {
        let g = GraphBuilder::new();
        let x = g.input("x", &[rows, 1024], DType::F32);
        let y = (x * 2.0).relu().sum(&[1], false);
        let plan = Plan::compile(&g.finish(&[y]).unwrap()).unwrap();
        let mut exe = b.compile(&plan).unwrap();
        let input = rows * 1024 * 4;
        let want = plan.arena_bytes + 2 * input;
        assert_eq!(
            exe.device_bytes(),
            want,
            "{rows} rows (own buffers: {landing})"
        );
        assert_eq!(b.executable_bytes(&exe), want);
        // and the executable works through its staging
        let xv: Vec<f32> = (0..rows * 1024).map(|i| (i % 7) as f32 - 3.0).collect();
        let mem = b.staging(&mut exe, 0).unwrap().expect("CUDA stages inputs");
        for (d, v) in mem.chunks_exact_mut(4).zip(&xv) {
            d.copy_from_slice(&v.to_le_bytes());
        }
        let out = b
            .submit(&mut exe, &mut StateMap::new(), &[Feed::Staged])
            .unwrap()
            .wait()
            .unwrap();
        let row0: f64 = xv[..1024].iter().map(|&v| (2.0 * v as f64).max(0.0)).sum();
        assert_eq!(out[0].to_f64()[0], row0);
        // bad feeds are input errors
        let wrong = HostTensor::f32(&[rows, 1023], vec![0.0; rows * 1023]).unwrap();
        for (feeds, msg) in [
            (vec![], "expected 1 inputs, got 0"),
            (vec![Feed::Host(&wrong)], "expected f32["),
        ] {
            let e = b
                .submit(&mut exe, &mut StateMap::new(), &feeds)
                .unwrap_err();
            assert!(e.to_string().contains(msg), "{e}");
        }
    }
    let spec = lamina_nn::zoo::model("bn_mlp", true).unwrap();
    let data = batches(&spec, 1);
    let base = b.memory_used().unwrap();
    let mut t = cuda_trainer(&spec);
    t.train_batch(
        &data[0].0,
        &spec.input_shape,
        &data[0].1,
        &[spec.input_shape[0]],
    )
    .unwrap();
    let grown = b.memory_used().unwrap() - base;
    let state: usize = t
        .state_names()
        .iter()
        .map(|n| {
            let s = t.state(n).unwrap();
            s.numel() * s.dtype().size_bytes()
        })
        .sum();
    let counted = t.device_bytes();
    println!("bn_mlp: device_bytes {counted}, state {state}, device memory grew by {grown}");
    assert!(
        // 16 MiB: the default cuBLAS workspace (`LAMINA_CUDA_WORKSPACE_MIB` unset)
        counted >= state + (16 << 20),
        "{counted} < state {state} + workspace"
    );
    assert!(counted <= grown, "{counted} counted, {grown} allocated");
}

/// Two executables sharing state, run with many steps in flight: their small inputs of three
/// dtypes (one shared block per turn, some staged, some fed as tensors), small state writes
/// between steps (through the page-locked write ring, which wraps around several times) and a
/// rejected step all give exactly the values computed on the host.
#[test]
fn interleaved_submits_see_every_write() {
    use lamina_core::*;
    let _serial = serial();
    let Some(b) = backend("interleaved_submits_see_every_write") else {
        return;
    };
    let mut exes = Vec::new();
    for e in 0..2usize {
        let g = GraphBuilder::new();
        let a = g.input("a", &[3 + e], DType::F32);
        let labels = g.input("labels", &[5], DType::I32);
        let c = g.input("c", &[2, 2 + e], DType::F64);
        let s = g.state("s", &[1], DType::F32);
        let h = g.state("h", &[2], DType::F32);
        let sa = a.sum(&[0], true);
        let next = s * h.slice(0, 0, 1, 1) + h.slice(0, 1, 2, 1) + sa;
        let outs = [
            a.sum(&[], false),
            labels.cast(DType::F64).sum(&[], false),
            c.sum(&[], false),
            Tensor::apply(Op::Assign { name: "s".into() }, &[next]),
        ];
        let plan = Plan::compile(&g.finish(&outs).unwrap()).unwrap();
        exes.push(b.compile(&plan).unwrap());
    }
    let init: StateMap<HostTensor> = [
        ("s".to_string(), HostTensor::f32(&[1], vec![1.0]).unwrap()),
        (
            "h".to_string(),
            HostTensor::f32(&[2], vec![1.0, 0.0]).unwrap(),
        ),
    ]
    .into();
    let mut bufs = upload(&b, &init);
    let mut s = 1.0f64;
    let mut pending = Vec::new();
    for i in 0..12usize {
        for (e, exe) in exes.iter_mut().enumerate() {
            let (h0, h1) = (if (i + e) % 3 == 0 { -1.0 } else { 1.0 }, i as f64);
            let h = HostTensor::f32(&[2], vec![h0 as f32, h1 as f32]).unwrap();
            b.write(bufs.get_mut("h").unwrap(), &h).unwrap();
            let a: Vec<f32> = (0..3 + e)
                .map(|k| ((i * 7 + k * 3 + e) % 11) as f32 - 5.0)
                .collect();
            let labels: Vec<i32> = (0..5).map(|k| (i * 5 + k + e) as i32 % 13 - 6).collect();
            let c: Vec<f64> = (0..2 * (2 + e))
                .map(|k| (i * k) as f64 * 0.25 - 3.0)
                .collect();
            let (at, lt) = (
                HostTensor::f32(&[3 + e], a.clone()).unwrap(),
                HostTensor::i32(&[5], labels.clone()).unwrap(),
            );
            let ct = HostTensor::f64(&[2, 2 + e], c.clone()).unwrap();
            if i == 5 {
                // a rejected step changes nothing and leaves the staging to the next one
                let wrong = HostTensor::f64(&[2, 9], vec![0.0; 18]).unwrap();
                let err = b
                    .submit(
                        exe,
                        &mut bufs,
                        &[Feed::Host(&at), Feed::Host(&lt), Feed::Host(&wrong)],
                    )
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("input 2") && err.contains("f64[2,"), "{err}");
            }
            // `a` through the staging memory on odd steps, as a tensor on even ones
            let fa = if i % 2 == 1 {
                let mem = b.staging(exe, 0).unwrap().expect("CUDA stages inputs");
                for (d, v) in mem.chunks_exact_mut(4).zip(&a) {
                    d.copy_from_slice(&v.to_le_bytes());
                }
                Feed::Staged
            } else {
                Feed::Host(&at)
            };
            let p = b
                .submit(exe, &mut bufs, &[fa, Feed::Host(&lt), Feed::Host(&ct)])
                .unwrap();
            let sa: f64 = a.iter().map(|&v| v as f64).sum();
            s = s * h0 + h1 + sa;
            let want = vec![
                sa,
                labels.iter().map(|&v| v as f64).sum(),
                c.iter().sum(),
                s,
            ];
            pending.push((p, want, format!("step {i}, executable {e}")));
        }
    }
    for (p, want, what) in pending {
        let got: Vec<f64> = p.wait().unwrap().iter().map(|t| t.to_f64()[0]).collect();
        assert_eq!(got, want, "{what}");
    }
    assert_eq!(download(&b, &bufs)["s"].to_f64(), vec![s]);
}

/// A trainer on CUDA device 0 with the model's own batch size and every other setting default.
fn cuda_trainer(spec: &lamina_nn::ModelSpec) -> ModelTrainer {
    ModelTrainer::new(
        spec,
        TrainerConfig {
            batch_size: spec.input_shape[0],
            device: Device::Cuda(0),
            ..Default::default()
        },
    )
    .unwrap()
}
