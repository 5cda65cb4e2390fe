//! Larger shapes than the op table: matmuls read through transposes (the backward pass), convs
//! and their gradient kinds through im2col/col2im + GEMM (and grouped ones through the direct
//! kernels), reductions of both layouts, broadcasting fused groups; two steps so the second
//! starts from updated state.

use super::common::{backend, backend_with, run_cuda, serial};
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
        // f32: the kernel gradient of c_3 sums 32 products of dy = 2·c_3 (c_3 a sum of 720
        // products, |dy| ~ 10) and x, so elements that cancel to ~0.3 carry ~3e-5 of rounding
        let tol = if dtype == DType::F32 {
            (2e-5, 1e-4)
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

/// One convolution layer of `conv_paths_match_reference`: input and kernel shapes, stride,
/// padding, dilation, groups.
type ConvRow = (
    &'static str,
    [usize; 4],
    [usize; 4],
    [usize; 2],
    [(i64, i64); 2],
    [usize; 2],
    usize,
);

/// Each row takes different CUDA paths for the forward map, its input and kernel gradients and
/// the bias gradient (a sum over N, H, W per channel).
const CONV_ROWS: &[ConvRow] = &[
    // a first layer: direct forward (2 tiles of 8 channels), per-image kernel gradient (K 27 ≤
    // P 1023), direct input gradient, split bias sum
    (
        "first_layer",
        [6, 3, 33, 31],
        [16, 3, 3, 3],
        [1, 1],
        [(1, 1), (1, 1)],
        [1, 1],
        1,
    ),
    // K 180 > 64: im2col + batched GEMM forward, batched GEMM + col2im input gradient, K > P:
    // the transposed-dy kernel gradient
    (
        "gemm_stride2",
        [5, 20, 15, 13],
        [12, 20, 3, 3],
        [2, 2],
        [(1, 1), (1, 1)],
        [1, 1],
        1,
    ),
    // K 72 ≤ P 576 with K > 64: every GEMM path per image
    (
        "gemm_per_image",
        [4, 8, 24, 24],
        [8, 8, 3, 3],
        [1, 1],
        [(1, 1), (1, 1)],
        [1, 1],
        1,
    ),
    // pointwise, K 70 > 64
    (
        "pointwise",
        [4, 70, 6, 7],
        [9, 70, 1, 1],
        [1, 1],
        [(0, 0), (0, 0)],
        [1, 1],
        1,
    ),
    // grouped, dilated, uneven strides: direct kernels, 6 channels per tile
    (
        "grouped_dilated",
        [3, 8, 17, 19],
        [12, 4, 3, 3],
        [1, 2],
        [(2, 2), (1, 1)],
        [2, 2],
        2,
    ),
    // K 2160: the forward a block per output (no kept columns), so the kernel gradient (K > P
    // 144) transposes dy and reads im2col rows of 256-position blocks
    (
        "long_sums",
        [1, 60, 17, 17],
        [2, 60, 6, 6],
        [1, 1],
        [(0, 0), (0, 0)],
        [1, 1],
        1,
    ),
    // 11 output channels (a full and a partial tile), asymmetric and negative padding
    (
        "odd_tile_crop",
        [2, 5, 9, 9],
        [11, 5, 2, 3],
        [1, 1],
        [(0, 1), (1, -1)],
        [1, 1],
        1,
    ),
];

#[test]
fn conv_paths_match_reference() {
    let _serial = serial();
    let Some(cuda) = backend("conv_paths_match_reference") else {
        return;
    };
    for &(name, xs, ws, stride, padding, dilation, groups) in CONV_ROWS {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 {
                (1e-4, 1e-4)
            } else {
                (1e-10, 1e-10)
            };
            let b = GraphBuilder::new();
            let x = b.input("x", &xs, dtype);
            let w = b.state("w", &ws, dtype);
            let bias = b.state("bias", &[ws[0]], dtype);
            let p = ConvParams {
                stride,
                padding,
                dilation,
                groups,
                kind: ConvKind::Forward,
            };
            let y = x.conv(w, &p) + bias.reshape(&[ws[0], 1, 1]);
            let loss = (y * y).sum(&[], false) + y.relu().sum(&[], false);
            let g = grad(loss, &[x, w, bias]).unwrap();
            let graph = b.finish(&[y, g[0], g[1], g[2]]).unwrap();
            let mut rng = TestRng::new(11);
            let inputs = random_inputs(&graph, &mut rng);
            let mut state = StateMap::new();
            for (n, ty) in graph.states() {
                let v = rng.vec(numel(&ty.shape), -0.5, 0.5);
                state.insert(n, HostTensor::from_f64(&ty.shape, ty.dtype, &v).unwrap());
            }
            let plan = Plan::compile(&graph).unwrap();
            let what = format!("{name} ({dtype})");
            let (got, _) = run_cuda(&cuda, &plan, &inputs, &state)
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", plan.text()));
            let feeds: Vec<&HostTensor> = inputs.iter().collect();
            let want = lamina_ref::run_graph(&graph, &feeds, &mut state.clone()).unwrap();
            for (i, part) in ["y", "dx", "dw", "dbias"].iter().enumerate() {
                assert_close(&got[i], &want[i], tol.0, tol.1, &format!("{what}: {part}"));
            }
        }
    }
}

/// One graph per row: transposes (the tiled transpose kernel, sizes off the 32×32 tiles, a batch
/// axis; more elements than a segment takes, so they are not merged), GEMMs whose operands are transposes (read through a flag, or, when
/// TF32 would otherwise get no K-major operand, the right one copied transposed or the left one
/// materialised), and fused groups with broadcast operands (the
/// 4-wide loop: consecutive values, one value per 4 lanes, and an inner length that is not a
/// multiple of 4), column sums, in f32 (strict and TF32) and f64, against the reference
/// interpreter.
#[test]
fn transposes_gemm_layouts_and_broadcasts_table() {
    let _serial = serial();
    type Row = (&'static str, fn(&GraphBuilder, DType) -> Vec<Tensor>, bool);
    let rows: [Row; 10] = [
        (
            "transpose of a batch",
            |b, dt| vec![b.input("x", &[3, 77, 95], dt).permute(&[0, 2, 1]) * 2.0],
            false,
        ),
        (
            "transposed left operand (dW = dyᵀ·h)",
            |b, dt| {
                let dy = b.input("dy", &[170, 133], dt).tanh();
                let h = b.input("h", &[170, 41], dt);
                vec![dy.permute(&[1, 0]).matmul(h)]
            },
            true,
        ),
        // above 2^24 multiply-adds, TF32 gets no M-major-only GEMM: the right operand is
        // copied transposed when it is no larger than the left one, else the left one
        (
            "large dW = dyᵀ·h, right operand copied transposed",
            |b, dt| {
                let dy = b.input("dy", &[512, 256], dt).tanh();
                let h = b.input("h", &[512, 200], dt);
                vec![dy.permute(&[1, 0]).matmul(h)]
            },
            true,
        ),
        (
            "large dW = dyᵀ·h, batched, right operand copied transposed",
            |b, dt| {
                let dy = b.input("dy", &[2, 384, 160], dt).tanh();
                let h = b.input("h", &[2, 384, 150], dt);
                vec![dy.permute(&[0, 2, 1]).matmul(h)]
            },
            true,
        ),
        (
            "large dW = dyᵀ·h, left operand copied (the smaller one)",
            |b, dt| {
                let dy = b.input("dy", &[512, 40], dt).tanh();
                let h = b.input("h", &[512, 1024], dt);
                vec![dy.permute(&[1, 0]).matmul(h)]
            },
            true,
        ),
        (
            "transposed right operand (x·Wᵀ)",
            |b, dt| {
                let x = b.input("x", &[50, 36], dt);
                let w = b.state("w", &[44, 36], dt);
                vec![x.matmul(w.permute(&[1, 0]))]
            },
            true,
        ),
        (
            "both operands transposed, batched",
            |b, dt| {
                let a = b.input("a", &[2, 40, 24], dt).exp();
                let c = b.input("c", &[2, 36, 40], dt);
                vec![a.permute(&[0, 2, 1]).matmul(c.permute(&[0, 2, 1]))]
            },
            true,
        ),
        (
            "broadcasts in 4-wide groups",
            |b, dt| {
                let x = b.input("x", &[6, 8], dt);
                let row = b.input("row", &[8], dt);
                let col = b.input("col", &[6, 1], dt);
                let odd = b.input("odd", &[7, 6], dt);
                let odd_row = b.input("odd_row", &[6], dt);
                vec![
                    (x + row) * col,
                    (odd * odd_row).relu(),
                    x.sum(&[0], false) + row,
                ]
            },
            false,
        ),
        (
            "column sums (unrolled loads and their remainder)",
            |b, dt| {
                let x = b.input("x", &[403, 70], dt);
                let y = b.input("y", &[77, 41, 12], dt);
                vec![x.sum(&[0], false), y.sum(&[0], false)]
            },
            false,
        ),
        (
            "elementwise over 4n + 3 values",
            |b, dt| vec![(b.input("x", &[5, 11, 7], dt) * 3.0 + 1.0).relu()],
            false,
        ),
    ];
    for (tf32, dtype) in [(false, DType::F32), (true, DType::F32), (false, DType::F64)] {
        let Some(cuda) = backend_with("transposes_gemm_layouts_and_broadcasts_table", tf32, true)
        else {
            return;
        };
        for (name, build, gemm) in rows {
            let what = format!("{name} ({dtype}, tf32 {tf32})");
            let b = GraphBuilder::new();
            let outs = build(&b, dtype);
            let g = b.finish(&outs).unwrap();
            let mut rng = TestRng::new(11);
            let inputs = random_inputs(&g, &mut rng);
            let mut state = StateMap::new();
            for (n, ty) in g.states() {
                let v = rng.vec(numel(&ty.shape), -1.0, 1.0);
                state.insert(n, HostTensor::from_f64(&ty.shape, ty.dtype, &v).unwrap());
            }
            let plan = Plan::compile(&g).unwrap();
            let (got, _) = run_cuda(&cuda, &plan, &inputs, &state)
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", plan.text()));
            let feeds: Vec<&HostTensor> = inputs.iter().collect();
            let want = lamina_ref::run_graph(&g, &feeds, &mut state.clone()).unwrap();
            // TF32 keeps 10 mantissa bits of each product's operands
            let tol = match (dtype, tf32 && gemm) {
                (DType::F64, _) => 1e-12,
                (_, true) => 1e-2,
                _ => 2e-5,
            };
            for (i, (a, w)) in got.iter().zip(&want).enumerate() {
                assert_close(a, w, tol, tol, &format!("{what}: output {i}"));
            }
        }
    }
}
