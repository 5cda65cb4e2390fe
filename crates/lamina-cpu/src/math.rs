//! Branch-free f32 `exp`, `ln` and `tanh` that the compiler vectorises (Cephes polynomials with
//! explicit range reduction), accurate to a few ulp: well inside the 1e-6 relative error the
//! backend allows against the f64 definition. Calls into libm would stop vectorisation, and the
//! transcendental ops would then dominate every fused kernel that uses them.

/// How `a·b + c` is evaluated: one fused multiply-add where the CPU has it (the AVX2 + FMA build of
/// the kernels), a multiply and an add elsewhere (a software `fma` call would be far slower).
pub(crate) trait MulAdd {
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

/// Hardware fused multiply-add.
pub(crate) struct WithFma;
/// Separate multiply and add.
pub(crate) struct NoFma;

impl MulAdd for WithFma {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for NoFma {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// 1.5·2²³: adding it rounds an f32 of magnitude below 2²² to an integer (ties to even).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `2^n` for `n` in `[-126, 127]`, built from the exponent bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// eˣ for f32.
#[inline(always)]
pub(crate) fn exp_f32<M: MulAdd>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part with few bits (exact products with n) and the rest.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Beyond these the result is inf / 0 anyway; clamping keeps the exponent arithmetic in range.
    // NaN passes through `clamp` and propagates through the arithmetic.
    let xc = x.clamp(-104.0, 89.0);
    let t = M::madd(xc, LOG2E, ROUND_MAGIC);
    let n = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let nf = t - ROUND_MAGIC;
    let r = M::madd(nf, -C2, M::madd(nf, -C1, xc));
    let z = r * r;
    let mut p = M::madd(1.987_569_1e-4, r, 1.398_2e-3);
    for c in [8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = M::madd(p, r, c);
    }
    let y = M::madd(p, z, r) + 1.0;
    // n is in [-150, 129]: scale in two halves so that neither factor over- or underflows.
    let n1 = n >> 1;
    y * pow2i(n1) * pow2i(n - n1)
}

/// ln x for f32 (NaN for negative x, -inf at 0, denormals handled).
#[inline(always)]
pub(crate) fn ln_f32<M: MulAdd>(x: f32) -> f32 {
    const SQRTHF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    // Denormals: scale into the normal range first.
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 8_388_608.0 } else { x };
    let bits = xs.to_bits() as i32;
    let mut e = ((bits >> 23) & 0xff) - 126;
    if tiny {
        e -= 23;
    }
    // mantissa in [0.5, 1)
    let m = f32::from_bits(((bits & 0x007f_ffff) | 0x3f00_0000) as u32);
    let small = m < SQRTHF;
    let ef = (if small { e - 1 } else { e }) as f32;
    let v = if small { m + m - 1.0 } else { m - 1.0 };
    let z = v * v;
    let mut p = M::madd(7.037_683_6e-2, v, -1.151_461e-1);
    for c in [
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        p = M::madd(p, v, c);
    }
    let mut y = p * v * z;
    y = M::madd(-2.121_944_4e-4, ef, y);
    y = M::madd(-0.5, z, y);
    let r = M::madd(0.693_359_4, ef, v + y);
    if x > 0.0 && x < f32::INFINITY {
        r
    } else if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        x
    } else {
        f32::NAN
    }
}

/// tanh x for f32.
#[inline(always)]
pub(crate) fn tanh_f32<M: MulAdd>(x: f32) -> f32 {
    let a = x.abs();
    // Near zero an odd polynomial keeps full relative precision.
    let z = x * x;
    let mut p = M::madd(-5.704_988_7e-3, z, 2.063_909e-2);
    for c in [-5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1] {
        p = M::madd(p, z, c);
    }
    let p = M::madd(p * z, x, x);
    // Elsewhere 1 − 2/(e^{2|x|} + 1), which saturates to 1 as the exponential overflows.
    let q = 1.0 - 2.0 / (exp_f32::<M>(a + a) + 1.0);
    let q = f32::from_bits(q.to_bits() | (x.to_bits() & 0x8000_0000));
    if a < 0.625 {
        p
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        name: &str,
        f: impl Fn(f32) -> f32,
        g: impl Fn(f64) -> f64,
        xs: impl Iterator<Item = f32>,
    ) {
        let mut worst = 0.0f64;
        for x in xs {
            let got = f(x) as f64;
            let want = g(x as f64) as f32 as f64;
            if want.is_nan() {
                assert!(got.is_nan(), "{name}({x}) = {got}, expected NaN");
                continue;
            }
            if want.is_infinite() || want == 0.0 {
                assert_eq!(got, want, "{name}({x})");
                continue;
            }
            // denormal results only need to be close in absolute terms
            let tol_ok = want.abs() < 1e-37 && (got - want).abs() < 1e-44;
            let rel = (got - want).abs() / want.abs();
            assert!(
                rel < 1e-6 || tol_ok,
                "{name}({x}) = {got}, expected {want} (rel {rel:e})"
            );
            if !tol_ok {
                worst = worst.max(rel);
            }
        }
        assert!(worst < 1e-6, "{name}: worst relative error {worst:e}");
    }

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_matches_f64() {
        exp_variant::<NoFma>();
        exp_variant::<WithFma>();
    }

    fn exp_variant<M: MulAdd>() {
        let exp_f32 = exp_f32::<M>;
        check("exp", exp_f32, f64::exp, grid(-110.0, 95.0, 200_000));
        check("exp", exp_f32, f64::exp, grid(-1.0, 1.0, 100_000));
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            88.72283,
            88.7229,
            -87.33655,
            -103.97,
        ];
        check("exp", exp_f32, f64::exp, special.into_iter());
    }

    #[test]
    fn ln_matches_f64() {
        ln_variant::<NoFma>();
        ln_variant::<WithFma>();
    }

    fn ln_variant<M: MulAdd>() {
        let ln_f32 = ln_f32::<M>;
        check("ln", ln_f32, f64::ln, grid(1e-3, 10.0, 200_000));
        check("ln", ln_f32, f64::ln, grid(0.9, 1.1, 100_000));
        check(
            "ln",
            ln_f32,
            f64::ln,
            (0..2000).map(|i| f32::from_bits(0x0000_1000 + i * 997)),
        );
        check(
            "ln",
            ln_f32,
            f64::ln,
            (0..2000).map(|i| f32::from_bits(0x3f00_0000 + i * 4097)),
        );
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            -1.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            1.0,
        ];
        check("ln", ln_f32, f64::ln, special.into_iter());
    }

    #[test]
    fn tanh_matches_f64() {
        tanh_variant::<NoFma>();
        tanh_variant::<WithFma>();
    }

    fn tanh_variant<M: MulAdd>() {
        let tanh_f32 = tanh_f32::<M>;
        check("tanh", tanh_f32, f64::tanh, grid(-12.0, 12.0, 200_000));
        check("tanh", tanh_f32, f64::tanh, grid(-0.7, 0.7, 100_000));
        check("tanh", tanh_f32, f64::tanh, grid(-1e-3, 1e-3, 10_000));
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            0.625,
            -0.625,
            100.0,
        ];
        check("tanh", tanh_f32, f64::tanh, special.into_iter());
    }
}
