//! The primitive list: the one place where lamina's operations are enumerated.
//!
//! Everything a model does is a composition of these primitives. Each family's file under `ops/`
//! carries its shape rule and its vjp; backends match [`Op`] exhaustively, so adding a primitive
//! fails to compile wherever it is not implemented yet.

use crate::dtype::DType;
use std::sync::Arc;

/// A constant's value. Constants are stored as f64 (exact for every f32, i32 and bool value);
/// backends convert to the node's dtype.
#[derive(Clone, Debug)]
pub enum Literal {
    /// Every element has this value.
    Splat(f64),
    /// One value per element, row-major.
    Data(Arc<Vec<f64>>),
}

impl Literal {
    /// The value of element `i`.
    pub fn get(&self, i: usize) -> f64 {
        match self {
            Literal::Splat(v) => *v,
            Literal::Data(d) => d[i],
        }
    }
    /// The splat value, if every element is equal by construction.
    pub fn splat(&self) -> Option<f64> {
        match self {
            Literal::Splat(v) => Some(*v),
            Literal::Data(_) => None,
        }
    }
}

impl PartialEq for Literal {
    // Bitwise, so that CSE never merges 0.0 with -0.0 or drops a NaN constant.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Literal::Splat(a), Literal::Splat(b)) => a.to_bits() == b.to_bits(),
            (Literal::Data(a), Literal::Data(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.to_bits() == y.to_bits())
            }
            _ => false,
        }
    }
}

/// Parameters of the 2-D convolution primitive (NCHW input, OIHW weight), a cross-correlation as
/// in PyTorch. Padding may be negative (it then crops).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvParams {
    pub stride: [usize; 2],
    /// `(low, high)` padding of each spatial axis.
    pub padding: [(i64, i64); 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    /// Which of the convolution's three linear maps the node computes.
    pub kind: ConvKind,
}

/// The three maps of one convolution geometry. `y = conv(x, w)` is bilinear, and its two partial
/// derivatives are the other two kinds, so the family is closed under vjp and a backend can run
/// each as one gemm per image (plus im2col or col2im) instead of convolving zero-dilated
/// cotangents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvKind {
    /// Operands `(x [N,C,H,W], w [O,C/groups,KH,KW])`, result `y [N,O,HO,WO]`.
    #[default]
    Forward,
    /// The input gradient (a transposed convolution): operands `(dy [N,O,HO,WO], w)`, result
    /// `dx [N,C,H,W]` with `[H, W]` given, `dx[n,c,i] = Σ dy[n,o,p]·w[o,c,k]` over the
    /// `(o, p, k)` whose window position reads `i`.
    InputGrad {
        /// `[H, W]` of the input (a strided convolution's output size does not determine it).
        input_hw: [usize; 2],
    },
    /// The kernel gradient: operands `(x, dy)`, result `dw [O,C/groups,KH,KW]` with `[KH, KW]`
    /// given, `dw[o,c,k] = Σ dy[n,o,p]·x[n,c,pos(p,k)]` over images and output positions.
    KernelGrad {
        /// `[KH, KW]` of the kernel.
        kernel_hw: [usize; 2],
    },
}

/// One primitive operation. Attributes that determine the result type (a reshape's target shape,
/// a cast's dtype) live in the op, so the shape rule is a pure function of the op and its operands.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // --- sources (ops/source.rs) ---
    /// Data fed to each run of an executable.
    Input {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
    },
    /// Read of a persistent buffer (parameters, optimizer moments, statistics, counters).
    State {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
    },
    Const {
        value: Literal,
        shape: Vec<usize>,
        dtype: DType,
    },
    /// Element index along `axis`.
    Iota {
        shape: Vec<usize>,
        axis: usize,
        dtype: DType,
    },
    /// Philox-4x32-10 random bits as i32; operand: an i32 `[2]` key `(seed, step)`.
    /// `stream` separates the draws of different ops (see `rng.rs`).
    RandomBits {
        shape: Vec<usize>,
        stream: u32,
    },
    // --- unary elementwise (ops/elementwise.rs) ---
    Neg,
    Recip,
    Sqrt,
    Exp,
    Log,
    Tanh,
    Erf,
    // --- binary elementwise, equal shapes and dtypes ---
    Add,
    Sub,
    Mul,
    Div,
    Max,
    CmpLt,
    CmpEq,
    /// `where(cond, a, b)`.
    Where,
    Cast {
        to: DType,
    },
    // --- reductions, keeping reduced axes as size 1 (ops/reduce.rs) ---
    ReduceSum {
        axes: Vec<usize>,
    },
    ReduceMax {
        axes: Vec<usize>,
    },
    /// Index of the first maximum along `axis`, as i32.
    ArgMax {
        axis: usize,
    },
    // --- movement (ops/movement.rs) ---
    Reshape {
        shape: Vec<usize>,
    },
    Permute {
        perm: Vec<usize>,
    },
    /// Broadcast size-1 axes to `shape` (same rank).
    Expand {
        shape: Vec<usize>,
    },
    /// Strided slice `start..limit` step `stride` on every axis.
    Slice {
        start: Vec<usize>,
        limit: Vec<usize>,
        stride: Vec<usize>,
    },
    /// Edge and interior padding with a constant value.
    Pad {
        lo: Vec<usize>,
        hi: Vec<usize>,
        interior: Vec<usize>,
        value: f64,
    },
    // --- linear algebra (ops/linalg.rs) ---
    /// Batched `[..., M, K] x [..., K, N]` with equal batch dims.
    MatMul,
    Conv(ConvParams),
    // --- indexing (ops/index.rs) ---
    /// `take(x, idx, axis)`: out shape = x[..axis] ++ idx ++ x[axis+1..]. Out-of-range indices read 0.
    Gather {
        axis: usize,
    },
    /// Transpose of Gather: adds `updates` into zeros of size `dim_size` along `axis`.
    ScatterAdd {
        axis: usize,
        dim_size: usize,
    },
    // --- state (ops/state.rs) ---
    /// Writes its operand into the persistent buffer `name` after every reader of that buffer ran.
    Assign {
        name: String,
    },
}

/// The kind of an [`Op`], without attributes: used by tables that must cover every primitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Input,
    State,
    Const,
    Iota,
    RandomBits,
    Neg,
    Recip,
    Sqrt,
    Exp,
    Log,
    Tanh,
    Erf,
    Add,
    Sub,
    Mul,
    Div,
    Max,
    CmpLt,
    CmpEq,
    Where,
    Cast,
    ReduceSum,
    ReduceMax,
    ArgMax,
    Reshape,
    Permute,
    Expand,
    Slice,
    Pad,
    MatMul,
    Conv,
    Gather,
    ScatterAdd,
    Assign,
}

impl OpKind {
    /// Every primitive. The design caps this list at 36.
    pub const ALL: [OpKind; 34] = [
        OpKind::Input,
        OpKind::State,
        OpKind::Const,
        OpKind::Iota,
        OpKind::RandomBits,
        OpKind::Neg,
        OpKind::Recip,
        OpKind::Sqrt,
        OpKind::Exp,
        OpKind::Log,
        OpKind::Tanh,
        OpKind::Erf,
        OpKind::Add,
        OpKind::Sub,
        OpKind::Mul,
        OpKind::Div,
        OpKind::Max,
        OpKind::CmpLt,
        OpKind::CmpEq,
        OpKind::Where,
        OpKind::Cast,
        OpKind::ReduceSum,
        OpKind::ReduceMax,
        OpKind::ArgMax,
        OpKind::Reshape,
        OpKind::Permute,
        OpKind::Expand,
        OpKind::Slice,
        OpKind::Pad,
        OpKind::MatMul,
        OpKind::Conv,
        OpKind::Gather,
        OpKind::ScatterAdd,
        OpKind::Assign,
    ];

    /// Lower-case name used by the printer.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Input => "input",
            OpKind::State => "state",
            OpKind::Const => "const",
            OpKind::Iota => "iota",
            OpKind::RandomBits => "random_bits",
            OpKind::Neg => "neg",
            OpKind::Recip => "recip",
            OpKind::Sqrt => "sqrt",
            OpKind::Exp => "exp",
            OpKind::Log => "log",
            OpKind::Tanh => "tanh",
            OpKind::Erf => "erf",
            OpKind::Add => "add",
            OpKind::Sub => "sub",
            OpKind::Mul => "mul",
            OpKind::Div => "div",
            OpKind::Max => "max",
            OpKind::CmpLt => "lt",
            OpKind::CmpEq => "eq",
            OpKind::Where => "where",
            OpKind::Cast => "cast",
            OpKind::ReduceSum => "reduce_sum",
            OpKind::ReduceMax => "reduce_max",
            OpKind::ArgMax => "argmax",
            OpKind::Reshape => "reshape",
            OpKind::Permute => "permute",
            OpKind::Expand => "expand",
            OpKind::Slice => "slice",
            OpKind::Pad => "pad",
            OpKind::MatMul => "matmul",
            OpKind::Conv => "conv",
            OpKind::Gather => "gather",
            OpKind::ScatterAdd => "scatter_add",
            OpKind::Assign => "assign",
        }
    }

    /// Elementwise primitives: the ones a fusion group may contain.
    pub fn is_elementwise(self) -> bool {
        matches!(
            self,
            OpKind::Neg
                | OpKind::Recip
                | OpKind::Sqrt
                | OpKind::Exp
                | OpKind::Log
                | OpKind::Tanh
                | OpKind::Erf
                | OpKind::Add
                | OpKind::Sub
                | OpKind::Mul
                | OpKind::Div
                | OpKind::Max
                | OpKind::CmpLt
                | OpKind::CmpEq
                | OpKind::Where
                | OpKind::Cast
        )
    }
}

impl Op {
    /// True for a Permute that swaps the last two axes and keeps the others (a batched
    /// transpose, which a matmul can read through a flag instead of running it).
    pub fn swaps_last_two_axes(&self) -> bool {
        let Op::Permute { perm } = self else {
            return false;
        };
        let r = perm.len();
        r >= 2
            && perm[r - 2] == r - 1
            && perm[r - 1] == r - 2
            && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p)
    }

    pub fn kind(&self) -> OpKind {
        match self {
            Op::Input { .. } => OpKind::Input,
            Op::State { .. } => OpKind::State,
            Op::Const { .. } => OpKind::Const,
            Op::Iota { .. } => OpKind::Iota,
            Op::RandomBits { .. } => OpKind::RandomBits,
            Op::Neg => OpKind::Neg,
            Op::Recip => OpKind::Recip,
            Op::Sqrt => OpKind::Sqrt,
            Op::Exp => OpKind::Exp,
            Op::Log => OpKind::Log,
            Op::Tanh => OpKind::Tanh,
            Op::Erf => OpKind::Erf,
            Op::Add => OpKind::Add,
            Op::Sub => OpKind::Sub,
            Op::Mul => OpKind::Mul,
            Op::Div => OpKind::Div,
            Op::Max => OpKind::Max,
            Op::CmpLt => OpKind::CmpLt,
            Op::CmpEq => OpKind::CmpEq,
            Op::Where => OpKind::Where,
            Op::Cast { .. } => OpKind::Cast,
            Op::ReduceSum { .. } => OpKind::ReduceSum,
            Op::ReduceMax { .. } => OpKind::ReduceMax,
            Op::ArgMax { .. } => OpKind::ArgMax,
            Op::Reshape { .. } => OpKind::Reshape,
            Op::Permute { .. } => OpKind::Permute,
            Op::Expand { .. } => OpKind::Expand,
            Op::Slice { .. } => OpKind::Slice,
            Op::Pad { .. } => OpKind::Pad,
            Op::MatMul => OpKind::MatMul,
            Op::Conv(_) => OpKind::Conv,
            Op::Gather { .. } => OpKind::Gather,
            Op::ScatterAdd { .. } => OpKind::ScatterAdd,
            Op::Assign { .. } => OpKind::Assign,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// True when evaluating the op has an effect beyond its result (DCE keeps it, CSE never merges it).
    pub fn has_effect(&self) -> bool {
        matches!(self, Op::Assign { .. })
    }

    /// True when two nodes with equal op and operands always compute equal values.
    pub fn is_pure(&self) -> bool {
        // Inputs and states are identified by name, so two reads of the same name are equal too;
        // RandomBits is a function of its key and stream (counter-based RNG).
        !self.has_effect()
    }
}
