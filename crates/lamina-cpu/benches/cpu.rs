//! CPU backend benchmarks, on 2 threads:
//!
//! 1. f32 matmul 512³ and 1024³: a compiled `x.matmul(w)` plan against calling `gemm::gemm`
//!    directly on the same buffers (throughput in FLOP/s: 2·n³ per product).
//! 2. chains of 5 elementwise primitives on 16M f32 elements, fused (one pass) against unfused
//!    (one kernel and one stored intermediate per primitive): a memory-bound arithmetic chain and
//!    one with tanh and exp.
//!
//! `cargo bench -p lamina-cpu --bench cpu -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lamina_core::passes::optimize;
use lamina_core::{Backend, DType, GraphBuilder, HostTensor, Plan, StateMap, Tensor};
use lamina_cpu::CpuBackend;

const THREADS: usize = 2;
/// Elements of the elementwise chains (16M).
const N: usize = 1 << 24;

/// Deterministic data in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn matmul(c: &mut Criterion) {
    let cpu = CpuBackend::with_threads(THREADS);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .expect("a 2-thread pool");
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(20);
    for n in [512usize, 1024] {
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        let x = HostTensor::f32(&[n, n], data(n * n, 1)).unwrap();
        let w = HostTensor::f32(&[n, n], data(n * n, 2)).unwrap();

        let b = GraphBuilder::new();
        let xs = b.input("x", &[n, n], DType::F32);
        let ws = b.input("w", &[n, n], DType::F32);
        let g = b.finish(&[xs.matmul(ws)]).unwrap();
        let plan = Plan::compile(&g).unwrap();
        let mut exe = cpu.compile(&plan).unwrap();
        let mut state = StateMap::new();
        group.bench_with_input(BenchmarkId::new("lamina", n), &n, |bch, _| {
            bch.iter(|| cpu.run(&mut exe, &mut state, &[&x, &w]).unwrap());
        });

        let (xa, wa) = (x.as_f32().unwrap(), w.as_f32().unwrap());
        let mut dst = vec![0.0f32; n * n];
        group.bench_with_input(BenchmarkId::new("gemm", n), &n, |bch, _| {
            bch.iter(|| {
                pool.install(|| {
                    // SAFETY: row-major n×n matrices, all three of n² elements; dst is not aliased.
                    unsafe {
                        gemm::gemm(
                            n,
                            n,
                            n,
                            dst.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            xa.as_ptr(),
                            1,
                            n as isize,
                            wa.as_ptr(),
                            1,
                            n as isize,
                            0.0f32,
                            1.0f32,
                            false,
                            false,
                            false,
                            gemm::Parallelism::Rayon(THREADS),
                        )
                    }
                })
            });
        });
    }
    group.finish();
}

/// One chain of 5 elementwise primitives on 16M f32, fused against unfused.
fn chain(c: &mut Criterion, name: &str, f: fn(Tensor) -> Tensor) {
    let cpu = CpuBackend::with_threads(THREADS);
    let b = GraphBuilder::new();
    let x = b.input("x", &[N], DType::F32);
    let g = optimize(&b.finish(&[f(x)]).unwrap(), false).unwrap();
    let prims = g
        .nodes
        .iter()
        .filter(|n| n.op.kind().is_elementwise())
        .count();
    assert_eq!(
        prims, 5,
        "the chain should be 5 elementwise primitives:\n{g}"
    );
    let xv = HostTensor::f32(&[N], data(N, 3)).unwrap();

    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));
    for (name, fuse) in [("fused", true), ("unfused", false)] {
        let plan = Plan::with_fusion(g.clone(), fuse).unwrap();
        assert_eq!(plan.kernel_count(), if fuse { 1 } else { 5 });
        let mut exe = cpu.compile(&plan).unwrap();
        let mut state = StateMap::new();
        group.bench_function(name, |bch| {
            bch.iter(|| cpu.run(&mut exe, &mut state, &[&xv]).unwrap())
        });
    }
    group.finish();
}

/// The chain as a training step uses it: read a persistent buffer, write the result back into it
/// (an optimizer update). Fused, the planner writes the group's result in place: one pass; unfused
/// it is 5 passes through arena intermediates.
fn chain_in_state(c: &mut Criterion) {
    use lamina_core::Op;
    let cpu = CpuBackend::with_threads(THREADS);
    let b = GraphBuilder::new();
    let x = b.state("x", &[N], DType::F32);
    // mul, add, max, mul, sub; maps [-1, 1] into itself, so repeated runs stay in normal floats
    let y = (x * 0.5 + 0.25).maximum(x) * 0.9 - 0.1;
    Tensor::apply(Op::Assign { name: "x".into() }, &[y])
        .check()
        .unwrap();
    // no outputs: returning the 64 MB buffer would copy it into a fresh vector every run
    let g = optimize(&b.finish(&[]).unwrap(), false).unwrap();
    let mut group = c.benchmark_group("chain5_in_state_16M_f32");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));
    for (name, fuse) in [("fused", true), ("unfused", false)] {
        let plan = Plan::with_fusion(g.clone(), fuse).unwrap();
        assert_eq!(
            plan.kernel_count(),
            if fuse { 1 } else { 5 },
            "{}",
            plan.text()
        );
        let mut exe = cpu.compile(&plan).unwrap();
        let mut state = StateMap::new();
        state.insert(
            "x".to_string(),
            cpu.upload(&HostTensor::f32(&[N], data(N, 4)).unwrap())
                .unwrap(),
        );
        group.bench_function(name, |bch| {
            bch.iter(|| cpu.run(&mut exe, &mut state, &[]).unwrap())
        });
    }
    group.finish();
}

fn elementwise_chains(c: &mut Criterion) {
    // mul, add, max, mul, sub: memory-bound, what fusion is for (the scalars fold into splats)
    chain(c, "chain5_arith_16M_f32", |x| {
        (x * 1.5 + 0.5).maximum(x) * x - 0.25
    });
    // mul, add, tanh, mul, exp: the transcendental functions make it largely compute-bound
    chain(c, "chain5_tanh_exp_16M_f32", |x| {
        ((x * 1.5 + 0.5).tanh() * x).exp()
    });
}

criterion_group!(benches, matmul, elementwise_chains, chain_in_state);
criterion_main!(benches);
