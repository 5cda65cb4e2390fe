//! The CPU backend against the reference interpreter: every row of the shared op table in f32 and
//! f64, fused and unfused plans, larger shapes that take the parallel paths, state semantics and
//! input checking.

use lamina_core::passes::optimize;
use lamina_core::*;
use lamina_cpu::{CpuBackend, CpuBuffer};
use lamina_ref::cases::{op_table, OpCase};
use lamina_ref::check::{assert_close, TestRng};

/// Runs `plan` on the CPU backend with `state` uploaded; returns outputs and downloaded state.
fn run_cpu(
    cpu: &CpuBackend,
    plan: &Plan,
    inputs: &[HostTensor],
    state: &StateMap<HostTensor>,
) -> Result<(Vec<HostTensor>, StateMap<HostTensor>)> {
    let mut exe = cpu.compile(plan)?;
    let mut bufs: StateMap<CpuBuffer> = state
        .iter()
        .map(|(k, v)| (k.clone(), cpu.upload(v).unwrap()))
        .collect();
    let feeds: Vec<&HostTensor> = inputs.iter().collect();
    let outs = cpu.run(&mut exe, &mut bufs, &feeds)?;
    let state = bufs
        .iter()
        .map(|(k, v)| (k.clone(), cpu.download(v).unwrap()))
        .collect();
    Ok((outs, state))
}

/// Compares the CPU backend on `plan` with the reference interpreter on `graph`.
fn check_against_ref(
    cpu: &CpuBackend,
    what: &str,
    graph: &Graph,
    plan: &Plan,
    inputs: &[HostTensor],
    state: &StateMap<HostTensor>,
    tol: (f64, f64),
) {
    let (got, got_state) = run_cpu(cpu, plan, inputs, state)
        .unwrap_or_else(|e| panic!("{what}: cpu failed: {e}\n{}", plan.text()));
    let mut want_state = state.clone();
    let feeds: Vec<&HostTensor> = inputs.iter().collect();
    let want = lamina_ref::run_graph(graph, &feeds, &mut want_state)
        .unwrap_or_else(|e| panic!("{what}: ref failed: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.dtype(), w.dtype(), "{what}: output {i} dtype");
        assert_close(g, w, tol.0, tol.1, &format!("{what}: output {i}"));
    }
    assert_eq!(
        got_state.keys().collect::<Vec<_>>(),
        want_state.keys().collect::<Vec<_>>(),
        "{what}: state names"
    );
    for (name, w) in &want_state {
        assert_close(
            &got_state[name],
            w,
            tol.0,
            tol.1,
            &format!("{what}: state \"{name}\""),
        );
    }
}

fn check_table(dtype: DType, tol: (f64, f64)) {
    let cases = op_table(dtype);
    assert!(!cases.is_empty());
    for threads in [1, 2] {
        let cpu = CpuBackend::with_threads(threads);
        for case in &cases {
            let plan =
                Plan::compile(&case.graph).unwrap_or_else(|e| panic!("{}: plan: {e}", case.name));
            check_against_ref(
                &cpu,
                &format!("{} ({dtype}, {threads} threads)", case.name),
                &case.graph,
                &plan,
                &case.inputs,
                &case.state,
                tol,
            );
        }
    }
}

#[test]
fn op_table_f32() {
    check_table(DType::F32, (1e-5, 1e-6));
}

#[test]
fn op_table_f64() {
    check_table(DType::F64, (1e-10, 1e-10));
}

/// Every op table row planned without fusion gives bit-identical results to the fused plan.
#[test]
fn fusion_does_not_change_results() {
    let cpu = CpuBackend::with_threads(2);
    for dtype in [DType::F32, DType::F64] {
        for case in op_table(dtype) {
            let g = optimize(&case.graph, true).unwrap();
            let fused = Plan::new(g.clone()).unwrap();
            let unfused = Plan::with_fusion(g, false).unwrap();
            let (a, sa) = run_cpu(&cpu, &fused, &case.inputs, &case.state).unwrap();
            let (b, sb) = run_cpu(&cpu, &unfused, &case.inputs, &case.state).unwrap();
            assert_eq!(
                a, b,
                "{} ({dtype}): outputs differ with and without fusion",
                case.name
            );
            assert_eq!(
                sa, sb,
                "{} ({dtype}): state differs with and without fusion",
                case.name
            );
        }
    }
}

fn first_assign_case() -> OpCase {
    op_table(DType::F32)
        .into_iter()
        .find(|c| c.kind == OpKind::Assign)
        .expect("the table has an assign row")
}

#[test]
fn bad_input_is_an_error_and_leaves_state_unchanged() {
    let cpu = CpuBackend::new();
    let case = first_assign_case();
    let plan = Plan::compile(&case.graph).unwrap();
    let mut exe = cpu.compile(&plan).unwrap();
    let mut bufs: StateMap<CpuBuffer> = case
        .state
        .iter()
        .map(|(k, v)| (k.clone(), cpu.upload(v).unwrap()))
        .collect();
    let before = bufs.clone();
    let x = &case.inputs[0];
    let name = match &plan.graph.nodes[plan.inputs[0]].op {
        Op::Input { name, .. } => name.clone(),
        _ => unreachable!(),
    };

    // wrong shape
    let wrong_shape = HostTensor::zeros(&[x.numel() + 1], DType::F32).unwrap();
    let e = cpu
        .run(&mut exe, &mut bufs, &[&wrong_shape])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&name) && e.contains(&x.dtype().to_string()),
        "{e}"
    );
    assert!(
        e.contains(&lamina_core::dtype::fmt_shape(x.shape()))
            && e.contains(&lamina_core::dtype::fmt_shape(wrong_shape.shape())),
        "{e}"
    );
    assert_eq!(bufs, before);

    // wrong dtype
    let wrong_dtype = x.cast(DType::F64).unwrap();
    let e = cpu
        .run(&mut exe, &mut bufs, &[&wrong_dtype])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&name) && e.contains("f32") && e.contains("f64"),
        "{e}"
    );
    assert_eq!(bufs, before);

    // wrong count
    assert!(cpu.run(&mut exe, &mut bufs, &[]).is_err());
    assert_eq!(bufs, before);

    // missing state
    let mut empty: StateMap<CpuBuffer> = StateMap::new();
    let e = cpu.run(&mut exe, &mut empty, &[x]).unwrap_err().to_string();
    assert!(e.contains("\"s\"") && e.contains("missing"), "{e}");
    assert!(empty.is_empty());

    // state of the wrong type
    let mut wrong: StateMap<CpuBuffer> = StateMap::new();
    wrong.insert("s".into(), CpuBuffer::zeros(&[3, 2], DType::F32).unwrap());
    let snapshot = wrong.clone();
    let e = cpu.run(&mut exe, &mut wrong, &[x]).unwrap_err().to_string();
    assert!(e.contains("f32[2,3]") && e.contains("f32[3,2]"), "{e}");
    assert_eq!(wrong, snapshot);

    // the default `submit`: no staging memory, so a staged input is an error; with tensors it
    // is `run`
    assert!(cpu.staging(&mut exe, 0).unwrap().is_none());
    let e = cpu
        .submit(&mut exe, &mut bufs, &[Feed::Staged])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("input 0 is marked staged") && e.contains("cpu"),
        "{e}"
    );
    assert_eq!(bufs, before);
    let mut copy = bufs.clone();
    let submitted = cpu
        .submit(&mut exe, &mut copy, &[Feed::Host(x)])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(cpu.executable_bytes(&exe), 0);

    // and a good run still works afterwards
    let ran = cpu.run(&mut exe, &mut bufs, &[x]).unwrap();
    assert_ne!(bufs, before);
    assert_eq!((ran, &bufs), (submitted, &copy), "submit + wait is run");
}

#[test]
fn half_precision_is_refused() {
    let b = GraphBuilder::new();
    let x = b.input("x", &[2], DType::F16);
    let g = b.finish(&[x]).unwrap();
    let plan = Plan::new(g).unwrap();
    let e = CpuBackend::new().compile(&plan).unwrap_err();
    assert!(
        matches!(&e, Error::Backend { backend, msg } if backend == "cpu" && msg.contains("f16")),
        "{e}"
    );
}

/// Input data for a graph: uniform floats, in feed order.
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

/// A training-like graph on larger shapes: matmul with a transposed backward pass, broadcasts,
/// reductions, softmax, conv; run fused and unfused, on 1 and 2 threads, twice (state carries).
#[test]
fn larger_graphs_match_reference() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 {
            (2e-5, 2e-5)
        } else {
            (1e-10, 1e-10)
        };
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
        let cg = grad(c.sum(&[], false), &[k]).unwrap();
        let g = b
            .finish(&[loss, w2, b2, c, cg[0], h.argmax(1, false)])
            .unwrap();

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
        let opt = optimize(&g, true).unwrap();
        for threads in [1, 2] {
            let cpu = CpuBackend::with_threads(threads);
            for fuse in [true, false] {
                let plan = Plan::with_fusion(opt.clone(), fuse).unwrap();
                let what = format!("training graph ({dtype}, {threads} threads, fusion {fuse})");
                check_against_ref(&cpu, &what, &g, &plan, &inputs, &state, tol);
                // a second step starts from the updated state
                let (_, s1) = run_cpu(&cpu, &plan, &inputs, &state).unwrap();
                check_against_ref(
                    &cpu,
                    &format!("{what}, step 2"),
                    &g,
                    &plan,
                    &inputs,
                    &s1,
                    tol,
                );
            }
        }
    }
}

/// Elementwise groups above the parallel threshold with every kind of broadcast operand.
#[test]
fn large_fused_groups_with_broadcasts() {
    let b = GraphBuilder::new();
    let x = b.input("x", &[3, 130, 257], DType::F32);
    let row = b.input("row", &[257], DType::F32);
    let col = b.input("col", &[3, 130, 1], DType::F32);
    let one = b.input("one", &[1], DType::F32);
    let mid = b.input("mid", &[3, 1, 257], DType::F32);
    let y = ((x * row + col).exp() - one).maximum(mid) / (x.abs() + 1.0);
    let m = y.lt(0.5).where_(y.sqrt(), y.log() * 2.0);
    let z = m.cast(DType::I32).cast(DType::F32) + m.erf() + (-x).tanh();
    let g = b
        .finish(&[
            z,
            m.sum(&[1], true),
            m.max(&[0, 2], false),
            z.sum(&[], false),
        ])
        .unwrap();
    let mut rng = TestRng::new(3);
    let inputs = random_inputs(&g, &mut rng);
    let plan = Plan::compile(&g).unwrap();
    let fused_steps = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Fused { nodes, .. } if nodes.len() > 3))
        .count();
    assert!(fused_steps >= 1, "{}", plan.text());
    for threads in [1, 2] {
        check_against_ref(
            &CpuBackend::with_threads(threads),
            "broadcast group",
            &g,
            &plan,
            &inputs,
            &StateMap::new(),
            (1e-5, 1e-5),
        );
    }
}

/// Assign semantics: reads see the state as the run started, writes land at the end, even when
/// states swap values or an output reads a state that is also assigned.
#[test]
fn state_reads_see_the_value_before_the_run() {
    let b = GraphBuilder::new();
    let a = b.state("a", &[2, 3], DType::F32);
    let c = b.state("c", &[2, 3], DType::F32);
    let n = b.state("n", &[], DType::I32);
    let wa = Tensor::apply(Op::Assign { name: "a".into() }, &[c]);
    let wc = Tensor::apply(Op::Assign { name: "c".into() }, &[a]);
    let wn = Tensor::apply(Op::Assign { name: "n".into() }, &[n + 1.0]);
    let g = b.finish(&[a, c.reshape(&[6]), wa, wc, wn, n]).unwrap();
    let mut state = StateMap::new();
    state.insert(
        "a".into(),
        HostTensor::f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
    );
    state.insert(
        "c".into(),
        HostTensor::f32(&[2, 3], vec![-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]).unwrap(),
    );
    state.insert("n".into(), HostTensor::i32(&[], vec![41]).unwrap());
    for fuse in [true, false] {
        let plan = Plan::with_fusion(optimize(&g, true).unwrap(), fuse).unwrap();
        check_against_ref(
            &CpuBackend::new(),
            "swap",
            &g,
            &plan,
            &[],
            &state,
            (0.0, 0.0),
        );
    }
}

/// Integer and boolean paths, gathers, scatters, random bits and iota on shapes large enough to
/// be split across threads.
#[test]
fn integer_index_and_random_paths() {
    let b = GraphBuilder::new();
    let key = b.input("key", &[2], DType::I32);
    let bits = key.random_bits(&[300, 257], 5);
    let table = b.input("table", &[1000, 64], DType::F32);
    let idx = b.input("idx", &[40, 30], DType::I32);
    let rows = table.gather(idx, 0);
    let back = Tensor::apply(
        Op::ScatterAdd {
            axis: 0,
            dim_size: 1000,
        },
        &[rows, idx],
    );
    let io = b.iota(&[300, 257], 1, DType::I32);
    let mixed = (bits / (io + 1.0)) * 3.0 - io.maximum(bits) + (-bits);
    let flags = bits.lt(io).where_(io, mixed).eq(io);
    let g = b
        .finish(&[
            bits,
            rows.sum(&[2], false),
            back,
            mixed,
            flags,
            flags.cast(DType::F32).sum(&[0], false),
            mixed.argmax(0, false),
        ])
        .unwrap();
    let mut rng = TestRng::new(11);
    let key_v = HostTensor::i32(&[2], vec![1234, 7]).unwrap();
    let table_v =
        HostTensor::from_f64(&[1000, 64], DType::F32, &rng.vec(64_000, -1.0, 1.0)).unwrap();
    let idx_v: Vec<f64> = (0..1200).map(|i| ((i * 37) % 1010) as f64 - 5.0).collect();
    let idx_v = HostTensor::from_f64(&[40, 30], DType::I32, &idx_v).unwrap();
    let inputs = vec![key_v, table_v, idx_v];
    let plan = Plan::compile(&g).unwrap();
    for threads in [1, 2] {
        check_against_ref(
            &CpuBackend::with_threads(threads),
            "integers",
            &g,
            &plan,
            &inputs,
            &StateMap::new(),
            (1e-5, 1e-5),
        );
    }
}

/// Big matmuls (gemm's own threads), a batched one with a transposed operand, and a batch
/// broadcast: all read in place where it is safe. A transposed right operand with fewer rows than
/// columns in the result and enough work (`y`, `z`, `qk`) takes the column-major-scratch path,
/// split and batched, and with a long reduction (`z`, `z3`: split between threads) its left
/// operand is copied column-major first; `att`'s small products skip it.
/// Input gradients whose layer's kernel gradient (reading the same cotangent) the CPU backend
/// can run beside them (`Conv::beside`): those of one group (the per-image paths).
fn same_layer_gradients(plan: &Plan) -> usize {
    let g = &plan.graph;
    let kind = |n: &lamina_core::Node| match &n.op {
        Op::Conv(p) if p.groups == 1 => Some(p.kind),
        _ => None,
    };
    g.nodes
        .iter()
        .filter(|n| matches!(kind(n), Some(ConvKind::InputGrad { .. })))
        .filter(|n| {
            g.nodes.iter().any(|m| {
                matches!(kind(m), Some(ConvKind::KernelGrad { .. }))
                    && plan.root(m.inputs[1]) == plan.root(n.inputs[0])
            })
        })
        .count()
}

#[test]
fn matmul_paths() {
    let b = GraphBuilder::new();
    let a = b.input("a", &[130, 200], DType::F32);
    let w = b.input("w", &[150, 200], DType::F32);
    let q = b.input("q", &[6, 33, 17], DType::F32);
    let k = b.input("k", &[6, 40, 17], DType::F32);
    let v = b.input("v", &[17, 9], DType::F32);
    let a2 = b.input("a2", &[20, 2100], DType::F32);
    let w2 = b.input("w2", &[30, 2100], DType::F32);
    let z = a2.matmul(w2.transpose(0, 1));
    // the same split between threads by columns, sharing one copy
    let a3 = b.input("a3", &[32, 2100], DType::F32);
    let w3 = b.input("w3", &[48, 2100], DType::F32);
    let z3 = a3.matmul(w3.transpose(0, 1));
    // rows past one 32-row tile, columns past whole 8-column tiles, a last short reduction block
    let a4 = b.input("a4", &[37, 2050], DType::F32);
    let w4 = b.input("w4", &[41, 2050], DType::F32);
    let z4 = a4.matmul(w4.transpose(0, 1));
    let q2 = b.input("q2", &[2, 64, 100], DType::F32);
    let k2 = b.input("k2", &[2, 96, 100], DType::F32);
    let qk = q2.matmul(k2.transpose(-1, -2));
    let y = a.matmul(w.transpose(0, 1));
    let att = q.matmul(k.transpose(-1, -2)).softmax(-1);
    let g = b
        .finish(&[
            y,
            att,
            q.matmul(v),
            att.transpose(-1, -2).matmul(q),
            z,
            qk,
            z3,
            z4,
        ])
        .unwrap();
    let mut rng = TestRng::new(5);
    let inputs = random_inputs(&g, &mut rng);
    let plan = Plan::compile(&g).unwrap();
    let exe = CpuBackend::new().compile(&plan).unwrap();
    // the transposes and the broadcast are read in place, not copied
    let movement = plan.steps.iter().filter(|s| matches!(s, Step::Node(id) if matches!(plan.graph.nodes[*id].op, Op::Permute { .. } | Op::Expand { .. }))).count();
    assert!(movement >= 4, "{}", plan.text());
    assert_eq!(
        exe.kernel_count(),
        plan.kernel_count() - movement,
        "{}",
        plan.text()
    );
    for threads in [1, 2] {
        check_against_ref(
            &CpuBackend::with_threads(threads),
            "matmuls",
            &g,
            &plan,
            &inputs,
            &StateMap::new(),
            // z sums 2100 f32 products
            (1e-4, 1e-4),
        );
    }
}

/// Convolutions large enough for every threading path (images in parallel, gemm's own threads for
/// a single image, kernel-gradient partial sums over image ranges), strided, grouped, 1×1 and
/// 5×3, with their input and kernel gradients; feature maps 32, 16 and 8 wide take the unfolding
/// copies of fixed length (31/32, 15/16, 7/8 elements a row), the others the general one.
#[test]
fn conv_paths() {
    let b = GraphBuilder::new();
    let x = b.input("x", &[3, 8, 24, 20], DType::F32);
    let w = b.input("w", &[16, 8, 3, 3], DType::F32);
    let x1 = b.input("x1", &[1, 8, 24, 20], DType::F32);
    let w2 = b.input("w2", &[12, 4, 1, 1], DType::F32);
    let x3 = b.input("x3", &[9, 8, 14, 11], DType::F32);
    let w3 = b.input("w3", &[16, 8, 5, 3], DType::F32);
    let x5 = b.input("x5", &[2, 4, 16, 32], DType::F32);
    let w5 = b.input("w5", &[6, 4, 3, 3], DType::F32);
    let y = x.conv2d(w, 2, 1, 1, 1);
    let y1 = x1.conv2d(w, 1, 1, 1, 1);
    let y2 = x.conv2d(w2, 1, 0, 1, 2);
    let y3 = x3.conv2d(w, 1, 1, 1, 1);
    // a single image with gemm's own threads, a 5×3 kernel
    let y4 = x1.conv2d(w3, 1, 1, 1, 1);
    // rows of 32 (stride 1) and 16 (stride 2); then 16 and 8 from the stride-2 result
    let y5 = x5.conv2d(w5, 1, 1, 1, 1);
    let y6 = x5.conv2d(w5, 2, 1, 1, 1);
    let w6 = b.input("w6", &[5, 6, 3, 3], DType::F32);
    let y7 = y6.conv2d(w6, 2, 1, 1, 1) + y6.conv2d(w6, 1, 1, 1, 1).sum(&[], false);
    // few input channels (the direct path on AVX-512): 37 columns (a chunk of 32 and a tail
    // of 5), 11 output channels (a block of 8 and a tail of 3); a 5×5 kernel without padding
    let x6 = b.input("x6", &[3, 3, 18, 37], DType::F32);
    let w7 = b.input("w7", &[11, 3, 3, 3], DType::F32);
    let x7 = b.input("x7", &[2, 1, 12, 50], DType::F32);
    let w8 = b.input("w8", &[4, 1, 5, 5], DType::F32);
    let y8 = x6.conv2d(w7, 1, 1, 1, 1);
    let y9 = x7.conv2d(w8, 1, 0, 1, 1);
    // per-channel biases: their gradients are summed by the kernel gradients, over image ranges
    // on 2 threads (the direct path and the gemm path)
    let w9 = b.input("w9", &[6, 4, 3, 3], DType::F32);
    let b9 = b.input("b9", &[1, 6, 1, 1], DType::F32);
    let w10 = b.input("w10", &[16, 8, 3, 3], DType::F32);
    let b10 = b.input("b10", &[1, 16, 1, 1], DType::F32);
    let z9 = x5.conv2d(w9, 1, 1, 1, 1) + b9;
    let z10 = x.conv2d(w10, 2, 1, 1, 1) + b10;
    // odd sizes: stride 2 without padding, a 1×1 kernel at stride 2 (input-gradient phases no
    // tap reaches), stride 3 with a 5×5 kernel, and dilation 2
    let x8 = b.input("x8", &[2, 5, 11, 13], DType::F32);
    let w11 = b.input("w11", &[7, 5, 3, 3], DType::F32);
    let w12 = b.input("w12", &[4, 5, 1, 1], DType::F32);
    let w13 = b.input("w13", &[6, 5, 5, 5], DType::F32);
    let z11 = x8.conv2d(w11, 2, 0, 1, 1);
    let z12 = x8.conv2d(w12, 2, 0, 1, 1);
    let z13 = x8.conv2d(w13, 3, 2, 1, 1);
    let z14 = x8.conv2d(w11, 1, 2, 2, 1);
    // 70 output channels: two tiles of 32 and one of 16 (6 of its lanes padding)
    let w14 = b.input("w14", &[70, 5, 3, 3], DType::F32);
    let z15 = x8.conv2d(w14, 2, 1, 1, 1);
    // a 1×1 kernel with padding: the input gradients crop (negative padding) at stride 1 and 2
    let z16 = x8.conv2d(w12, 1, 1, 1, 1);
    let z17 = x8.conv2d(w12, 2, 1, 1, 1);
    // a source too large to keep per thread (8 × 182 × 182 padded elements): copied into
    // scratch, its padding zeroed each time
    let x9 = b.input("x9", &[1, 8, 180, 180], DType::F32);
    let w15 = b.input("w15", &[4, 8, 3, 3], DType::F32);
    let z18 = x9.conv2d(w15, 1, 1, 1, 1);
    // 24 → 20 channels, 3×3 at unit stride: Winograd F(4×4, 3×3) forward and input gradient
    // (when on), padding 1, 0 and 2, partial tiles (13 × 10 input)
    let x10 = b.input("x10", &[2, 24, 13, 10], DType::F32);
    let w16 = b.input("w16", &[20, 24, 3, 3], DType::F32);
    let z19 = x10.conv2d(w16, 1, 1, 1, 1);
    let z20 = x10.conv2d(w16, 1, 0, 1, 1);
    let z21 = x10.conv2d(w16, 1, 2, 1, 1);
    let loss = (y * y).sum(&[], false)
        + (y1 * y1).sum(&[], false)
        + (y2 * y2).sum(&[], false)
        + (y3 * y3).sum(&[], false)
        + (y4 * y4).sum(&[], false)
        + (y5 * y5).sum(&[], false)
        + (y7 * y7).sum(&[], false)
        + (y8 * y8).sum(&[], false)
        + (y9 * y9).sum(&[], false)
        + (z9 * z9).sum(&[], false)
        + (z10 * z10).sum(&[], false)
        + (z11 * z11).sum(&[], false)
        + (z12 * z12).sum(&[], false)
        + (z13 * z13).sum(&[], false)
        + (z14 * z14).sum(&[], false)
        + (z15 * z15).sum(&[], false)
        + (z16 * z16).sum(&[], false)
        + (z17 * z17).sum(&[], false)
        + (z18 * z18).sum(&[], false)
        + ((z19 * z19).sum(&[], false) + (z20 * z20).sum(&[], false) + (z21 * z21).sum(&[], false))
            * 0.01;
    let gs = grad(
        loss,
        &[
            x, w, x1, w2, x3, w3, x5, w5, w6, x6, w7, x7, w8, w9, b9, w10, b10, x8, w11, w12, w13,
            w14, x9, w15, x10, w16,
        ],
    )
    .unwrap();
    let mut outs = vec![y, y1, y2, y3, y4, y5, y7, y8, y9, z19, z20, z21];
    outs.extend(gs);
    let g = b.finish(&outs).unwrap();
    let kinds: Vec<_> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Conv(p) => Some(p.kind),
            _ => None,
        })
        .collect();
    for want in [
        ConvKind::InputGrad { input_hw: [24, 20] },
        ConvKind::KernelGrad { kernel_hw: [3, 3] },
        ConvKind::KernelGrad { kernel_hw: [1, 1] },
    ] {
        assert!(kinds.contains(&want), "{want:?} missing from {kinds:?}");
    }
    let mut rng = TestRng::new(11);
    let inputs = random_inputs(&g, &mut rng);
    let plan = Plan::compile(&g).unwrap();
    // with AVX-512, the stride-2 convolution of `y6` runs image by image with the one making
    // `y6`, and each input gradient with its layer's kernel gradient beside it
    let (chained, beside) = if has_avx512() {
        (1, same_layer_gradients(&plan))
    } else {
        (0, 0)
    };
    assert_eq!(
        CpuBackend::new().compile(&plan).unwrap().kernel_count(),
        plan.kernel_count() - 2 - chained - beside,
        "the two bias gradients are summed by their kernel gradients, {beside} kernel gradients run beside input gradients:\n{}",
        plan.text()
    );
    // Winograd's rounding errors reach a few millionths of the products' magnitudes: 3.4e-4 on
    // one of `x3`'s gradients (-1.744 from products summing to ~400 in magnitude)
    for (winograd, tol) in [(false, 1e-4), (true, 1e-3)] {
        for threads in [1, 2] {
            check_against_ref(
                &CpuBackend::with_threads(threads).with_winograd(winograd),
                &format!("convolutions, {threads} threads, winograd {winograd}"),
                &g,
                &plan,
                &inputs,
                &StateMap::new(),
                (tol, tol),
            );
        }
    }
    if has_avx512() {
        // the switch reaches the kernels: the Winograd layers round differently
        let state = StateMap::new();
        let [on, off] = [true, false].map(|on| {
            let cpu = CpuBackend::with_threads(2).with_winograd(on);
            run_cpu(&cpu, &plan, &inputs, &state).unwrap().0
        });
        let z19 = 9;
        assert_ne!(
            on[z19].to_f64(),
            off[z19].to_f64(),
            "Winograd changed nothing"
        );
        assert_eq!(on[0].to_f64(), off[0].to_f64(), "a stride-2 layer changed");
    }
}

/// A per-channel bias added to a forward convolution's result (a training step: the sum is kept
/// for the ReLU's gradient) and the ReLU of the sum are computed by the convolution itself (stride
/// 1 and 2), and their steps disappear; not when the convolution's own value is read elsewhere.
/// The bias gradients are summed by the kernel gradients (gemm and direct paths, 1 and 2
/// threads).
#[test]
fn conv_bias_epilogue() {
    for dtype in [DType::F32, DType::F64] {
        let b = GraphBuilder::new();
        // three input channels: the direct path on AVX-512 for f32
        let x = b.input("x", &[3, 3, 10, 9], dtype);
        let w = b.input("w", &[16, 3, 3, 3], dtype);
        let bias = b.input("bias", &[1, 16, 1, 1], dtype);
        let x2 = b.input("x2", &[2, 16, 9, 7], dtype);
        let w2 = b.input("w2", &[6, 16, 3, 3], dtype);
        let bias2 = b.input("bias2", &[1, 6, 1, 1], dtype);
        let bias3 = b.input("bias3", &[1, 6, 1, 1], dtype);
        // stride 1 and stride 2, each feeding a ReLU (`max(0, y)`, `max(y, 0)`)
        let h = (x.conv2d(w, 1, 1, 1, 1) + bias).relu();
        let h2 = (h.conv2d(w2, 2, 1, 1, 1) + bias2).maximum(0.0);
        // a convolution whose value is also an output keeps its own add
        let c3 = x2.conv2d(w2, 1, 0, 1, 1);
        let h3 = (c3 + bias3).relu();
        // 48 channels (a tile of 32 and one of 16) and 90 positions: whole 16×16 blocks and
        // edges of the f32 implicit path's transposing epilogue
        let x4 = b.input("x4", &[2, 8, 9, 10], dtype);
        let w4 = b.input("w4", &[48, 8, 3, 3], dtype);
        let bias4 = b.input("bias4", &[1, 48, 1, 1], dtype);
        let h4 = (x4.conv2d(w4, 1, 1, 1, 1) + bias4).relu();
        // a chain whose input gradients end in a ReLU's gradient, read from the ReLU's result
        // and applied by the convolution: unit stride (20 channels: a 16×16 block and edges of
        // the transposing store) and stride 2 (per image, after the phases)
        let x5 = b.input("x5", &[2, 5, 9, 10], dtype);
        let w5 = b.input("w5", &[20, 5, 3, 3], dtype);
        let w6 = b.input("w6", &[24, 20, 3, 3], dtype);
        let w7 = b.input("w7", &[8, 24, 3, 3], dtype);
        let h5 = x5.conv2d(w5, 1, 1, 1, 1).relu();
        let h6 = h5.conv2d(w6, 1, 1, 1, 1).relu();
        let h7 = h6.conv2d(w7, 2, 1, 1, 1);
        // and stride 3 (no vector interleave); the input's gradient is not asked for, so the
        // first layer's kernel gradient (direct, with its bias gradient) is the only reader of
        // the second's input gradient: they run together image by image
        let x8 = b.input("x8", &[2, 5, 11, 10], dtype);
        let w8 = b.input("w8", &[12, 5, 3, 3], dtype);
        let bias8 = b.input("bias8", &[1, 12, 1, 1], dtype);
        let w9 = b.input("w9", &[6, 12, 3, 3], dtype);
        let h9 = (x8.conv2d(w8, 1, 1, 1, 1) + bias8)
            .relu()
            .conv2d(w9, 3, 1, 1, 1);
        // the same with an implicit kernel gradient (16 input channels) and a unit-stride input
        // gradient
        let x10 = b.input("x10", &[2, 16, 9, 8], dtype);
        let w10 = b.input("w10", &[20, 16, 3, 3], dtype);
        let w11 = b.input("w11", &[4, 20, 3, 3], dtype);
        let h11 = x10.conv2d(w10, 1, 1, 1, 1).relu().conv2d(w11, 1, 1, 1, 1);
        let loss = h2.sum(&[], false)
            + (h3 * h3).sum(&[], false)
            + h4.sum(&[], false)
            + h7.sum(&[], false)
            + h9.sum(&[], false)
            + h11.sum(&[], false);
        let params = [
            x, w, bias, w2, bias2, bias3, w4, bias4, x5, w5, w6, w7, w8, bias8, w9, w10, w11,
        ];
        let gs = grad(loss, &params).unwrap();
        let mut outs = vec![loss, h2, c3];
        outs.extend(gs);
        let g = b.finish(&outs).unwrap();
        let plan = Plan::compile(&optimize(&g, true).unwrap()).unwrap();
        let exe = CpuBackend::new().compile(&plan).unwrap();
        // fusion puts each bias add and its ReLU in one group (storing the ReLU, and the sum
        // too where the ReLU's gradient reads it): one step per convolution disappears; each
        // bias gradient (the cotangent summed over images and positions) is summed by the
        // kernel gradient that reads the same cotangent; the chains' four ReLU gradients are
        // applied by the input gradients they follow; and where the per-image paths run (f32
        // with AVX-512), two kernel gradients run inside the input gradients they read, two
        // forward convolutions with the ones whose ReLU they read (of `h` and of `x8`), and the
        // other kernel gradients beside their layers' input gradients
        let together = if dtype == DType::F32 && has_avx512() {
            4 + same_layer_gradients(&plan)
        } else {
            0
        };
        assert_eq!(
            exe.kernel_count(),
            plan.kernel_count() - 4 - 5 - 4 - together,
            "four bias adds and their ReLUs are done by their convolutions, five bias gradients by kernel gradients, four ReLU gradients by input gradients, {together} convolutions with others:\n{}",
            plan.text()
        );
        let mut rng = TestRng::new(13);
        let inputs = random_inputs(&g, &mut rng);
        let tol = if dtype == DType::F32 {
            (1e-4, 1e-4)
        } else {
            (1e-10, 1e-10)
        };
        // the 16-24 channel unit-stride layers run as Winograd F(4×4, 3×3) when it is on
        for (threads, winograd) in [(1, true), (2, true), (2, false)] {
            check_against_ref(
                &CpuBackend::with_threads(threads).with_winograd(winograd),
                &format!("conv + bias ({dtype}, {threads} threads, winograd {winograd})"),
                &g,
                &plan,
                &inputs,
                &StateMap::new(),
                tol,
            );
        }
    }
}

/// Whether this CPU runs lamina-cpu's AVX-512 convolution paths.
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A fused update written straight into its state buffer reads and writes the same memory: every
/// binary op with the state as first or second operand, against a tensor, a scalar or itself.
#[test]
fn in_place_updates_match_reference() {
    type Update = fn(Tensor, Tensor) -> Tensor;
    let rows: Vec<(&str, Update)> = vec![
        ("s + x", |s, x| s + x),
        ("x - s", |s, x| x - s),
        ("s * 0.5", |s, _| s * 0.5),
        ("2 / s", |s, _| 2.0 / s),
        ("s / x", |s, x| s / x),
        ("max(x, s)", |s, x| x.maximum(s)),
        ("s * s", |s, _| s * s),
        ("(x·s + s) - x", |s, x| (x * s + s) - x),
    ];
    for (what, f) in rows {
        for dtype in [DType::F32, DType::F64] {
            let b = GraphBuilder::new();
            let s = b.state("s", &[3000], dtype);
            let x = b.input("x", &[3000], dtype);
            let a = Tensor::apply(Op::Assign { name: "s".into() }, &[f(s, x)]);
            // optimised first: a row that does not read x has no input left
            let g = optimize(&b.finish(&[a]).unwrap(), true).unwrap();
            let mut rng = TestRng::new(3);
            let inputs = random_inputs(&g, &mut rng);
            let mut state = StateMap::new();
            let v: Vec<f64> = rng.vec(3000, 0.5, 1.5);
            state.insert(
                "s".into(),
                HostTensor::from_f64(&[3000], dtype, &v).unwrap(),
            );
            let plan = Plan::compile(&g).unwrap();
            assert_eq!(plan.kernel_count(), 1, "{what}: {}", plan.text());
            for threads in [1, 2] {
                check_against_ref(
                    &CpuBackend::with_threads(threads),
                    &format!("{what} ({dtype}, {threads} threads)"),
                    &g,
                    &plan,
                    &inputs,
                    &state,
                    (1e-6, 1e-6),
                );
            }
        }
    }
}

/// Zero-element tensors flow through every kind of kernel without touching memory.
#[test]
fn empty_tensors() {
    let b = GraphBuilder::new();
    let x = b.input("x", &[0, 4], DType::F32);
    let w = b.input("w", &[4, 3], DType::F32);
    let y = (x.matmul(w) * 2.0).exp();
    let g = b
        .finish(&[
            y,
            y.sum(&[1], false),
            x.permute(&[1, 0]),
            x.sum(&[1], false),
        ])
        .unwrap();
    let inputs = vec![
        HostTensor::zeros(&[0, 4], DType::F32).unwrap(),
        HostTensor::zeros(&[4, 3], DType::F32).unwrap(),
    ];
    let plan = Plan::compile(&g).unwrap();
    check_against_ref(
        &CpuBackend::new(),
        "empty",
        &g,
        &plan,
        &inputs,
        &StateMap::new(),
        (0.0, 0.0),
    );
}
