//! Test oracles shared by every backend's tests: closeness of results and JAX-style gradient
//! checks (random tangent and cotangent, f64 central differences).

use crate::run_graph;
use lamina_core::{grad, DType, Graph, GraphBuilder, HostTensor, Result, StateMap, Tensor};

/// A small deterministic generator (SplitMix64) for test data.
#[derive(Clone, Debug)]
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` elementwise (NaNs must match), with the same shape.
///
/// # Panics
/// With a message naming `what`, the first bad index and both values.
pub fn assert_close(got: &HostTensor, want: &HostTensor, rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_f64(), want.to_f64());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * b.abs();
        assert!(
            ok,
            "{what}: element {i} is {a}, expected {b} (rtol {rtol}, atol {atol})"
        );
    }
}

/// Result of a directional gradient check.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// `⟨∇L, t⟩` from autodiff.
    pub analytic: f64,
    /// `(L(x+εt) − L(x−εt)) / 2ε`.
    pub numeric: f64,
}

impl GradCheck {
    pub fn ok(&self, tol: f64) -> bool {
        (self.analytic - self.numeric).abs()
            <= tol * (1.0 + self.analytic.abs().max(self.numeric.abs()))
    }
}

fn weighted_loss(outs: &[Tensor], rng: &mut TestRng) -> Tensor {
    let mut loss: Option<Tensor> = None;
    for &y in outs {
        let y = y.cast(DType::F64);
        let ct = y.literal(&y.shape(), rng.vec(y.numel(), -1.0, 1.0));
        let term = (y * ct).sum(&[], false);
        loss = Some(match loss {
            None => term,
            Some(l) => l + term,
        });
    }
    loss.expect("at least one float output")
}

/// Checks the gradient of `graph` (f64, float inputs) in a random direction: the float outputs are
/// contracted with a random cotangent into a scalar `L`, and `⟨∇L, t⟩` is compared with central
/// differences. With `order == 2` the check runs on `L₂ = ⟨∇L, c⟩` instead (gradient of a gradient).
pub fn grad_check(
    graph: &Graph,
    inputs: &[HostTensor],
    state: &StateMap<HostTensor>,
    order: usize,
    seed: u64,
) -> Result<GradCheck> {
    let mut rng = TestRng::new(seed);
    let b = GraphBuilder::from_graph(Graph {
        nodes: graph.nodes.clone(),
        outputs: vec![],
    });
    let feeds = graph.inputs();
    let xs: Vec<Tensor> = feeds.iter().map(|&i| b.tensor(i)).collect();
    let float_x: Vec<Tensor> = xs
        .iter()
        .copied()
        .filter(|x| x.dtype().is_float())
        .collect();
    let outs: Vec<Tensor> = graph
        .outputs
        .iter()
        .map(|&o| b.tensor(o))
        .filter(|t| t.dtype().is_float())
        .collect();
    let mut loss = weighted_loss(&outs, &mut rng);
    if order == 2 {
        let g = grad(loss, &float_x)?;
        loss = weighted_loss(&g, &mut rng);
    }
    let grads = grad(loss, &float_x)?;
    let mut all = vec![loss];
    all.extend(grads.iter().copied());
    let g = b.finish(&all)?;
    let loss_only = Graph {
        nodes: g.nodes.clone(),
        outputs: vec![g.outputs[0]],
    };

    let tangents: Vec<Vec<f64>> = inputs
        .iter()
        .map(|t| {
            if t.dtype().is_float() {
                rng.vec(t.numel(), -1.0, 1.0)
            } else {
                vec![]
            }
        })
        .collect();
    let mut st = state.clone();
    let refs: Vec<&HostTensor> = inputs.iter().collect();
    let res = run_graph(&g, &refs, &mut st)?;
    let mut analytic = 0.0;
    let mut k = 0;
    for (t, x) in tangents.iter().zip(inputs) {
        if x.dtype().is_float() {
            analytic += res[1 + k]
                .to_f64()
                .iter()
                .zip(t)
                .map(|(a, b)| a * b)
                .sum::<f64>();
            k += 1;
        }
    }
    let eps = 1e-6;
    let shifted = |sign: f64| -> Result<f64> {
        let xs: Vec<HostTensor> = inputs
            .iter()
            .zip(&tangents)
            .map(|(x, t)| {
                if x.dtype().is_float() {
                    let v: Vec<f64> = x
                        .to_f64()
                        .iter()
                        .zip(t)
                        .map(|(a, b)| a + sign * eps * b)
                        .collect();
                    HostTensor::from_f64(x.shape(), x.dtype(), &v)
                } else {
                    Ok(x.clone())
                }
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&HostTensor> = xs.iter().collect();
        let mut st = state.clone();
        Ok(run_graph(&loss_only, &refs, &mut st)?[0].to_f64()[0])
    };
    let numeric = (shifted(1.0)? - shifted(-1.0)?) / (2.0 * eps);
    Ok(GradCheck { analytic, numeric })
}
