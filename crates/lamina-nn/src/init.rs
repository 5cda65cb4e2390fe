//! Parameter initialisers, with PyTorch's definitions, drawn deterministically on the host from
//! the model seed and the parameter's path (so adding a layer does not change the others' values).

use lamina_core::{numel, DType, HostData, HostTensor, Result};

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

/// SplitMix64's increment: draw `k` of a stream depends only on the start and `k`, so a large
/// parameter is drawn in chunks on several threads with the same values.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Values from this many on are drawn on several threads.
const PAR_VALUES: usize = 1 << 18;

/// SplitMix64 keyed by (seed, path): the stream each parameter's values come from.
#[derive(Clone)]
struct Stream(u64);

impl Stream {
    fn new(seed: u64, path: &str) -> Self {
        // FNV-1a of the path, mixed with the seed
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in path.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Stream(h ^ seed.wrapping_mul(GAMMA))
    }
    /// The stream after `k` more draws.
    fn skip(&self, k: u64) -> Stream {
        Stream(self.0.wrapping_add(k.wrapping_mul(GAMMA)))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
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

/// `n` values, value `i` made by `f` from the stream after `i · draws` draws of `s` (each value
/// takes `draws` draws), in chunks on several threads when there are many.
fn draw<T: Copy + Default + Send>(
    n: usize,
    s: &Stream,
    draws: u64,
    threads: usize,
    f: impl Fn(&mut Stream) -> T + Sync,
) -> Vec<T> {
    let mut out = vec![T::default(); n];
    let chunk = n.div_ceil(threads.max(1)).max(1);
    let fill = |c: usize, part: &mut [T]| {
        let mut st = s.skip((c * chunk) as u64 * draws);
        for v in part {
            *v = f(&mut st);
        }
    };
    if chunk >= n {
        fill(0, &mut out);
    } else {
        std::thread::scope(|sc| {
            for (c, part) in out.chunks_mut(chunk).enumerate() {
                let fill = &fill;
                sc.spawn(move || fill(c, part));
            }
        });
    }
    out
}

impl Init {
    /// The values of a parameter of `shape` at `path` for model seed `seed`.
    pub fn values(&self, shape: &[usize], seed: u64, path: &str) -> Vec<f64> {
        let n = numel(shape);
        let threads = if n >= PAR_VALUES {
            std::thread::available_parallelism().map_or(1, |t| t.get().min(16))
        } else {
            1
        };
        self.values_on(shape, seed, path, threads, |v| v)
    }

    /// The values converted by `cast` as they are drawn (an f32 parameter never holds all its
    /// values as f64 first: for a 4096×4096 weight that was 128 MB of extra memory to fault in).
    fn values_on<T: Copy + Default + Send>(
        &self,
        shape: &[usize],
        seed: u64,
        path: &str,
        threads: usize,
        cast: fn(f64) -> T,
    ) -> Vec<T> {
        let n = numel(shape);
        let s = Stream::new(seed, path);
        let (fan_in, fan_out) = fans(shape);
        let uniform = |b: f64| draw(n, &s, 1, threads, |s| cast((2.0 * s.unit() - 1.0) * b));
        // Box–Muller takes two draws per value
        let normal =
            |mean: f64, std: f64| draw(n, &s, 2, threads, |s| cast(mean + std * s.normal()));
        match *self {
            Init::Zeros => vec![cast(0.0); n],
            Init::Ones => vec![cast(1.0); n],
            Init::Constant(c) => vec![cast(c); n],
            Init::Uniform { lo, hi } => {
                draw(n, &s, 1, threads, |s| cast(lo + (hi - lo) * s.unit()))
            }
            Init::Normal { mean, std } => normal(mean, std),
            Init::KaimingUniform { a } => {
                let gain = (2.0 / (1.0 + a * a)).sqrt();
                uniform(gain * (3.0 / fan_in).sqrt())
            }
            Init::KaimingNormal { a } => {
                let std = (2.0 / (1.0 + a * a)).sqrt() / fan_in.sqrt();
                draw(n, &s, 2, threads, |s| cast(std * s.normal()))
            }
            Init::XavierUniform { gain } => uniform(gain * (6.0 / (fan_in + fan_out)).sqrt()),
            Init::XavierNormal { gain } => {
                let std = gain * (2.0 / (fan_in + fan_out)).sqrt();
                draw(n, &s, 2, threads, |s| cast(std * s.normal()))
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
        if dtype != DType::F32 {
            return HostTensor::from_f64(shape, dtype, &self.values(shape, seed, path));
        }
        let n = numel(shape);
        let threads = if n >= PAR_VALUES {
            std::thread::available_parallelism().map_or(1, |t| t.get().min(16))
        } else {
            1
        };
        let v = self.values_on(shape, seed, path, threads, |x| x as f32);
        HostTensor::new(shape, HostData::F32(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drawing in chunks on several threads gives bit for bit the values of one sequential
    /// stream, for every initialiser (uniform ones take one draw per value, normal ones two).
    #[test]
    fn chunked_draws_equal_the_sequential_stream() {
        let inits = [
            Init::Uniform { lo: -2.0, hi: 3.0 },
            Init::Normal {
                mean: 1.0,
                std: 0.5,
            },
            Init::KaimingUniform { a: 5f64.sqrt() },
            Init::KaimingNormal { a: 0.0 },
            Init::XavierUniform { gain: 1.0 },
            Init::XavierNormal { gain: 2.0 },
        ];
        for init in &inits {
            let shape = [37, 29];
            let one = init.values_on(&shape, 7, "layers.0.weight", 1, |v| v);
            // the first value of a sequential stream, written out: SplitMix64 after one draw
            if let Init::Uniform { lo, hi } = init {
                let mut s = Stream::new(7, "layers.0.weight");
                assert_eq!(one[0], lo + (hi - lo) * s.unit());
            }
            // an f32 tensor drawn directly holds the f64 values rounded to f32
            let direct = init
                .tensor(&shape, DType::F32, 7, "layers.0.weight")
                .unwrap();
            let via = HostTensor::from_f64(&shape, DType::F32, &one).unwrap();
            assert_eq!(direct.to_f64(), via.to_f64(), "{init:?} as f32");
            for threads in [2, 3, 7, 64] {
                let many = init.values_on(&shape, 7, "layers.0.weight", threads, |v| v);
                let same = one
                    .iter()
                    .zip(&many)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{init:?} on {threads} threads differs");
            }
        }
    }
}
