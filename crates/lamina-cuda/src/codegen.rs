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

/// How the 4 lanes of a group of 4 elements (starting at a multiple of 4) read a broadcast
/// operand: `Some(1)` four consecutive, 16-byte aligned values; `Some(0)` one value for all; `None`
/// neither (the innermost axis is not a multiple of 4 long, or a stride breaks the alignment).
fn broadcast_lanes(dims: &[(usize, usize)]) -> Option<usize> {
    let live: Vec<(usize, usize)> = dims.iter().copied().filter(|d| d.0 != 1).collect();
    let (&(size, stride), outer) = live.split_last()?;
    let aligned = outer.iter().all(|&(_, st)| st % 4 == 0);
    match stride {
        1 if size % 4 == 0 && aligned => Some(1),
        0 if size % 4 == 0 => Some(0),
        _ => None,
    }
}

/// The walk to a broadcast operand's offset `o{k}` for element `idx`.
fn broadcast_offset(s: &mut String, k: usize, idx: &str, dims: &[(usize, usize)]) {
    let _ = write!(s, "    long long t{k} = {idx}, o{k} = 0;");
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
}

/// The value of load `k` at element `i` (a broadcast first writes its offset `o{k}` to `s`).
fn load_at(s: &mut String, k: usize, load: &Load, ptr: &dyn Fn(usize) -> String) -> String {
    match load {
        Load::Literal(l) => l.clone(),
        Load::Dense { param } => format!("{}[i]", ptr(*param)),
        Load::Uniform { param } => format!("{}[0]", ptr(*param)),
        Load::Broadcast { param, dims } => {
            broadcast_offset(s, k, "i", dims);
            format!("{}[o{k}]", ptr(*param))
        }
    }
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
    /// Elements per thread per iteration: 4 (one 16-byte load or store per operand) when every
    /// operand the kernel touches in memory is a dense array of 4-byte elements, else 1.
    pub(crate) fn vector_width(&self) -> usize {
        let four = |ty: &str| matches!(ty, "float" | "int");
        let ok = self.params.iter().all(|(ty, _)| four(ty))
            && self.loads.iter().all(|(_, l)| match l {
                Load::Broadcast { dims, .. } => broadcast_lanes(dims).is_some(),
                _ => true,
            });
        if ok && !self.params.is_empty() {
            4
        } else {
            1
        }
    }

    /// The loads, member lines and stores for element `i` (the scalar loop's body), parameter `k`
    /// addressed as `ptr(k)`.
    fn scalar_body(&self, s: &mut String, ptr: &dyn Fn(usize) -> String) {
        for (k, (ty, load)) in self.loads.iter().enumerate() {
            let e = load_at(s, k, load, ptr);
            let _ = writeln!(s, "    const {ty} s{k} = {e};");
        }
        for l in &self.lines {
            let _ = writeln!(s, "    {l}");
        }
        for (param, v) in &self.stores {
            let _ = writeln!(s, "    {}[i] = {v};", ptr(*param));
        }
    }

    /// The 4-wide loop over `n / 4` groups of elements (when every pointer is 16-byte aligned;
    /// the scalar loop does the rest): each operand is read and each result written as one
    /// float4/int4, the member lines run once per lane.
    fn vector_loop(&self, s: &mut String) {
        let ptrs: Vec<String> = (0..self.params.len())
            .map(|k| format!("(unsigned long long)p{k}"))
            .collect();
        let _ = writeln!(
            s,
            "  const long long n4 = (({}) & 15ull) == 0 ? n / 4 : 0;",
            ptrs.join(" | ")
        );
        let _ = writeln!(
            s,
            "  for (long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x; q < n4; q += (long long)gridDim.x * blockDim.x) {{"
        );
        let vec = |ty: &str| if ty == "float" { "float4" } else { "int4" };
        let mut dense: Vec<usize> = Vec::new();
        for (_, l) in &self.loads {
            if let Load::Dense { param } = l {
                if !dense.contains(param) {
                    dense.push(*param);
                }
            }
        }
        for &p in &dense {
            let ty = vec(&self.params[p].0);
            let _ = writeln!(
                s,
                "    const {ty} a{p} = reinterpret_cast<const {ty}*>(p{p})[q];"
            );
        }
        for (k, (ty, l)) in self.loads.iter().enumerate() {
            if let Load::Broadcast { param, dims } = l {
                broadcast_offset(s, k, "q * 4", dims);
                if broadcast_lanes(dims) == Some(1) {
                    let v = vec(ty);
                    let _ = writeln!(
                        s,
                        "    const {v} b{k} = *reinterpret_cast<const {v}*>(p{param} + o{k});"
                    );
                } else {
                    let _ = writeln!(s, "    const {ty} b{k} = p{param}[o{k}];");
                }
            }
        }
        for (p, _) in &self.stores {
            let _ = writeln!(s, "    {} r{p};", vec(&self.params[*p].0));
        }
        for lane in ["x", "y", "z", "w"] {
            let _ = writeln!(s, "    {{");
            for (k, (ty, load)) in self.loads.iter().enumerate() {
                let e = match load {
                    Load::Literal(l) => l.clone(),
                    Load::Dense { param } => format!("a{param}.{lane}"),
                    Load::Uniform { param } => format!("p{param}[0]"),
                    Load::Broadcast { dims, .. } if broadcast_lanes(dims) == Some(1) => {
                        format!("b{k}.{lane}")
                    }
                    Load::Broadcast { .. } => format!("b{k}"),
                };
                let _ = writeln!(s, "      const {ty} s{k} = {e};");
            }
            for l in &self.lines {
                let _ = writeln!(s, "      {l}");
            }
            for (p, v) in &self.stores {
                let _ = writeln!(s, "      r{p}.{lane} = {v};");
            }
            let _ = writeln!(s, "    }}");
        }
        for (p, _) in &self.stores {
            let ty = vec(&self.params[*p].0);
            let _ = writeln!(s, "    reinterpret_cast<{ty}*>(p{p})[q] = r{p};");
        }
        let _ = writeln!(s, "  }}");
    }

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
        let start = if self.vector_width() == 4 {
            self.vector_loop(&mut s);
            "n4 * 4 + "
        } else {
            ""
        };
        s.push_str(&self.body(
            &format!("{start}(long long)blockIdx.x * blockDim.x + threadIdx.x"),
            "(long long)gridDim.x * blockDim.x",
            "n",
            &|k| format!("p{k}"),
        ));
        let _ = writeln!(s, "}}");
        s
    }

    /// [`Self::body`] with `u` elements per thread per iteration, every load of all `u` issued
    /// before the first store: a loop run by one block (a segment) waits for one memory round
    /// trip per iteration, so this waits `u` times less. A group that reads a parameter it also
    /// writes other than at the element itself keeps the plain loop (its order matters there).
    pub(crate) fn body_unrolled(
        &self,
        i0: &str,
        step: &str,
        n: &str,
        ptr: &dyn Fn(usize) -> String,
        u: usize,
    ) -> String {
        let written: Vec<usize> = self.stores.iter().map(|(p, _)| *p).collect();
        let in_place_only = self.loads.iter().all(|(_, l)| match l {
            Load::Literal(_) | Load::Dense { .. } => true,
            Load::Uniform { param } | Load::Broadcast { param, .. } => !written.contains(param),
        });
        if u <= 1 || !in_place_only {
            return self.body(i0, step, n, ptr);
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  for (long long ib = {i0}; ib < {n}; ib += {u}ll * {step}) {{"
        );
        for j in 0..u {
            let _ = writeln!(s, "    const long long i{j} = ib + {j}ll * {step};");
            for (k, (ty, load)) in self.loads.iter().enumerate() {
                if !matches!(load, Load::Literal(_)) {
                    let _ = writeln!(s, "    {ty} s{k}_{j} = ({ty})0;");
                }
            }
            let _ = writeln!(s, "    if (i{j} < {n}) {{\n    const long long i = i{j};");
            for (k, (_, load)) in self.loads.iter().enumerate() {
                if !matches!(load, Load::Literal(_)) {
                    let e = load_at(&mut s, k, load, ptr);
                    let _ = writeln!(s, "    s{k}_{j} = {e};");
                }
            }
            let _ = writeln!(s, "    }}");
        }
        for j in 0..u {
            let _ = writeln!(s, "    if (i{j} < {n}) {{\n    const long long i = i{j};");
            for (k, (ty, load)) in self.loads.iter().enumerate() {
                match load {
                    Load::Literal(l) => {
                        let _ = writeln!(s, "    const {ty} s{k} = {l};");
                    }
                    _ => {
                        let _ = writeln!(s, "    const {ty} s{k} = s{k}_{j};");
                    }
                }
            }
            for l in &self.lines {
                let _ = writeln!(s, "    {l}");
            }
            for (param, v) in &self.stores {
                let _ = writeln!(s, "    {}[i] = {v};", ptr(*param));
            }
            let _ = writeln!(s, "    }}");
        }
        let _ = writeln!(s, "  }}");
        s
    }

    /// The group's scalar loop: `i` from `i0` by `step` below `n`, parameter `k` read and written
    /// as the pointer expression `ptr(k)` (a segment or multi-tensor kernel embeds groups this way).
    pub(crate) fn body(
        &self,
        i0: &str,
        step: &str,
        n: &str,
        ptr: &dyn Fn(usize) -> String,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "  for (long long i = {i0}; i < {n}; i += {step}) {{");
        self.scalar_body(&mut s, ptr);
        let _ = writeln!(s, "  }}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(loads: Vec<(String, Load)>, ty: &str) -> FusedText {
        FusedText {
            name: "fused_0".into(),
            params: vec![(ty.into(), false), (ty.into(), false), (ty.into(), true)],
            loads,
            lines: vec![format!("const {ty} v5 = (s0 * s1) + s2;")],
            stores: vec![(2, "v5".into())],
        }
    }

    /// Dense 4-byte operands get the float4 loop (one vector load per pointer, the lines once per
    /// lane) in front of the scalar loop, which starts where it ends; a broadcast or an 8-byte
    /// operand keeps the scalar loop alone. (The values are checked on the GPU by the op table.)
    #[test]
    fn dense_four_byte_groups_are_vectorised() {
        let dense = vec![
            ("float".into(), Load::Dense { param: 0 }),
            ("float".into(), Load::Uniform { param: 1 }),
            ("float".into(), Load::Literal("1.0f".into())),
        ];
        let t = text(dense, "float");
        assert_eq!(t.vector_width(), 4);
        let src = t.source();
        for want in [
            "const long long n4 = (((unsigned long long)p0 | (unsigned long long)p1 | (unsigned long long)p2) & 15ull) == 0 ? n / 4 : 0;",
            "const float4 a0 = reinterpret_cast<const float4*>(p0)[q];",
            "const float s0 = a0.w;",
            "const float s1 = p1[0];",
            "r2.z = v5;",
            "reinterpret_cast<float4*>(p2)[q] = r2;",
            "for (long long i = n4 * 4 + (long long)blockIdx.x",
            "p2[i] = v5;",
        ] {
            assert!(src.contains(want), "missing {want:?} in\n{src}");
        }
        assert_eq!(src.matches("const float v5").count(), 5, "{src}");
        let bcast = broadcast_loads();
        let t = text(bcast, "float");
        assert_eq!(t.vector_width(), 4);
        let src = t.source();
        for want in [
            "long long t0 = q * 4, o0 = 0; o0 += (t0 % 4ll) * 1ll; t0 /= 4ll; t0 /= 2ll;",
            "const float4 b0 = *reinterpret_cast<const float4*>(p0 + o0);",
            "const float s0 = b0.y;",
        ] {
            assert!(src.contains(want), "missing {want:?} in\n{src}");
        }
        // one value per 4 lanes (a broadcast along the last axis), and an odd inner length
        let lanes = |dims: Vec<(usize, usize)>| broadcast_lanes(&dims);
        assert_eq!(lanes(vec![(3, 1), (8, 0)]), Some(0));
        assert_eq!(lanes(vec![(3, 6), (6, 1)]), None);
        assert_eq!(
            lanes(vec![(3, 2), (4, 1)]),
            None,
            "rows of 2 break the alignment"
        );
        assert_eq!(lanes(vec![(3, 8), (4, 1), (1, 0)]), Some(1));
        let wide = vec![
            ("double".into(), Load::Dense { param: 0 }),
            ("double".into(), Load::Dense { param: 1 }),
            ("double".into(), Load::Literal("1.0".into())),
        ];
        let t = text(wide, "double");
        assert_eq!(t.vector_width(), 1);
        assert!(!t.source().contains("n4"));
    }

    /// A broadcast row, a dense operand and a literal: the loads of the loop-shape tests.
    fn broadcast_loads() -> Vec<(String, Load)> {
        vec![
            (
                "float".into(),
                Load::Broadcast {
                    param: 0,
                    dims: vec![(2, 0), (4, 1)],
                },
            ),
            ("float".into(), Load::Dense { param: 1 }),
            ("float".into(), Load::Literal("1.0f".into())),
        ]
    }

    /// The unrolled loop of a segment issues all its loads before any store, and falls back to
    /// the plain loop when the group reads a parameter it writes through a broadcast; the text
    /// compiles (needs NVRTC only; the values are checked on the GPU by the merged tests).
    #[test]
    fn unrolled_bodies_load_before_they_store() {
        let loads = broadcast_loads();
        let t = text(loads, "float");
        let ptr = |k: usize| format!("p{k}");
        let body = t.body_unrolled("threadIdx.x", "blockDim.x", "n", &ptr, 4);
        let last_load = body.rfind("s1_3 = p1[i];").expect("fourth load");
        let first_store = body.find("p2[i] = v5;").expect("a store");
        assert!(last_load < first_store, "{body}");
        assert_eq!(body.matches("p2[i] = v5;").count(), 4, "{body}");
        // p2 written and read through a broadcast: element order matters, the plain loop stays
        let mut aliased = t;
        aliased.loads[0].1 = Load::Broadcast {
            param: 2,
            dims: vec![(2, 0), (4, 1)],
        };
        let plain = aliased.body_unrolled("threadIdx.x", "blockDim.x", "n", &ptr, 4);
        assert_eq!(plain, aliased.body("threadIdx.x", "blockDim.x", "n", &ptr));
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("NVRTC not found: compile skipped");
            return;
        }
        let src = format!(
            "{PRELUDE}extern \"C\" __global__ void probe(long long n, const float* p0, const float* p1, float* p2) {{\n{body}}}\n"
        );
        crate::dev::nvrtc_cubin(&src, crate::dev::nvrtc_opts())
            .expect("the unrolled loop compiles");
    }
}
