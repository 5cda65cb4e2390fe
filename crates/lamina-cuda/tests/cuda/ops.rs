//! Every row of the shared op table in strict f32 and f64, eager with every launch on its own and
//! replayed as a CUDA graph with small launches merged into segments; the RNG bit for bit; bad
//! input.

use super::common::{backend, backend_with, download, run_cuda, serial, upload};
use lamina_core::*;
use lamina_cuda::CudaBuffer;
use lamina_ref::cases::op_table;
use lamina_ref::check::assert_close;

/// Each row launch by launch with nothing merged (`LAMINA_CUDA_SEGMENT=0`), and as a CUDA graph
/// with small launches merged into segments (the default: a tiny row runs as one single-block
/// kernel).
fn check_table(dtype: DType, tol: (f64, f64)) {
    for (graphs, merge) in [(false, "0"), (true, "16384")] {
        let test = format!("op_table_{dtype}");
        let Some(cuda) = backend_with(&test, false, graphs) else {
            return;
        };
        let cases = op_table(dtype);
        assert!(!cases.is_empty());
        for case in &cases {
            let what = format!(
                "{} ({dtype}, graphs {graphs}, segment bound {merge})",
                case.name
            );
            let plan = Plan::compile(&case.graph).unwrap_or_else(|e| panic!("{what}: plan: {e}"));
            // read when the plan is compiled; the tests run one at a time (`serial`)
            std::env::set_var("LAMINA_CUDA_SEGMENT", merge);
            let result = run_cuda(&cuda, &plan, &case.inputs, &case.state);
            std::env::remove_var("LAMINA_CUDA_SEGMENT");
            let (got, got_state) =
                result.unwrap_or_else(|e| panic!("{what}: cuda failed: {e}\n{}", plan.text()));
            let mut want_state = case.state.clone();
            let feeds: Vec<&HostTensor> = case.inputs.iter().collect();
            let want = lamina_ref::run_graph(&case.graph, &feeds, &mut want_state)
                .unwrap_or_else(|e| panic!("{what}: ref failed: {e}"));
            assert_eq!(got.len(), want.len(), "{what}: output count");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.dtype(), w.dtype(), "{what}: output {i} dtype");
                assert_close(g, w, tol.0, tol.1, &format!("{what}: output {i}"));
            }
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
    }
}

#[test]
fn op_table_f32_strict() {
    let _serial = serial();
    check_table(DType::F32, (1e-5, 1e-6));
}

#[test]
fn op_table_f64() {
    let _serial = serial();
    check_table(DType::F64, (1e-10, 1e-10));
}

/// RandomBits on the device draws exactly `lamina_core::rng`'s bits (odd length, several steps).
#[test]
fn random_bits_match_the_host_generator() {
    let _serial = serial();
    let Some(cuda) = backend("random_bits_match_the_host_generator") else {
        return;
    };
    let b = GraphBuilder::new();
    let key = b.input("key", &[2], DType::I32);
    let bits = Tensor::apply(
        Op::RandomBits {
            shape: vec![1001],
            stream: 77,
        },
        &[key],
    );
    let plan = Plan::compile(&b.finish(&[bits]).unwrap()).unwrap();
    let mut exe = cuda.compile(&plan).unwrap();
    for (seed, step) in [(0, 0), (12345, 3), (-7, 1 << 20)] {
        let k = HostTensor::i32(&[2], vec![seed, step]).unwrap();
        let out = cuda.run(&mut exe, &mut StateMap::new(), &[&k]).unwrap();
        let mut want = vec![0i32; 1001];
        lamina_core::rng::fill_random_bits(seed, step, 77, &mut want);
        assert_eq!(
            out[0],
            HostTensor::i32(&[1001], want).unwrap(),
            "seed {seed} step {step}"
        );
    }
}

/// Bad input is an error naming what was wrong, and leaves the state unchanged; a good run after
/// a replaced state buffer re-captures the graph and sees the new buffer.
#[test]
fn bad_input_is_an_error_and_leaves_state_unchanged() {
    let _serial = serial();
    let Some(cuda) = backend("bad_input_is_an_error_and_leaves_state_unchanged") else {
        return;
    };
    let b = GraphBuilder::new();
    let x = b.input("x", &[2, 3], DType::F32);
    let s = b.state("s", &[2, 3], DType::F32);
    let y = Tensor::apply(Op::Assign { name: "s".into() }, &[s + x]);
    let plan = Plan::compile(&b.finish(&[y]).unwrap()).unwrap();
    let mut exe = cuda.compile(&plan).unwrap();
    let init: StateMap<HostTensor> = [(
        "s".to_string(),
        HostTensor::f32(&[2, 3], vec![1.0; 6]).unwrap(),
    )]
    .into();
    let mut bufs = upload(&cuda, &init);
    let x = HostTensor::f32(&[2, 3], vec![0.5; 6]).unwrap();

    let wrong_shape = HostTensor::zeros(&[7], DType::F32).unwrap();
    let e = cuda
        .run(&mut exe, &mut bufs, &[&wrong_shape])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"x\"") && e.contains("f32[2,3]") && e.contains("[7]"),
        "{e}"
    );
    let wrong_dtype = x.cast(DType::F64).unwrap();
    let e = cuda
        .run(&mut exe, &mut bufs, &[&wrong_dtype])
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"x\"") && e.contains("f64"), "{e}");
    assert_eq!(download(&cuda, &bufs), init);

    let mut empty: StateMap<CudaBuffer> = StateMap::new();
    let e = cuda
        .run(&mut exe, &mut empty, &[&x])
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"s\"") && e.contains("missing"), "{e}");

    for k in 1..=3 {
        cuda.run(&mut exe, &mut bufs, &[&x]).unwrap();
        assert_eq!(
            download(&cuda, &bufs)["s"].to_f64(),
            vec![1.0 + 0.5 * k as f64; 6]
        );
    }
    assert!(exe.is_captured());
    // an in-place write keeps the buffer (and the captured graph) and is seen by the next run
    let ten = HostTensor::f32(&[2, 3], vec![10.0; 6]).unwrap();
    cuda.write(bufs.get_mut("s").unwrap(), &ten).unwrap();
    cuda.run(&mut exe, &mut bufs, &[&x]).unwrap();
    assert_eq!(download(&cuda, &bufs)["s"].to_f64(), vec![10.5; 6]);
    cuda.run(&mut exe, &mut bufs, &[&x]).unwrap();
    assert_eq!(download(&cuda, &bufs)["s"].to_f64(), vec![11.0; 6]);
    // a new buffer for "s": the graph is captured again against it
    let mut fresh = upload(&cuda, &init);
    cuda.run(&mut exe, &mut fresh, &[&x]).unwrap();
    assert_eq!(download(&cuda, &fresh)["s"].to_f64(), vec![1.5; 6]);
    assert_eq!(download(&cuda, &bufs)["s"].to_f64(), vec![11.0; 6]);
}

#[test]
fn half_precision_is_refused() {
    let _serial = serial();
    let Some(cuda) = backend("half_precision_is_refused") else {
        return;
    };
    let b = GraphBuilder::new();
    let x = b.input("x", &[2], DType::F16);
    let plan = Plan::new(b.finish(&[x]).unwrap()).unwrap();
    let e = cuda.compile(&plan).unwrap_err();
    assert!(
        matches!(&e, Error::Backend { backend, msg } if backend == "cuda" && msg.contains("f16")),
        "{e}"
    );
}
