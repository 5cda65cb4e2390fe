//! Dense layers with a bias, with and without ReLU: forward, gradients and an SGD update, two
//! steps (the second replays the captured graph), against the reference. The forward layers run
//! as cuBLASLt GEMMs with a bias (+ ReLU) epilogue (`lt.rs`); each row also compiles with
//! `LAMINA_CUDA_LT=0` (plain GEMM + fused bias group) and both must match.

use super::common::{backend_with, download, serial, upload};
use lamina_core::*;
use lamina_ref::check::{assert_close, TestRng};

/// One layer: outputs, ReLU after it, weight stored `[out, in]` (read through a transpose), the
/// pre-activation also read by the loss (so the ReLU's mask cannot move to the activation).
#[derive(Clone, Copy)]
struct Layer {
    n: usize,
    relu: bool,
    wt: bool,
    keep_z: bool,
}

const fn l(n: usize, relu: bool, wt: bool, keep_z: bool) -> Layer {
    Layer {
        n,
        relu,
        wt,
        keep_z,
    }
}

/// name, batch, input features, layers.
type Row = (&'static str, usize, usize, &'static [Layer]);

const ROWS: &[Row] = &[
    ("bias_only_odd", 37, 29, &[l(53, false, false, false)]),
    ("relu_odd", 37, 29, &[l(53, true, false, false)]),
    (
        "tiny",
        5,
        3,
        &[l(7, true, false, false), l(2, false, false, false)],
    ),
    (
        "mlp_large",
        300,
        257,
        &[
            l(130, true, false, false),
            l(131, true, true, false),
            l(10, false, false, false),
        ],
    ),
    (
        "relu_transposed_weight",
        129,
        64,
        &[l(257, true, true, false)],
    ),
    ("pre_activation_kept", 260, 33, &[l(140, true, false, true)]),
];

fn graph(dtype: DType, m: usize, k: usize, layers: &[Layer]) -> Graph {
    let b = GraphBuilder::new();
    let x = b.input("x", &[m, k], dtype);
    let mut h = x;
    let mut params = vec![x];
    let mut extra: Option<Tensor> = None;
    let mut fan_in = k;
    for (i, ly) in layers.iter().enumerate() {
        let (w, wm) = if ly.wt {
            let w = b.state(&format!("w{i}"), &[ly.n, fan_in], dtype);
            (w, w.transpose(0, 1))
        } else {
            let w = b.state(&format!("w{i}"), &[fan_in, ly.n], dtype);
            (w, w)
        };
        let bias = b.state(&format!("b{i}"), &[ly.n], dtype);
        let z = h.matmul(wm) + bias;
        if ly.keep_z {
            let s = (z * 0.25).sum(&[], false);
            extra = Some(extra.map_or(s, |e| e + s));
        }
        h = if ly.relu { z.relu() } else { z };
        params.push(w);
        params.push(bias);
        fan_in = ly.n;
    }
    // a softmax first reduces over the rows (not elementwise), so the last layer's bias group
    // stays alone like a classifier's
    let r = b.input("r", &[m, fan_in], dtype);
    let mut loss = (h.softmax(-1) * r).sum(&[], false);
    if let Some(e) = extra {
        loss = loss + e;
    }
    let grads = grad(loss, &params).unwrap();
    let mut outs = vec![loss, h, grads[0]];
    for (j, p) in params.iter().enumerate().skip(1) {
        let name = if j % 2 == 1 {
            format!("w{}", (j - 1) / 2)
        } else {
            format!("b{}", (j - 1) / 2)
        };
        outs.push(Tensor::apply(Op::Assign { name }, &[*p - grads[j] * 0.01]));
    }
    outs.extend(grads[1..].iter().copied());
    b.finish(&outs).unwrap()
}

/// `‖got − want‖ / ‖want‖`.
fn rel_err(got: &HostTensor, want: &HostTensor) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let (g, w) = (got.to_f64(), want.to_f64());
    let d: f64 = g.iter().zip(&w).map(|(a, b)| (a - b) * (a - b)).sum();
    let n: f64 = w.iter().map(|b| b * b).sum();
    d.sqrt() / n.sqrt().max(1e-6)
}

#[test]
fn dense_layers_with_epilogues_match_reference_table() {
    let _serial = serial();
    for (mode, dtype, tf32, tol) in [
        ("f32 strict", DType::F32, false, (1e-4, 1e-4)),
        // TF32 rounds the operands to 10 mantissa bits, and a ReLU mask flips where |z| is
        // within that rounding: a flipped element is off by a whole term, so the relative norm of
        // the difference grows like √(fraction flipped) — 1.2e-2 for mlp_large's input gradient
        // on an H200 (a wrong layout or epilogue is off by O(1))
        ("f32 tf32", DType::F32, true, (5e-2, 0.0)),
        ("f64", DType::F64, false, (1e-10, 1e-10)),
    ] {
        let Some(cuda) = backend_with(
            "dense_layers_with_epilogues_match_reference_table",
            tf32,
            true,
        ) else {
            return;
        };
        for &(name, m, k, layers) in ROWS {
            let g = graph(dtype, m, k, layers);
            let plan = Plan::compile(&g).unwrap();
            let mut rng = TestRng::new(11);
            let inputs: Vec<HostTensor> = g
                .inputs()
                .iter()
                .map(|&i| {
                    let ty = &g.nodes[i].ty;
                    HostTensor::from_f64(&ty.shape, dtype, &rng.vec(numel(&ty.shape), -1.0, 1.0))
                        .unwrap()
                })
                .collect();
            let feeds: Vec<&HostTensor> = inputs.iter().collect();
            let mut init = StateMap::new();
            for (s, ty) in g.states() {
                let v = rng.vec(numel(&ty.shape), -0.3, 0.3);
                init.insert(s, HostTensor::from_f64(&ty.shape, dtype, &v).unwrap());
            }
            let mut launches = Vec::new();
            // epilogues; plain GEMMs and groups; small layers inside segments (the default)
            for (lt, macs) in [("1", Some("0")), ("0", Some("0")), ("1", None)] {
                std::env::set_var("LAMINA_CUDA_LT", lt);
                if let Some(macs) = macs {
                    std::env::set_var("LAMINA_CUDA_SEGMENT_MACS", macs);
                }
                let compiled = cuda.compile(&plan);
                std::env::remove_var("LAMINA_CUDA_LT");
                std::env::remove_var("LAMINA_CUDA_SEGMENT_MACS");
                let what = format!("{mode}, {name}, LAMINA_CUDA_LT={lt}, segment MACs {macs:?}");
                let mut exe = compiled.unwrap_or_else(|e| panic!("{what}: {e}\n{}", plan.text()));
                launches.push((exe.kernel_count(), exe.epilogue_gemms()));
                if name == "mlp_large" && lt == "0" {
                    // a layer's weight and input gradients: two independent GEMMs, side by side
                    assert!(exe.side_gemms() > 0, "{what}: no GEMM on the side stream");
                }
                let mut bufs = upload(&cuda, &init);
                let mut want_state = init.clone();
                for step in 0..2 {
                    let what = format!("{what}, step {step}");
                    let got = cuda
                        .run(&mut exe, &mut bufs, &feeds)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let want = lamina_ref::run_graph(&g, &feeds, &mut want_state).unwrap();
                    let got_state = download(&cuda, &bufs);
                    let pairs = got
                        .iter()
                        .zip(&want)
                        .enumerate()
                        .map(|(i, (a, w))| (format!("output {i}"), a, w))
                        .chain(
                            want_state
                                .iter()
                                .map(|(s, w)| (format!("\"{s}\""), &got_state[s], w)),
                        );
                    for (which, a, w) in pairs {
                        let what = format!("{what}: {which}");
                        if tf32 {
                            // TF32 can flip a ReLU mask where z ≈ 0 (one element off by a
                            // whole term): compare the norm of the difference
                            let e = rel_err(a, w);
                            assert!(e <= tol.0, "{what}: relative error {e:.2e}");
                        } else {
                            // the loss sums m·n products: scale its tolerance
                            let atol = if which == "output 0" {
                                tol.1 * (m * 64) as f64
                            } else {
                                tol.1
                            };
                            assert_close(a, w, tol.0, atol, &what);
                        }
                    }
                    want_state = got_state;
                }
                assert!(exe.is_captured(), "{what}: not captured");
            }
            println!(
                "{mode}, {name}: {} launches and {} epilogue GEMMs, {} launches without, {} with segment GEMMs",
                launches[0].0, launches[0].1, launches[1].0, launches[2].0
            );
            // every layer runs as one epilogue GEMM, except one whose pre-activation has other
            // readers than the ReLU's mask; none with LAMINA_CUDA_LT=0
            let want = layers.iter().filter(|ly| !ly.keep_z).count();
            assert_eq!(
                launches[1].1, 0,
                "{mode}, {name}: epilogues with LAMINA_CUDA_LT=0"
            );
            assert!(
                launches[0].0 <= launches[1].0,
                "{mode}, {name}: more launches"
            );
            if dtype == DType::F32 {
                assert_eq!(launches[0].1, want, "{mode}, {name}: epilogue GEMMs");
            }
            // with GEMMs in segments, a layer whose tensors are at most 16384 elements and
            // whose product is at most 2^16 multiply-adds runs inside one instead
            let mut fan_in = k;
            let mut small = 0;
            for ly in layers {
                let fits = [m * fan_in, fan_in * ly.n, m * ly.n]
                    .iter()
                    .all(|&e| e <= 16384)
                    && m * fan_in * ly.n <= 1 << 16;
                small += usize::from(fits && !ly.keep_z);
                fan_in = ly.n;
            }
            assert!(
                launches[2].0 <= launches[0].0,
                "{mode}, {name}: more launches with segment GEMMs"
            );
            if dtype == DType::F32 {
                assert_eq!(
                    launches[2].1,
                    want - small,
                    "{mode}, {name}: epilogue GEMMs beside segment GEMMs"
                );
            }
        }
    }
}
