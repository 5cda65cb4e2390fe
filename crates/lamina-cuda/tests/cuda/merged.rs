//! Segments (runs of small operations as one single-block kernel) and multi-tensor launches
//! (independent updates as one kernel): a training step whose loss section, metric counters,
//! movement ops and small backward tails merge into segments and whose Adam updates merge into
//! one launch, against the reference, with merging on and off (`LAMINA_CUDA_SEGMENT=0`).

use super::common::{backend, download, serial, upload};
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
