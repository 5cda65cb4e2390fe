//! CUDA C for fused elementwise groups: one kernel per group, every member an expression with the
//! scalar semantics of `lamina_core::ops::elementwise::eval_scalar`, constants and broadcast
//! strides baked into the source (so equal plans give equal source and hit the module cache).

use crate::dev::cuda_err;
use lamina_core::{DType, Op, Result};
use std::fmt::Write;

/// Helpers every generated module starts with.
pub(crate) const PRELUDE: &str = r#"
__device__ __forceinline__ int lm_idiv(int a, int b) {
    if (b == 0) return 0;
    if (b == -1) return (int)(0u - (unsigned)a);
    return a / b;
}
__device__ __forceinline__ float lm_max(float a, float b) {
    if (a != a || b != b) return __int_as_float(0x7fc00000);
    return a < b ? b : a;
}
__device__ __forceinline__ double lm_max(double a, double b) {
    if (a != a || b != b) return __longlong_as_double(0x7ff8000000000000ll);
    return a < b ? b : a;
}
__device__ __forceinline__ int lm_max(int a, int b) { return a < b ? b : a; }
__device__ __forceinline__ int lm_f2i(double v) {
    if (v != v) return 0;
    if (v >= 2147483647.0) return 2147483647;
    if (v <= -2147483648.0) return (int)0x80000000;
    return (int)v;
}
"#;

/// The C type of a dtype's elements (bool is one byte).
pub(crate) fn c_type(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "float",
        DType::F64 => "double",
        DType::I32 => "int",
        DType::Bool => "unsigned char",
        // rejected when the plan is compiled (`exec::Builder::new`)
        DType::F16 | DType::BF16 => "void",
    }
}

/// A constant of dtype `dt` written so that the device sees exactly the value the host rounds to.
pub(crate) fn literal(v: f64, dt: DType) -> String {
    match dt {
        DType::F32 => format!("__int_as_float(0x{:08x})", (v as f32).to_bits()),
        DType::F64 => format!("__longlong_as_double(0x{:016x}ll)", v.to_bits()),
        DType::I32 => format!("((int)({}ll))", v as i64 as i32),
        DType::Bool => format!("((unsigned char){})", (v != 0.0) as u8),
        DType::F16 | DType::BF16 => String::new(),
    }
}

fn not_defined<T>(op: &Op, dt: DType, what: &str) -> Result<T> {
    Err(cuda_err(format!(
        "{} of {dt} operands is not {what}",
        op.name()
    )))
}

/// The expression of elementwise `op` over operand expressions `x`, whose first value operand has
/// dtype `a` (a `where`'s condition aside) and whose result has dtype `out`.
pub(crate) fn expr(op: &Op, a: DType, out: DType, x: &[String]) -> Result<String> {
    let float = matches!(a, DType::F32 | DType::F64);
    let math = |f32: &str, f64: &str| -> Result<String> {
        match a {
            DType::F32 => Ok(format!("{f32}({})", x[0])),
            DType::F64 => Ok(format!("{f64}({})", x[0])),
            _ => not_defined(op, a, "a float operation"),
        }
    };
    let arith = |sym: &str| -> Result<String> {
        match a {
            DType::F32 | DType::F64 => Ok(format!("({} {sym} {})", x[0], x[1])),
            // integer arithmetic wraps, like `round_to` of the exact result
            DType::I32 => Ok(format!(
                "((int)((unsigned)({}) {sym} (unsigned)({})))",
                x[0], x[1]
            )),
            DType::Bool | DType::F16 | DType::BF16 => not_defined(op, a, "defined"),
        }
    };
    Ok(match op {
        Op::Neg if a == DType::I32 => format!("((int)(0u - (unsigned)({})))", x[0]),
        Op::Neg if float => format!("(-{})", x[0]),
        Op::Neg => return not_defined(op, a, "defined"),
        Op::Recip => match a {
            DType::F32 => format!("(1.0f / {})", x[0]),
            DType::F64 => format!("(1.0 / {})", x[0]),
            _ => return not_defined(op, a, "a float operation"),
        },
        Op::Sqrt => math("sqrtf", "sqrt")?,
        Op::Exp => math("expf", "exp")?,
        Op::Log => math("logf", "log")?,
        Op::Tanh => math("tanhf", "tanh")?,
        Op::Erf => math("erff", "erf")?,
        Op::Add => arith("+")?,
        Op::Sub => arith("-")?,
        Op::Mul => arith("*")?,
        Op::Div if a == DType::I32 => format!("lm_idiv({}, {})", x[0], x[1]),
        Op::Div if float => format!("({} / {})", x[0], x[1]),
        Op::Max if a != DType::Bool => format!("lm_max({}, {})", x[0], x[1]),
        Op::Div | Op::Max => return not_defined(op, a, "defined"),
        Op::CmpLt if a == DType::Bool => return not_defined(op, a, "defined"),
        Op::CmpLt => format!("((unsigned char)({} < {}))", x[0], x[1]),
        Op::CmpEq => format!("((unsigned char)({} == {}))", x[0], x[1]),
        Op::Where => format!("(({}) != 0 ? {} : {})", x[0], x[1], x[2]),
        Op::Cast { .. } => match out {
            DType::F32 => format!("((float)({}))", x[0]),
            DType::F64 => format!("((double)({}))", x[0]),
            // float → int truncates toward zero and saturates, NaN → 0 (Rust's `as`)
            DType::I32 if float => format!("lm_f2i((double)({}))", x[0]),
            DType::I32 => format!("((int)({}))", x[0]),
            DType::Bool => format!("((unsigned char)(({}) != 0))", x[0]),
            DType::F16 | DType::BF16 => return not_defined(op, out, "supported"),
        },
        Op::Input { .. }
        | Op::State { .. }
        | Op::Const { .. }
        | Op::Iota { .. }
        | Op::RandomBits { .. }
        | Op::ReduceSum { .. }
        | Op::ReduceMax { .. }
        | Op::ArgMax { .. }
        | Op::Reshape { .. }
        | Op::Permute { .. }
        | Op::Expand { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::MatMul
        | Op::Conv(_)
        | Op::Gather { .. }
        | Op::ScatterAdd { .. }
        | Op::Assign { .. } => {
            return Err(cuda_err(format!(
                "{} is not an elementwise operation",
                op.name()
            )))
        }
    })
}

/// How a fused kernel reads one operand from outside the group.
#[derive(Clone, Debug)]
pub(crate) enum Load {
    /// A constant splat.
    Literal(String),
    /// `p[i]`.
    Dense { param: usize },
    /// `p[0]` (a broadcast of one element).
    Uniform { param: usize },
    /// `p[offset(i)]` with the broadcast walk `(size, stride)` per axis, outermost first.
    Broadcast {
        param: usize,
        dims: Vec<(usize, usize)>,
    },
}

/// One fused kernel's text. `params` are the C types of the pointer parameters in order (loads
/// first, then stores), `lines` the member computations.
pub(crate) struct FusedText {
    pub(crate) name: String,
    pub(crate) params: Vec<(String, bool)>,
    pub(crate) loads: Vec<(String, Load)>,
    pub(crate) lines: Vec<String>,
    pub(crate) stores: Vec<(usize, String)>,
}

impl FusedText {
    pub(crate) fn source(&self) -> String {
        let mut s = String::new();
        let params: Vec<String> = self
            .params
            .iter()
            .enumerate()
            .map(|(k, (ty, write))| format!("{}{ty}* p{k}", if *write { "" } else { "const " }))
            .collect();
        let _ = writeln!(
            s,
            "extern \"C\" __global__ void {}(long long n{}{}) {{",
            self.name,
            if params.is_empty() { "" } else { ", " },
            params.join(", ")
        );
        s.push_str(&self.body(
            "(long long)blockIdx.x * blockDim.x + threadIdx.x",
            "(long long)gridDim.x * blockDim.x",
            "n",
            &|k| format!("p{k}"),
        ));
        let _ = writeln!(s, "}}");
        s
    }

    /// The group's loop: `i` from `i0` by `step` below `n`, parameter `k` read and written as the
    /// pointer expression `ptr(k)` (a segment or multi-tensor kernel embeds groups this way).
    pub(crate) fn body(
        &self,
        i0: &str,
        step: &str,
        n: &str,
        ptr: &dyn Fn(usize) -> String,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "  for (long long i = {i0}; i < {n}; i += {step}) {{");
        for (k, (ty, load)) in self.loads.iter().enumerate() {
            let e = match load {
                Load::Literal(l) => l.clone(),
                Load::Dense { param } => format!("{}[i]", ptr(*param)),
                Load::Uniform { param } => format!("{}[0]", ptr(*param)),
                Load::Broadcast { param, dims } => {
                    let _ = write!(s, "    long long t{k} = i, o{k} = 0;");
                    for &(size, stride) in dims.iter().rev() {
                        if size == 1 {
                            continue;
                        }
                        if stride != 0 {
                            let _ = write!(s, " o{k} += (t{k} % {size}ll) * {stride}ll;");
                        }
                        let _ = write!(s, " t{k} /= {size}ll;");
                    }
                    let _ = writeln!(s);
                    format!("{}[o{k}]", ptr(*param))
                }
            };
            let _ = writeln!(s, "    const {ty} s{k} = {e};");
        }
        for l in &self.lines {
            let _ = writeln!(s, "    {l}");
        }
        for (param, v) in &self.stores {
            let _ = writeln!(s, "    {}[i] = {v};", ptr(*param));
        }
        let _ = writeln!(s, "  }}");
        s
    }
}
