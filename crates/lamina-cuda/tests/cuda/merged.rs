//! Segments (runs of small operations as one single-block kernel) and multi-tensor launches
//! (independent updates as one kernel): a training step whose loss section, metric counters,
//! movement ops and small backward tails merge into segments and whose Adam updates merge into
//! one launch, against the reference, with merging on and off (`LAMINA_CUDA_SEGMENT=0`).

use super::common::{backend, backend_with, download, serial, upload};
use lamina_core::*;
use lamina_ref::check::{assert_close, TestRng};

fn assign(name: &str, v: Tensor) -> Tensor {
    Tensor::apply(Op::Assign { name: name.into() }, &[v])
}

fn step_graph(dtype: DType) -> Graph {
    let b = GraphBuilder::new();
    let x = b.input("x", &[32, 48], dtype);
    let labels = b.input("labels", &[32], DType::I32);
    // w1 has 19 200 elements: more than a segment takes, so its update is a multi-tensor part
    let w1 = b.state("w1", &[48, 400], dtype);
    let b1 = b.state("b1", &[400], dtype);
    let w2 = b.state("w2", &[400, 10], dtype);
    let b2 = b.state("b2", &[10], dtype);
    let z = x.matmul(w1) + b1;
    let h = z * z.sigmoid();
    let logits = h.matmul(w2) + b2;
    let loss = -(logits.log_softmax(-1) * labels.one_hot(10, dtype)).sum(&[], false) / 32.0;
    let correct = logits
        .argmax(1, false)
        .eq(labels)
        .cast(DType::F64)
        .sum(&[], false);
    // copies, pads, slices, flips, gathers and reductions of both layouts inside a segment
    let moved = Tensor::concat(
        &[
            logits.slice(1, 0, 4, 1),
            logits.flip(1).pad(&[(0, 0), (1, 2)], 0.5),
        ],
        1,
    )
    .transpose(0, 1)
    .max(&[1], false);
    let gathered = logits.gather(labels, 1).sum(&[0], false);
    let params = [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)];
    let grads = grad(loss, &params.map(|p| p.1)).unwrap();
    let mut outs = vec![loss, correct, moved, gathered];
    // step sizes from a state vector, one small group per parameter right before its update
    // (like the trainer's bias corrections): the updates still share one launch
    let hyper = b.state("hyper", &[2], dtype);
    for (k, ((name, p), g)) in params.iter().zip(grads).enumerate() {
        let m = b.state(&format!("m.{name}"), &p.shape(), dtype);
        let v = b.state(&format!("v.{name}"), &p.shape(), dtype);
        let m2 = m * 0.9 + g * 0.1;
        let v2 = v * 0.999 + g * g * 0.001;
        let step = (hyper.slice(0, 0, 1, 1) * (k + 1) as f64 + hyper.slice(0, 1, 2, 1))
            .reshape(&vec![1; p.shape().len()]);
        outs.push(assign(name, *p - m2 * step / (v2.sqrt() + 1e-8)));
        outs.push(assign(&format!("m.{name}"), m2));
        outs.push(assign(&format!("v.{name}"), v2));
    }
    b.finish(&outs).unwrap()
}

#[test]
fn merged_launches_match_reference() {
    let _serial = serial();
    let Some(cuda) = backend("merged_launches_match_reference") else {
        return;
    };
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 {
            (2e-5, 2e-5)
        } else {
            (1e-10, 1e-10)
        };
        let g = step_graph(dtype);
        let plan = Plan::compile(&g).unwrap();
        let mut rng = TestRng::new(11);
        let x = HostTensor::from_f64(&[32, 48], dtype, &rng.vec(32 * 48, -1.0, 1.0)).unwrap();
        let labels: Vec<f64> = (0..32).map(|i| ((i * 7) % 10) as f64).collect();
        let y = HostTensor::from_f64(&[32], DType::I32, &labels).unwrap();
        let mut init = StateMap::new();
        for (name, ty) in g.states() {
            let v = if name.starts_with("v.") {
                rng.vec(numel(&ty.shape), 0.0, 0.1)
            } else {
                rng.vec(numel(&ty.shape), -0.2, 0.2)
            };
            init.insert(name, HostTensor::from_f64(&ty.shape, ty.dtype, &v).unwrap());
        }
        let mut launches = Vec::new();
        for limit in ["0", "16384"] {
            std::env::set_var("LAMINA_CUDA_SEGMENT", limit);
            let compiled = cuda.compile(&plan);
            std::env::remove_var("LAMINA_CUDA_SEGMENT");
            let mut exe = compiled.unwrap_or_else(|e| panic!("{dtype}, bound {limit}: {e}"));
            launches.push(exe.kernel_count());
            let mut bufs = upload(&cuda, &init);
            let mut want_state = init.clone();
            for step in 0..3 {
                let what = format!("{dtype}, bound {limit}, step {step}");
                let got = cuda.run(&mut exe, &mut bufs, &[&x, &y]).unwrap();
                let want = lamina_ref::run_graph(&g, &[&x, &y], &mut want_state).unwrap();
                for (i, (a, w)) in got.iter().zip(&want).enumerate() {
                    assert_close(a, w, tol.0, tol.1, &format!("{what}: output {i}"));
                }
                let got_state = download(&cuda, &bufs);
                for (name, w) in &want_state {
                    assert_close(
                        &got_state[name],
                        w,
                        tol.0,
                        tol.1,
                        &format!("{what}: {name}"),
                    );
                }
                // the reference continues from the device's state (f32 rounds between ops)
                want_state = got_state;
            }
            assert!(exe.is_captured(), "{dtype}, bound {limit}: not captured");
        }
        println!(
            "{dtype}: {} plan steps, {} launches unmerged, {} merged",
            plan.kernel_count(),
            launches[0],
            launches[1]
        );
        // 5 GEMMs, a segment between each two, one multi-tensor launch for the updates
        assert!(
            launches[1] * 2 < launches[0] && launches[1] <= 16,
            "{dtype}: {} launches merged, {} unmerged",
            launches[1],
            launches[0]
        );
    }
}

/// name, batch, m, k, n, A read through a transpose, B read through a transpose.
type GemmRow = (&'static str, usize, usize, usize, usize, bool, bool);

const GEMM_ROWS: &[GemmRow] = &[
    // 8 tiles of 4 rows × 32 columns: warps split k (the shared-memory sum)
    ("nn_k_split", 1, 32, 256, 128, false, false),
    ("tn_odd", 1, 37, 29, 53, true, false),
    // B read along k: the lanes take k (the shuffle sum)
    ("nt_lanes_on_k", 1, 32, 128, 256, false, true),
    ("tt_tiny", 1, 5, 7, 3, true, true),
    ("batched_nn", 3, 9, 17, 11, false, false),
    ("batched_nt_odd", 2, 6, 40, 33, false, true),
    ("batched_tn", 2, 19, 8, 70, true, false),
];

/// `x·2 → GEMM → ·3`: three operations on small tensors, so one segment with the GEMM inside.
fn gemm_graph(dtype: DType, &(_, batch, m, k, n, ta, tb): &GemmRow) -> Graph {
    let b = GraphBuilder::new();
    let lead: Vec<usize> = if batch > 1 { vec![batch] } else { vec![] };
    let dims = |r: usize, c: usize| [lead.clone(), vec![r, c]].concat();
    let last = lead.len() as isize;
    // the product reads the doubled input through its transpose
    let a = if ta {
        (b.input("a", &dims(k, m), dtype) * 2.0).transpose(last, last + 1)
    } else {
        b.input("a", &dims(m, k), dtype) * 2.0
    };
    let w = if tb {
        b.state("w", &dims(n, k), dtype).transpose(last, last + 1)
    } else {
        b.state("w", &dims(k, n), dtype)
    };
    let y = a.matmul(w) * 3.0;
    b.finish(&[y]).unwrap()
}

/// GEMMs inside a segment: every operand layout, batches, odd sizes and every way of splitting
/// k, against the reference, and the whole graph is one launch. f32 strict and f64 run on the
/// CUDA cores (`seg_gemm_s`), f32 with TF32 on the tensor cores (`seg_gemm_tc`), held to TF32's
/// rounding: the relative norm of the difference (operands rounded to 10 mantissa bits: ~5e-4 a
/// product).
#[test]
fn segment_gemms_match_reference_table() {
    let _serial = serial();
    for (mode, dtype, tf32, tol) in [
        ("f32 strict", DType::F32, false, (1e-5, 1e-5)),
        ("f64", DType::F64, false, (1e-12, 1e-12)),
        ("f32 tf32", DType::F32, true, (2e-3, 0.0)),
    ] {
        let Some(cuda) = backend_with("segment_gemms_match_reference_table", tf32, true) else {
            return;
        };
        for row in GEMM_ROWS {
            let g = gemm_graph(dtype, row);
            let plan = Plan::compile(&g).unwrap();
            let mut rng = TestRng::new(5);
            let ty = &g.nodes[g.inputs()[0]].ty;
            let a = HostTensor::from_f64(&ty.shape, dtype, &rng.vec(numel(&ty.shape), -1.0, 1.0))
                .unwrap();
            let mut state = StateMap::new();
            for (name, ty) in g.states() {
                let v = rng.vec(numel(&ty.shape), -1.0, 1.0);
                state.insert(name, HostTensor::from_f64(&ty.shape, dtype, &v).unwrap());
            }
            let want = lamina_ref::run_graph(&g, &[&a], &mut state.clone()).unwrap();
            {
                let what = format!("{mode}, {}", row.0);
                // the largest row has 2^20 multiply-adds and a 32768-element operand (above
                // the default bounds, to reach every k split)
                std::env::set_var("LAMINA_CUDA_SEGMENT_MACS", "1048576");
                std::env::set_var("LAMINA_CUDA_SEGMENT", "32768");
                let compiled = cuda.compile(&plan);
                std::env::remove_var("LAMINA_CUDA_SEGMENT_MACS");
                std::env::remove_var("LAMINA_CUDA_SEGMENT");
                let mut exe = compiled.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(exe.kernel_count(), 1, "{what}: launches");
                let mut bufs = upload(&cuda, &state);
                for step in 0..2 {
                    let got = cuda.run(&mut exe, &mut bufs, &[&a]).unwrap();
                    let what = format!("{what}, run {step}");
                    if tf32 {
                        let (x, w) = (got[0].to_f64(), want[0].to_f64());
                        let d: f64 = x.iter().zip(&w).map(|(p, q)| (p - q) * (p - q)).sum();
                        let n: f64 = w.iter().map(|q| q * q).sum();
                        let e = (d / n).sqrt();
                        assert!(e <= tol.0, "{what}: relative error {e:.2e}");
                    } else {
                        assert_close(&got[0], &want[0], tol.0, tol.1, &what);
                    }
                }
            }
        }
    }
}
