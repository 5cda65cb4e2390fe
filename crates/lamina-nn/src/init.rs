//! Parameter initialisers, with PyTorch's definitions, drawn deterministically on the host from
//! the model seed and the parameter's path (so adding a layer does not change the others' values).

use lamina_core::{numel, DType, HostTensor, Result};

/// How a parameter or buffer starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Constant(f64),
    /// `U(lo, hi)`.
    Uniform {
        lo: f64,
        hi: f64,
    },
    /// `N(mean, std²)`.
    Normal {
        mean: f64,
        std: f64,
    },
    /// PyTorch `kaiming_uniform_(a, mode='fan_in', nonlinearity='leaky_relu')`:
    /// `U(±gain·√(3/fan_in))` with `gain = √(2/(1+a²))`. `a = √5` is nn.Linear's and nn.Conv2d's default.
    KaimingUniform {
        a: f64,
    },
    /// PyTorch `kaiming_normal_(a, mode='fan_in')`: `N(0, gain²/fan_in)`.
    KaimingNormal {
        a: f64,
    },
    /// PyTorch `xavier_uniform_(gain)`: `U(±gain·√(6/(fan_in+fan_out)))`.
    XavierUniform {
        gain: f64,
    },
    /// PyTorch `xavier_normal_(gain)`: `N(0, gain²·2/(fan_in+fan_out))`.
    XavierNormal {
        gain: f64,
    },
}

/// `(fan_in, fan_out)` of a weight as PyTorch computes it: `[out, in, k…]`.
pub fn fans(shape: &[usize]) -> (f64, f64) {
    match shape.len() {
        0 => (1.0, 1.0),
        1 => (shape[0] as f64, shape[0] as f64),
        _ => {
            let rf: usize = shape[2..].iter().product();
            ((shape[1] * rf) as f64, (shape[0] * rf) as f64)
        }
    }
}

/// SplitMix64 keyed by (seed, path): the stream each parameter's values come from.
struct Stream(u64);

impl Stream {
    fn new(seed: u64, path: &str) -> Self {
        // FNV-1a of the path, mixed with the seed
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in path.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Stream(h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

impl Init {
    /// The values of a parameter of `shape` at `path` for model seed `seed`.
    pub fn values(&self, shape: &[usize], seed: u64, path: &str) -> Vec<f64> {
        let n = numel(shape);
        let mut s = Stream::new(seed, path);
        let (fan_in, fan_out) = fans(shape);
        let uniform = |s: &mut Stream, b: f64| {
            (0..n)
                .map(|_| (2.0 * s.unit() - 1.0) * b)
                .collect::<Vec<_>>()
        };
        match *self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Constant(c) => vec![c; n],
            Init::Uniform { lo, hi } => (0..n).map(|_| lo + (hi - lo) * s.unit()).collect(),
            Init::Normal { mean, std } => (0..n).map(|_| mean + std * s.normal()).collect(),
            Init::KaimingUniform { a } => {
                let gain = (2.0 / (1.0 + a * a)).sqrt();
                uniform(&mut s, gain * (3.0 / fan_in).sqrt())
            }
            Init::KaimingNormal { a } => {
                let std = (2.0 / (1.0 + a * a)).sqrt() / fan_in.sqrt();
                (0..n).map(|_| std * s.normal()).collect()
            }
            Init::XavierUniform { gain } => {
                uniform(&mut s, gain * (6.0 / (fan_in + fan_out)).sqrt())
            }
            Init::XavierNormal { gain } => {
                let std = gain * (2.0 / (fan_in + fan_out)).sqrt();
                (0..n).map(|_| std * s.normal()).collect()
            }
        }
    }

    /// The initial tensor of a parameter.
    pub fn tensor(
        &self,
        shape: &[usize],
        dtype: DType,
        seed: u64,
        path: &str,
    ) -> Result<HostTensor> {
        HostTensor::from_f64(shape, dtype, &self.values(shape, seed, path))
    }
}
