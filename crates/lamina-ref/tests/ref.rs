//! lamina-ref's test binary: the op table's coverage, every row's gradient (first and, for smooth
//! ops, second order) against f64 central differences, and hand-computed forward values.

use lamina_core::{DType, GraphBuilder, HostTensor, Op, OpKind, StateMap, Tensor};
use lamina_ref::cases::op_table;
use lamina_ref::check::{assert_close, grad_check};
use lamina_ref::run_graph;

#[test]
fn every_primitive_has_a_row() {
    let table = op_table(DType::F64);
    let missing: Vec<&str> = OpKind::ALL
        .iter()
        .filter(|k| !table.iter().any(|c| c.kind == **k))
        .map(|k| k.name())
        .collect();
    println!(
        "primitives: {} (cap 36), op table rows: {}",
        OpKind::ALL.len(),
        table.len()
    );
    assert!(
        missing.is_empty(),
        "primitives without an op-table row: {missing:?}"
    );
    assert!(
        OpKind::ALL.len() <= 36,
        "{} primitives exceed the cap of 36",
        OpKind::ALL.len()
    );
}

#[test]
fn every_row_runs_in_f32_and_f64() {
    for d in [DType::F32, DType::F64] {
        for case in op_table(d) {
            let ins: Vec<&HostTensor> = case.inputs.iter().collect();
            let mut st = case.state.clone();
            let outs = run_graph(&case.graph, &ins, &mut st)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(outs.len(), case.graph.outputs.len(), "{}", case.name);
        }
    }
}

#[test]
fn gradients_match_central_differences() {
    let mut checked = 0;
    for case in op_table(DType::F64).into_iter().filter(|c| c.grad) {
        for seed in 0..2 {
            let r = grad_check(&case.graph, &case.inputs, &case.state, 1, seed)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert!(
                r.ok(1e-6),
                "{}: autodiff {} vs central difference {}",
                case.name,
                r.analytic,
                r.numeric
            );
            assert!(
                r.analytic.abs() > 1e-8,
                "{}: degenerate check (zero gradient)",
                case.name
            );
        }
        checked += 1;
    }
    println!("first-order gradient checks: {checked} rows");
}

#[test]
fn gradients_of_gradients_match_central_differences() {
    let mut checked = 0;
    for case in op_table(DType::F64).into_iter().filter(|c| c.grad2) {
        let r = grad_check(&case.graph, &case.inputs, &case.state, 2, 7)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(
            r.ok(1e-5),
            "{}: second order: autodiff {} vs central difference {}",
            case.name,
            r.analytic,
            r.numeric
        );
        checked += 1;
    }
    println!("second-order gradient checks: {checked} rows");
}

/// Known values computed by hand: the interpreter is the specification, so its own forward
/// semantics are pinned here.
#[test]
fn forward_values_by_hand() {
    type Build = fn(&GraphBuilder) -> Tensor;
    let rows: Vec<(&str, Build, Vec<f64>)> = vec![
        (
            "matmul",
            |b| {
                let a = b.constant(&[2, 2], vec![1.0, 2.0, 3.0, 4.0], DType::F64);
                a.matmul(b.constant(&[2, 1], vec![5.0, 6.0], DType::F64))
            },
            vec![17.0, 39.0],
        ),
        (
            "conv 1x1x3x3 * 2x2, stride 1",
            |b| {
                let x = b.constant(&[1, 1, 3, 3], (1..=9).map(f64::from).collect(), DType::F64);
                x.conv2d(
                    b.constant(&[1, 1, 2, 2], vec![1.0, 0.0, 0.0, -1.0], DType::F64),
                    1,
                    0,
                    1,
                    1,
                )
            },
            vec![-4.0, -4.0, -4.0, -4.0],
        ),
        (
            "conv padding 1 stride 2",
            |b| {
                let x = b.constant(&[1, 1, 3, 3], (1..=9).map(f64::from).collect(), DType::F64);
                x.conv2d(b.constant(&[1, 1, 1, 1], vec![2.0], DType::F64), 2, 1, 1, 1)
            },
            vec![0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0],
        ),
        (
            "pad interior",
            |b| {
                b.constant(&[2], vec![1.0, 2.0], DType::F64).prim(Op::Pad {
                    lo: vec![1],
                    hi: vec![2],
                    interior: vec![1],
                    value: 9.0,
                })
            },
            vec![9.0, 1.0, 9.0, 2.0, 9.0, 9.0],
        ),
        (
            "slice stride",
            |b| {
                b.constant(&[5], vec![0.0, 1.0, 2.0, 3.0, 4.0], DType::F64)
                    .slice(0, 1, 5, 2)
            },
            vec![1.0, 3.0],
        ),
        (
            "gather",
            |b| {
                let idx = b.constant(&[3], vec![2.0, 0.0, 7.0], DType::I32);
                b.constant(&[3], vec![10.0, 20.0, 30.0], DType::F64)
                    .gather(idx, 0)
            },
            vec![30.0, 10.0, 0.0],
        ),
        (
            "scatter_add",
            |b| {
                let idx = b.constant(&[3], vec![1.0, 1.0, 0.0], DType::I32);
                Tensor::apply(
                    Op::ScatterAdd {
                        axis: 0,
                        dim_size: 2,
                    },
                    &[b.constant(&[3], vec![1.0, 2.0, 4.0], DType::F64), idx],
                )
            },
            vec![4.0, 3.0],
        ),
        (
            "argmax first of ties",
            |b| {
                b.constant(&[2, 3], vec![1.0, 3.0, 3.0, 5.0, 2.0, 5.0], DType::F64)
                    .argmax(1, false)
                    .cast(DType::F64)
            },
            vec![1.0, 0.0],
        ),
        (
            "reduce_max with NaN",
            |b| {
                b.constant(&[3], vec![1.0, f64::NAN, 2.0], DType::F64)
                    .max(&[], false)
            },
            vec![f64::NAN],
        ),
        (
            "integer division truncates, by zero gives 0",
            |b| {
                let a = b.constant(&[3], vec![7.0, -7.0, 3.0], DType::I32);
                (a / b.constant(&[3], vec![2.0, 2.0, 0.0], DType::I32)).cast(DType::F64)
            },
            vec![3.0, -3.0, 0.0],
        ),
        (
            "cast saturates and truncates",
            |b| {
                b.constant(&[3], vec![-2.7, 3e10, f64::NAN], DType::F64)
                    .cast(DType::I32)
                    .cast(DType::F64)
            },
            vec![-2.0, 2147483647.0, 0.0],
        ),
        (
            "iota",
            |b| b.iota(&[2, 3], 0, DType::F64),
            vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        ),
        (
            "softmax",
            |b| {
                b.constant(&[2], vec![0.0, f64::ln(3.0)], DType::F64)
                    .softmax(0)
            },
            vec![0.25, 0.75],
        ),
        (
            "max pool 2x2",
            |b| {
                b.constant(&[1, 1, 2, 2], vec![1.0, 4.0, 3.0, 2.0], DType::F64)
                    .max_pool2d(2, 2, 0)
            },
            vec![4.0],
        ),
        (
            "avg pool 2x2 with padding counts zeros",
            |b| {
                b.constant(&[1, 1, 1, 1], vec![4.0], DType::F64)
                    .avg_pool2d(2, 1, 1)
            },
            vec![1.0, 1.0, 1.0, 1.0],
        ),
    ];
    for (name, build, want) in rows {
        let b = GraphBuilder::new();
        let y = build(&b);
        let g = b.finish(&[y]).unwrap();
        let got = run_graph(&g, &[], &mut StateMap::new()).unwrap();
        let want = HostTensor::f64(got[0].shape(), want).unwrap();
        assert_close(&got[0], &want, 1e-12, 1e-12, name);
    }
}

#[test]
fn state_reads_see_the_start_and_assigns_apply_at_the_end() {
    let b = GraphBuilder::new();
    let s = b.state("s", &[2], DType::F64);
    let w = Tensor::apply(Op::Assign { name: "s".into() }, &[s + 1.0]);
    let later = s * 10.0; // built after the assign: still reads the old value
    let g = b.finish(&[w, later]).unwrap();
    let mut st = StateMap::new();
    st.insert(
        "s".to_string(),
        HostTensor::f64(&[2], vec![1.0, 2.0]).unwrap(),
    );
    let out = run_graph(&g, &[], &mut st).unwrap();
    assert_eq!(out[0].to_f64(), vec![2.0, 3.0]);
    assert_eq!(out[1].to_f64(), vec![10.0, 20.0]);
    assert_eq!(st["s"].to_f64(), vec![2.0, 3.0]);
}
