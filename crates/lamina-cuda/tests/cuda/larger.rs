//! Larger shapes than the op table: matmuls read through transposes (the backward pass), convs
//! and their gradient kinds through im2col/col2im + GEMM (and grouped ones through the direct
//! kernels), reductions of both layouts, broadcasting fused groups; two steps so the second
//! starts from updated state.

use super::common::{backend, run_cuda, serial};
use lamina_core::*;
use lamina_ref::check::{assert_close, TestRng};

fn random_inputs(g: &Graph, rng: &mut TestRng) -> Vec<HostTensor> {
    g.inputs()
        .iter()
        .map(|&i| {
            let ty = &g.nodes[i].ty;
            HostTensor::from_f64(&ty.shape, ty.dtype, &rng.vec(numel(&ty.shape), -1.0, 1.0))
                .unwrap()
        })
        .collect()
}

fn training_graph(dtype: DType) -> Graph {
    let b = GraphBuilder::new();
    let x = b.input("x", &[96, 80], dtype);
    let w = b.state("w", &[80, 72], dtype);
    let bias = b.state("bias", &[72], dtype);
    let h = (x.matmul(w) + bias).tanh();
    let p = h.softmax(-1);
    let loss = (p * h).sum(&[], false) + h.max(&[0], false).sum(&[], false);
    let grads = grad(loss, &[w, bias]).unwrap();
    let w2 = Tensor::apply(Op::Assign { name: "w".into() }, &[w - grads[0] * 0.01]);
    let b2 = Tensor::apply(
        Op::Assign {
            name: "bias".into(),
        },
        &[bias - grads[1] * 0.01],
    );
    let img = b.input("img", &[4, 3, 20, 18], dtype);
    let k = b.state("k", &[6, 3, 3, 3], dtype);
    let c = img.conv2d(k, 2, 1, 1, 1).relu().mean(&[2, 3], false);
    let kg = b.state("kg", &[6, 1, 3, 3], dtype);
    let cgr = img.slice(1, 0, 2, 1).conv2d(kg, 1, 1, 1, 2).sum(&[], false);
    let pw = b.state("pw", &[5, 3, 1, 1], dtype);
    let cpw = img.conv2d(pw, 1, 0, 1, 1).sum(&[1], false);
    // every convolution path: long sums (block per output), im2col + one GEMM (1x1 and 3x3)
    let img2 = b.input("img2", &[2, 80, 8, 8], dtype);
    let w_long = b.state("w_long", &[4, 80, 6, 6], dtype);
    let w_pw = b.state("w_pw", &[5, 80, 1, 1], dtype);
    let w_3 = b.state("w_3", &[6, 80, 3, 3], dtype);
    let c_long = img2.conv2d(w_long, 1, 0, 1, 1);
    let c_pw = img2.conv2d(w_pw, 1, 0, 1, 1);
    let c_3 = img2.conv2d(w_3, 2, 1, 1, 1);
    let cg = grad(c.sum(&[], false) + cgr, &[k, kg]).unwrap();
    // the gradient kinds through im2col/col2im + GEMM (one group, long rows) and directly (the
    // grouped convolution's input gradient)
    let loss2 = (c_3 * c_3).sum(&[], false) + (c_long * c_long).sum(&[], false);
    let g2 = grad(loss2, &[img2, w_3, w_long]).unwrap();
    let g_img = grad(cgr, &[img]).unwrap();
    b.finish(&[
        loss,
        w2,
        b2,
        c,
        cg[0],
        cg[1],
        g2[0],
        g2[1],
        g2[2],
        g_img[0],
        cpw,
        c_long,
        c_pw,
        c_3,
        h.argmax(1, false),
        x.sum(&[0], false),
        x.sum(&[1], false),
    ])
    .unwrap()
}

#[test]
fn larger_graphs_match_reference() {
    let _serial = serial();
    let Some(cuda) = backend("larger_graphs_match_reference") else {
        return;
    };
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 {
            (2e-5, 2e-5)
        } else {
            (1e-10, 1e-10)
        };
        let g = training_graph(dtype);
        let mut rng = TestRng::new(7);
        let inputs = random_inputs(&g, &mut rng);
        let mut state = StateMap::new();
        for (name, ty) in g.states() {
            state.insert(
                name,
                HostTensor::from_f64(&ty.shape, ty.dtype, &rng.vec(numel(&ty.shape), -0.5, 0.5))
                    .unwrap(),
            );
        }
        let plan = Plan::compile(&g).unwrap();
        let mut s = state.clone();
        for step in 0..2 {
            let what = format!("training graph ({dtype}), step {step}");
            let (got, got_state) = run_cuda(&cuda, &plan, &inputs, &s)
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", plan.text()));
            let feeds: Vec<&HostTensor> = inputs.iter().collect();
            let mut want_state = s.clone();
            let want = lamina_ref::run_graph(&g, &feeds, &mut want_state).unwrap();
            for (i, (a, w)) in got.iter().zip(&want).enumerate() {
                assert_close(a, w, tol.0, tol.1, &format!("{what}: output {i}"));
            }
            for (name, w) in &want_state {
                assert_close(
                    &got_state[name],
                    w,
                    tol.0,
                    tol.1,
                    &format!("{what}: \"{name}\""),
                );
            }
            s = want_state;
        }
    }
}
