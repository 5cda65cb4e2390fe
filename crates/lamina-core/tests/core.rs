//! lamina-core's test binary: snapshots of printed graphs, passes preserving semantics on the
//! whole op table, the verifier, fusion grouping, the memory plan, a hand-built MLP trained through
//! `Assign` on the CPU backend against the reference, and property tests of shape errors.

use lamina_core::passes::{cse, dce, fold_constants, fusion_groups, optimize, simplify, verify};
use lamina_core::{
    grad, Backend, ConvKind, ConvParams, DType, Graph, GraphBuilder, HostTensor, Op, Plan,
    StateMap, Tensor,
};
use lamina_cpu::CpuBackend;
use lamina_ref::cases::op_table;
use lamina_ref::check::{assert_close, TestRng};
use lamina_ref::{run_graph, RefBackend};
use proptest::prelude::*;

/// Compares `text` with `tests/snapshots/<name>.txt`; `LAMINA_BLESS=1` rewrites the file.
fn snapshot(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var("LAMINA_BLESS").is_ok() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing snapshot {path:?}; run with LAMINA_BLESS=1"));
    assert_eq!(text, want, "snapshot {name} differs; if the change is intended, run with LAMINA_BLESS=1 and review the diff");
}

fn assign(name: &str, v: Tensor) -> Tensor {
    Tensor::apply(Op::Assign { name: name.into() }, &[v])
}

type SnapshotGraph = fn() -> Graph;

fn snapshot_graphs() -> Vec<(&'static str, SnapshotGraph)> {
    vec![
        ("affine_tanh", || {
            let b = GraphBuilder::new();
            let x = b.input("x", &[2, 3], DType::F32);
            let w = b.state("w", &[3, 2], DType::F32);
            let bias = b.state("b", &[2], DType::F32);
            let y = (x.matmul(w) + bias).tanh().sum(&[], false);
            let g = grad(y, &[w, bias]).unwrap();
            b.finish(&[y, g[0], g[1]]).unwrap()
        }),
        ("softmax_cross_entropy", || {
            let b = GraphBuilder::new();
            let logits = b.input("logits", &[2, 3], DType::F32);
            let labels = b.input("labels", &[2], DType::I32);
            let loss =
                -(logits.log_softmax(-1) * labels.one_hot(3, DType::F32)).sum(&[], false) / 2.0;
            let g = grad(loss, &[logits]).unwrap();
            b.finish(&[loss, g[0]]).unwrap()
        }),
        ("sgd_step", || {
            let b = GraphBuilder::new();
            let x = b.input("x", &[1, 2], DType::F32);
            let w = b.state("w", &[2, 2], DType::F32);
            let loss = x.matmul(w).square().sum(&[], false);
            let g = grad(loss, &[w]).unwrap();
            let upd = assign("w", w - g[0] * 0.1);
            b.finish(&[loss, upd]).unwrap()
        }),
    ]
}

#[test]
fn printed_graphs_after_autodiff_and_passes() {
    for (name, build) in snapshot_graphs() {
        let g = build();
        verify(&g).unwrap();
        snapshot(&format!("{name}.autodiff"), &g.to_string());
        let opt = optimize(&g, true).unwrap();
        assert!(
            opt.nodes.len() < g.nodes.len(),
            "{name}: passes removed nothing"
        );
        let plan = Plan::new(opt.clone()).unwrap();
        snapshot(
            &format!("{name}.optimized"),
            &format!("{opt}\n{}", plan.text()),
        );
    }
}

#[test]
fn passes_preserve_every_op_table_row() {
    for case in op_table(DType::F64) {
        let ins: Vec<&HostTensor> = case.inputs.iter().collect();
        let mut s0 = case.state.clone();
        let want = run_graph(&case.graph, &ins, &mut s0).unwrap();
        for (pass, f) in [
            ("fold", fold_constants as fn(&Graph) -> _),
            ("simplify", simplify),
            ("cse", cse),
            ("dce", dce),
            ("optimize", |g| optimize(g, true)),
        ] {
            let g = f(&case.graph).unwrap_or_else(|e| panic!("{} {pass}: {e}", case.name));
            verify(&g).unwrap_or_else(|e| panic!("{} after {pass}: {e}", case.name));
            let mut s1 = case.state.clone();
            let got = run_graph(&g, &ins, &mut s1).unwrap();
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                assert_close(
                    a,
                    b,
                    1e-12,
                    1e-14,
                    &format!("{} after {pass}, output {k}", case.name),
                );
            }
            for (name, v) in &s0 {
                assert_close(
                    &s1[name],
                    v,
                    1e-12,
                    1e-14,
                    &format!("{} after {pass}, state {name}", case.name),
                );
            }
        }
    }
}

#[test]
fn folding_and_cse_shrink_graphs() {
    let b = GraphBuilder::new();
    let x = b.input("x", &[4], DType::F32);
    let two = b.scalar(1.0, DType::F32) + b.scalar(1.0, DType::F32); // folds to 2
    let y = (x * two).exp() + (x * two).exp(); // CSE merges the two exps
    let unused = x.sqrt(); // DCE drops it
    let _ = unused;
    let g = b.finish(&[y]).unwrap();
    let opt = optimize(&g, true).unwrap();
    let text = opt.to_string();
    assert_eq!(text.matches("exp").count(), 1, "{text}");
    assert!(!text.contains("sqrt"), "{text}");
    assert!(text.contains("const 2.0"), "{text}");
}

#[test]
fn verifier_rejects_broken_graphs() {
    let good = || {
        let b = GraphBuilder::new();
        let x = b.input("x", &[2], DType::F32);
        let s = b.state("s", &[2], DType::F32);
        let y = x + s;
        b.finish(&[y]).unwrap()
    };
    type Break = fn(&mut Graph);
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "operand after user",
            |g| g.nodes[2].inputs[0] = 2,
            "does not come before",
        ),
        (
            "wrong stored type",
            |g| g.nodes[2].ty.shape = vec![3],
            "shape rule gives",
        ),
        (
            "input declared twice",
            |g| {
                g.nodes[1].op = Op::Input {
                    name: "x".into(),
                    shape: vec![2],
                    dtype: DType::F32,
                }
            },
            "declared twice",
        ),
        (
            "assign twice",
            |g| {
                g.nodes.push(lamina_core::Node {
                    op: Op::Assign { name: "s".into() },
                    inputs: vec![2],
                    ty: g.nodes[2].ty.clone(),
                });
                g.nodes.push(lamina_core::Node {
                    op: Op::Assign { name: "s".into() },
                    inputs: vec![0],
                    ty: g.nodes[0].ty.clone(),
                });
            },
            "assigned twice",
        ),
        (
            "assign of another type",
            |g| {
                g.nodes.push(lamina_core::Node {
                    op: Op::Cast { to: DType::F64 },
                    inputs: vec![2],
                    ty: lamina_core::TensorType::new(&[2], DType::F64),
                });
                g.nodes.push(lamina_core::Node {
                    op: Op::Assign { name: "s".into() },
                    inputs: vec![3],
                    ty: lamina_core::TensorType::new(&[2], DType::F64),
                });
            },
            "writes f64[2] into state \"s\" of type f32[2]",
        ),
        (
            "reads an assign",
            |g| {
                g.nodes.push(lamina_core::Node {
                    op: Op::Assign { name: "s".into() },
                    inputs: vec![2],
                    ty: g.nodes[2].ty.clone(),
                });
                g.nodes.push(lamina_core::Node {
                    op: Op::Neg,
                    inputs: vec![3],
                    ty: g.nodes[2].ty.clone(),
                });
            },
            "reads the result of assign",
        ),
        (
            "missing output",
            |g| g.outputs = vec![9],
            "output %9 does not exist",
        ),
    ];
    verify(&good()).unwrap();
    for (name, brk, want) in cases {
        let mut g = good();
        brk(&mut g);
        let err = verify(&g).expect_err(name).to_string();
        assert!(
            err.contains(want),
            "{name}: error '{err}' should contain '{want}'"
        );
    }
}

#[test]
fn gradient_through_assign_says_it_has_none() {
    let b = GraphBuilder::new();
    let s = b.state("s", &[2], DType::F64);
    let x = b.input("x", &[2], DType::F64);
    let a = assign("s", x * 2.0);
    let err = grad(a.sum(&[], false), &[x]).unwrap_err().to_string();
    assert!(err.contains("assign has no gradient"), "{err}");
    let _ = s;
}

/// Every Conv kind checks its operands and says which shapes are wrong.
#[test]
fn conv_kinds_reject_bad_shapes() {
    let ig = |h, w| ConvKind::InputGrad { input_hw: [h, w] };
    let kg = |h, w| ConvKind::KernelGrad { kernel_hw: [h, w] };
    // (kind, stride, groups, first operand, second operand, words the message must contain)
    type Row = (
        ConvKind,
        usize,
        usize,
        Vec<usize>,
        Vec<usize>,
        Vec<&'static str>,
    );
    let rows: Vec<Row> = vec![
        (
            ConvKind::Forward,
            1,
            1,
            vec![1, 3, 5, 5],
            vec![4, 2, 3, 3],
            vec!["3 input channels", "[1,3,5,5]"],
        ),
        (
            ig(7, 6),
            2,
            1,
            vec![2, 4, 3, 3],
            vec![4, 3, 3, 3],
            vec!["output gradient [2,4,3,3]", "[2,4,4,3]"],
        ),
        (
            ig(7, 6),
            2,
            1,
            vec![2, 5, 4, 3],
            vec![4, 3, 3, 3],
            vec!["output gradient [2,5,4,3]", "[2,4,4,3]"],
        ),
        (
            ig(0, 0),
            1,
            1,
            vec![1, 4, 1, 1],
            vec![4, 3, 3, 3],
            vec!["larger than the padded input 2"],
        ),
        (
            ig(5, 5),
            1,
            1,
            vec![4, 3, 3],
            vec![4, 3, 3, 3],
            vec!["output gradient must be [N,O,HO,WO]"],
        ),
        (
            kg(3, 3),
            2,
            1,
            vec![2, 3, 7, 6],
            vec![2, 4, 4, 4],
            vec!["output gradient [2,4,4,4]", "[2,4,4,3]"],
        ),
        (
            kg(3, 3),
            2,
            1,
            vec![2, 3, 7, 6],
            vec![3, 4, 4, 3],
            vec!["[3,4,4,3]", "[2,4,4,3]"],
        ),
        (
            kg(3, 3),
            1,
            2,
            vec![2, 3, 7, 6],
            vec![2, 4, 7, 6],
            vec!["3 input channels do not split into 2 groups"],
        ),
    ];
    for (kind, stride, groups, a, b, words) in rows {
        let g = GraphBuilder::new();
        let x = g.input("a", &a, DType::F32);
        let y = g.input("b", &b, DType::F32);
        let p = ConvParams {
            stride: [stride; 2],
            padding: [(1, 1); 2],
            dilation: [1, 1],
            groups,
            kind,
        };
        let err = x.conv(y, &p).check().unwrap_err().to_string();
        for word in words {
            assert!(
                err.contains("conv") && err.contains(word),
                "{kind:?} {a:?} {b:?}: {err}"
            );
        }
    }
}

/// Adam's update of one parameter: m', v' and p' come out of one fused kernel, written straight
/// into their state buffers (no Assign copies).
#[test]
fn optimizer_update_is_one_fusion_group_with_three_outputs() {
    let b = GraphBuilder::new();
    let g = b.input("g", &[8], DType::F32);
    let (p, m, v) = (
        b.state("p", &[8], DType::F32),
        b.state("m", &[8], DType::F32),
        b.state("v", &[8], DType::F32),
    );
    let m2 = m * 0.9 + g * 0.1;
    let v2 = v * 0.999 + g * g * 0.001;
    let p2 = p - m2 * 1e-3 / (v2.sqrt() + 1e-8);
    let graph = b
        .finish(&[assign("p", p2), assign("m", m2), assign("v", v2)])
        .unwrap();
    let graph = optimize(&graph, true).unwrap();
    let groups = fusion_groups(&graph);
    assert_eq!(groups.len(), 1, "{graph}");
    assert_eq!(groups[0].outputs.len(), 3);
    let plan = Plan::new(graph).unwrap();
    assert_eq!(
        plan.kernel_count(),
        1,
        "one fused kernel writing the three states in place:\n{}",
        plan.text()
    );
    assert_eq!(plan.arena_bytes, 0);
}

/// A node read by a fused group and by later kernels joins the group as an extra stored output
/// (one kernel for bias + swish, whose pre-activation and sigmoid the backward pass reads), unless
/// one of its other readers feeds the group (that would be a cycle between kernels). Every plan
/// must still compute each operand before the step that reads it, and run like the reference.
#[test]
fn fusion_stores_values_read_later_as_extra_outputs() {
    type Case = (&'static str, fn(&GraphBuilder) -> Vec<Tensor>, usize);
    let rows: Vec<Case> = vec![
        (
            // z = x + b, s = sigmoid(z), y = z·s; s also read by a later reduction
            "bias_swish",
            |b| {
                let x = b.input("x", &[4, 6], DType::F32);
                let bias = b.input("bias", &[6], DType::F32);
                let z = x + bias;
                let s = z.sigmoid();
                let y = z * s;
                vec![y.sum(&[1], false), s.sum(&[0], false)]
            },
            // one kernel for z, s and y storing s and y (it was three), the two reductions
            3,
        ),
        (
            // e = exp(x) is read by the group of e / sum(e) and by sum(e), which that group
            // reads: e cannot join it (its kernel would have to run before and after the sum)
            "softmax",
            |b| {
                let x = b.input("x", &[3, 5], DType::F32);
                let e = x.exp();
                vec![e / e.sum(&[1], true)]
            },
            3,
        ),
    ];
    for (name, build, kernels) in rows {
        let b = GraphBuilder::new();
        let outs = build(&b);
        let graph = b.finish(&outs).unwrap();
        let plan = Plan::compile(&graph).unwrap();
        assert_eq!(plan.kernel_count(), kernels, "{name}:\n{}", plan.text());
        let step_of = plan.step_of_nodes();
        for (t, step) in plan.steps.iter().enumerate() {
            let members: Vec<usize> = match step {
                lamina_core::Step::Fused { nodes, .. } => nodes.clone(),
                lamina_core::Step::Node(id) => vec![*id],
            };
            for &m in &members {
                for &i in &plan.graph.nodes[m].inputs {
                    let r = plan.root(i);
                    if let (false, Some(ti)) = (members.contains(&i), step_of[r]) {
                        assert!(
                            ti < t,
                            "{name}: step {t} reads %{r} of step {ti}:\n{}",
                            plan.text()
                        );
                    }
                }
            }
        }
        let mut rng = TestRng::new(3);
        let inputs: Vec<HostTensor> = plan
            .inputs
            .iter()
            .map(|&i| {
                let ty = &plan.graph.nodes[i].ty;
                let n = lamina_core::numel(&ty.shape);
                HostTensor::from_f64(&ty.shape, ty.dtype, &rng.vec(n, -2.0, 2.0)).unwrap()
            })
            .collect();
        let refs: Vec<&HostTensor> = inputs.iter().collect();
        let cpu = CpuBackend::new();
        let mut exe = cpu.compile(&plan).unwrap();
        let got = cpu.run(&mut exe, &mut StateMap::new(), &refs).unwrap();
        let want = run_graph(&graph, &refs, &mut StateMap::new()).unwrap();
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(g, w, 1e-5, 1e-6, &format!("{name} output {k}"));
        }
    }
}

/// A ReLU's gradient reads the ReLU's result (`0 < max(0, z)` is `0 < z`), so the forward pass
/// stores only the ReLU, not its input as well; the values match the reference.
#[test]
fn relu_gradient_reads_the_relu_not_its_input() {
    let b = GraphBuilder::new();
    let x = b.input("x", &[4, 6], DType::F32);
    let bias = b.input("bias", &[6], DType::F32);
    let h = (x + bias).relu();
    let loss = (h * h).sum(&[], false);
    let g = grad(loss, &[x]).unwrap();
    let graph = b.finish(&[loss, g[0]]).unwrap();
    let plan = Plan::compile(&graph).unwrap();
    let nodes = &plan.graph.nodes;
    for n in nodes.iter().filter(|n| matches!(n.op, Op::CmpLt)) {
        assert!(
            n.inputs.iter().all(|&i| !matches!(nodes[i].op, Op::Add)),
            "the ReLU's gradient compares the pre-activation:\n{}",
            plan.text()
        );
    }
    // the group computing the bias add and the ReLU stores the ReLU (and h·h for the sum), not
    // the bias add
    let forward = plan.steps.iter().find_map(|s| match s {
        lamina_core::Step::Fused { nodes: m, outputs }
            if m.iter().any(|&i| matches!(nodes[i].op, Op::Max)) =>
        {
            Some(outputs.clone())
        }
        _ => None,
    });
    let outputs = forward.expect("a fused step computes the ReLU");
    assert!(
        outputs.iter().any(|&o| matches!(nodes[o].op, Op::Max))
            && outputs.iter().all(|&o| !matches!(nodes[o].op, Op::Add)),
        "{}",
        plan.text()
    );
    let mut rng = TestRng::new(4);
    let xs = HostTensor::from_f64(&[4, 6], DType::F32, &rng.vec(24, -2.0, 2.0)).unwrap();
    let bs = HostTensor::from_f64(&[6], DType::F32, &rng.vec(6, -1.0, 1.0)).unwrap();
    let cpu = CpuBackend::new();
    let mut exe = cpu.compile(&plan).unwrap();
    let got = cpu
        .run(&mut exe, &mut StateMap::new(), &[&xs, &bs])
        .unwrap();
    let want = run_graph(&graph, &[&xs, &bs], &mut StateMap::new()).unwrap();
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(g, w, 1e-5, 1e-6, &format!("relu output {k}"));
    }
}

fn mlp_step(widths: &[usize], batch: usize, dtype: DType, lr: f64) -> Graph {
    let b = GraphBuilder::new();
    let x = b.input("x", &[batch, widths[0]], dtype);
    let labels = b.input("labels", &[batch], DType::I32);
    let mut h = x;
    let mut params = Vec::new();
    for l in 0..widths.len() - 1 {
        let w = b.state(&format!("w{l}"), &[widths[l], widths[l + 1]], dtype);
        let bias = b.state(&format!("b{l}"), &[widths[l + 1]], dtype);
        h = h.matmul(w) + bias;
        if l + 2 < widths.len() {
            h = h.relu();
        }
        params.push((format!("w{l}"), w));
        params.push((format!("b{l}"), bias));
    }
    let classes = *widths.last().unwrap();
    let loss = -(h.log_softmax(-1) * labels.one_hot(classes, dtype)).sum(&[], false) / batch as f64;
    let tensors: Vec<Tensor> = params.iter().map(|p| p.1).collect();
    let grads = grad(loss, &tensors).unwrap();
    let mut outs = vec![loss];
    for ((name, p), g) in params.iter().zip(grads) {
        outs.push(assign(name, *p - g * lr));
    }
    b.finish(&outs).unwrap()
}

fn init_state(widths: &[usize], dtype: DType, rng: &mut TestRng) -> StateMap<HostTensor> {
    let mut st = StateMap::new();
    for l in 0..widths.len() - 1 {
        let bound = 1.0 / (widths[l] as f64).sqrt();
        let w = rng.vec(widths[l] * widths[l + 1], -bound, bound);
        st.insert(
            format!("w{l}"),
            HostTensor::from_f64(&[widths[l], widths[l + 1]], dtype, &w).unwrap(),
        );
        st.insert(
            format!("b{l}"),
            HostTensor::from_f64(
                &[widths[l + 1]],
                dtype,
                &rng.vec(widths[l + 1], -bound, bound),
            )
            .unwrap(),
        );
    }
    st
}

#[test]
fn memory_plan_of_a_ten_layer_mlp_step_reuses_memory() {
    let widths = [64, 128, 128, 128, 128, 128, 128, 128, 128, 128, 10];
    let plan = Plan::compile(&mlp_step(&widths, 32, DType::F32, 0.1)).unwrap();
    let ratio = plan.arena_bytes as f64 / plan.value_bytes as f64;
    println!(
        "10-layer MLP step: {} kernels, peak arena {} bytes, sum of intermediates {} bytes, ratio {ratio:.3}",
        plan.kernel_count(),
        plan.arena_bytes,
        plan.value_bytes
    );
    assert!(
        ratio < 0.35,
        "peak {} is not well under the sum {} (ratio {ratio:.3})",
        plan.arena_bytes,
        plan.value_bytes
    );
    // the plan is sound: arena values alive at the same time never share bytes
    let n = plan.graph.nodes.len();
    let (mut def, mut last) = (vec![usize::MAX; n], vec![0; n]);
    for (t, step) in plan.steps.iter().enumerate() {
        let members: Vec<usize> = match step {
            lamina_core::Step::Fused { nodes, outputs } => {
                outputs.iter().for_each(|&o| def[o] = t);
                nodes.clone()
            }
            lamina_core::Step::Node(id) => {
                def[*id] = t;
                vec![*id]
            }
        };
        for &m in &members {
            for &i in &plan.graph.nodes[m].inputs {
                if !members.contains(&i) {
                    let r = plan.root(i);
                    last[r] = last[r].max(t);
                }
            }
        }
    }
    for &o in &plan.graph.outputs {
        last[plan.root(o)] = plan.steps.len();
    }
    let vals: Vec<(usize, usize, usize, usize)> = (0..n)
        .filter_map(|i| match plan.storage[i] {
            lamina_core::Storage::Arena { offset, bytes } => {
                Some((offset, offset + bytes, def[i], last[i].max(def[i])))
            }
            _ => None,
        })
        .collect();
    for (i, a) in vals.iter().enumerate() {
        assert!(a.1 <= plan.arena_bytes);
        for b in &vals[i + 1..] {
            let alive_together = a.2 <= b.3 && b.2 <= a.3;
            let share_bytes = a.0 < b.1 && b.0 < a.1;
            assert!(
                !(alive_together && share_bytes),
                "values {a:?} and {b:?} overlap"
            );
        }
    }
}

/// A 2-layer MLP trained 100 steps with softmax cross-entropy and SGD through `Assign`: the loss
/// falls, and lamina-cpu matches lamina-ref at every step.
#[test]
fn hand_built_mlp_trains_on_cpu_like_the_reference() {
    let widths = [4, 16, 3];
    let batch = 24;
    // toy problem: the class is the index of the largest of the first three features
    let mut rng = TestRng::new(5);
    let xs = rng.vec(batch * 4, -1.0, 1.0);
    let labels: Vec<f64> = (0..batch)
        .map(|i| {
            (0..3)
                .max_by(|&a, &b| xs[i * 4 + a].total_cmp(&xs[i * 4 + b]))
                .unwrap() as f64
        })
        .collect();
    for (dtype, rtol) in [(DType::F64, 1e-10), (DType::F32, 1e-5)] {
        let graph = mlp_step(&widths, batch, dtype, 0.5);
        let plan = Plan::compile(&graph).unwrap();
        let cpu = CpuBackend::new();
        let mut exe = cpu.compile(&plan).unwrap();
        let mut rng = TestRng::new(9);
        let init = init_state(&widths, dtype, &mut rng);
        let mut cpu_state: StateMap<_> = init
            .iter()
            .map(|(k, v)| (k.clone(), cpu.upload(v).unwrap()))
            .collect();
        let mut ref_state = init.clone();
        let (mut ref_exe, refb) = (RefBackend.compile(&plan).unwrap(), RefBackend);
        let x = HostTensor::from_f64(&[batch, 4], dtype, &xs).unwrap();
        let y = HostTensor::from_f64(&[batch], DType::I32, &labels).unwrap();
        let mut first = 0.0;
        let mut last = 0.0;
        for step in 0..100 {
            let got = cpu.run(&mut exe, &mut cpu_state, &[&x, &y]).unwrap();
            let want = refb.run(&mut ref_exe, &mut ref_state, &[&x, &y]).unwrap();
            assert_close(
                &got[0],
                &want[0],
                rtol,
                0.0,
                &format!("{dtype} loss at step {step}"),
            );
            // keep the reference on the same trajectory in f32 (it does not round between ops)
            if dtype == DType::F32 {
                for (k, v) in ref_state.iter_mut() {
                    let c = cpu.download(&cpu_state[k]).unwrap();
                    assert_close(&c, v, 1e-4, 1e-6, &format!("{dtype} {k} at step {step}"));
                    *v = c;
                }
            }
            let l = got[0].to_f64()[0];
            if step == 0 {
                first = l;
            }
            last = l;
        }
        println!("{dtype}: loss {first:.4} → {last:.4} over 100 steps");
        assert!(
            last < 0.5 * first,
            "{dtype}: loss did not fall: {first} → {last}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Mismatched shapes give an error naming the op and both shapes, never a panic.
    #[test]
    fn mismatched_shapes_are_errors(a in prop::collection::vec(1usize..5, 1..4), b in prop::collection::vec(1usize..5, 1..4), which in 0usize..4) {
        let bld = GraphBuilder::new();
        let x = bld.input("a", &a, DType::F32);
        let y = bld.input("b", &b, DType::F32);
        let (op, out) = match which {
            0 => ("add", x + y),
            1 => ("matmul", x.matmul(y)),
            2 => ("where", x.lt(0.0).where_(x, y)),
            _ => ("conv", x.conv2d(y, 1, 0, 1, 1)),
        };
        let broadcastable = lamina_core::broadcast_shapes(&a, &b).is_some();
        match bld.finish(&[out]) {
            Ok(_) => prop_assert!(broadcastable || op == "matmul" || op == "conv"),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(op), "{} does not name {}", msg, op);
                let fa = lamina_core::dtype::fmt_shape(&a);
                let fb = lamina_core::dtype::fmt_shape(&b);
                prop_assert!(msg.contains(&fa) && msg.contains(&fb), "{} does not name {} and {}", msg, fa, fb);
            }
        }
    }

    #[test]
    fn reshape_to_wrong_count_is_an_error(a in prop::collection::vec(1usize..6, 1..4), b in prop::collection::vec(1usize..6, 1..4)) {
        let bld = GraphBuilder::new();
        let x = bld.input("a", &a, DType::F32);
        let r = bld.finish(&[x.reshape(&b)]);
        let same = a.iter().product::<usize>() == b.iter().product::<usize>();
        prop_assert_eq!(r.is_ok(), same);
        if let Err(e) = r {
            let msg = e.to_string();
            prop_assert!(msg.contains("reshape") && msg.contains(&lamina_core::dtype::fmt_shape(&b)), "{}", msg);
        }
    }
}
