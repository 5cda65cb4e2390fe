//! The op table: one or more small graphs per primitive (and a few compositions), with inputs.
//! Every backend's test runs every row against this interpreter; `lamina-ref`'s own test checks
//! every row's gradient. A meta-test fails when a primitive has no row.

use crate::check::TestRng;
use lamina_core::{
    ConvKind, ConvParams, DType, Graph, GraphBuilder, HostTensor, Op, OpKind, StateMap, Tensor,
};

/// One row of the op table.
#[derive(Clone, Debug)]
pub struct OpCase {
    pub name: String,
    /// The primitive this row is about.
    pub kind: OpKind,
    pub graph: Graph,
    /// Fed inputs, in the graph's feed order.
    pub inputs: Vec<HostTensor>,
    /// Persistent buffers the graph reads or writes.
    pub state: StateMap<HostTensor>,
    /// Whether a first-order gradient check applies (float inputs, smooth away from ties).
    pub grad: bool,
    /// Whether a gradient-of-gradient check applies too.
    pub grad2: bool,
}

/// Builds one row: declares inputs with data, remembers them in feed order.
pub struct CaseBuilder {
    b: GraphBuilder,
    dtype: DType,
    rng: TestRng,
    inputs: Vec<HostTensor>,
    state: StateMap<HostTensor>,
}

impl CaseBuilder {
    pub fn new(dtype: DType, seed: u64) -> Self {
        CaseBuilder {
            b: GraphBuilder::new(),
            dtype,
            rng: TestRng::new(seed),
            inputs: vec![],
            state: StateMap::new(),
        }
    }
    pub fn builder(&self) -> &GraphBuilder {
        &self.b
    }
    pub fn rng(&mut self) -> &mut TestRng {
        &mut self.rng
    }
    /// A float input of the table's dtype with values uniform in `[lo, hi)`.
    pub fn x(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let v = self.rng.vec(lamina_core::numel(shape), lo, hi);
        self.values(shape, v, self.dtype)
    }
    /// An input with the given values and dtype.
    pub fn values(&mut self, shape: &[usize], v: Vec<f64>, dtype: DType) -> Tensor {
        let t = HostTensor::from_f64(shape, dtype, &v).expect("valid case data");
        let name = format!("x{}", self.inputs.len());
        self.inputs.push(t);
        self.b.input(&name, shape, dtype)
    }
    /// A persistent buffer of the table's dtype.
    pub fn state(&mut self, name: &str, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let v = self.rng.vec(lamina_core::numel(shape), lo, hi);
        self.state.insert(
            name.into(),
            HostTensor::from_f64(shape, self.dtype, &v).expect("valid case data"),
        );
        self.b.state(name, shape, self.dtype)
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn finish(
        self,
        name: &str,
        kind: OpKind,
        outs: &[Tensor],
        grad: bool,
        grad2: bool,
    ) -> OpCase {
        let graph = self
            .b
            .finish(outs)
            .unwrap_or_else(|e| panic!("op table row {name}: {e}"));
        OpCase {
            name: name.into(),
            kind,
            graph,
            inputs: self.inputs,
            state: self.state,
            grad,
            grad2,
        }
    }
}

type Row = (
    &'static str,
    OpKind,
    bool,
    bool,
    fn(&mut CaseBuilder) -> Vec<Tensor>,
);

fn conv(
    x: Tensor,
    w: Tensor,
    stride: [usize; 2],
    padding: [(i64, i64); 2],
    dilation: [usize; 2],
    groups: usize,
) -> Tensor {
    conv_kind(x, w, stride, padding, dilation, groups, ConvKind::Forward)
}

/// A Conv node of any kind (operands as `ConvKind` documents).
fn conv_kind(
    a: Tensor,
    b: Tensor,
    stride: [usize; 2],
    padding: [(i64, i64); 2],
    dilation: [usize; 2],
    groups: usize,
    kind: ConvKind,
) -> Tensor {
    a.conv(
        b,
        &ConvParams {
            stride,
            padding,
            dilation,
            groups,
            kind,
        },
    )
}

fn rows() -> Vec<Row> {
    use OpKind as K;
    vec![
        ("input", K::Input, true, true, |c| {
            vec![c.x(&[2, 3], -1.0, 1.0)]
        }),
        ("state", K::State, true, true, |c| {
            let s = c.state("s", &[2, 3], -1.0, 1.0);
            vec![s * c.x(&[2, 3], -1.0, 1.0)]
        }),
        ("assign", K::Assign, false, false, |c| {
            let s = c.state("s", &[2, 3], -1.0, 1.0);
            let x = c.x(&[2, 3], -1.0, 1.0);
            vec![
                Tensor::apply(Op::Assign { name: "s".into() }, &[s * 0.5 + x]),
                s + 1.0,
            ]
        }),
        (
            "assign_value_read_with_old_state",
            K::Assign,
            false,
            false,
            |c| {
                // the new value and a later read of the old one sit in one fused group: the planner
                // must not write the new value into the buffer before that read
                let s = c.state("s", &[2, 3], -1.0, 1.0);
                let y = s * 2.0 + c.x(&[2, 3], -1.0, 1.0);
                let a = Tensor::apply(Op::Assign { name: "s".into() }, &[y]);
                vec![(s + 1.0) * y, a]
            },
        ),
        ("const", K::Const, true, true, |c| {
            let x = c.x(&[2, 3], -1.0, 1.0);
            vec![x * x.literal(&[2, 3], vec![1.0, -2.0, 0.5, 3.0, 0.25, -1.5])]
        }),
        ("iota", K::Iota, true, true, |c| {
            let x = c.x(&[3, 4], -1.0, 1.0);
            vec![x * c.builder().iota(&[3, 4], 1, c.dtype())]
        }),
        ("random_bits", K::RandomBits, false, false, |c| {
            let key = c.values(&[2], vec![7.0, 3.0], DType::I32);
            vec![key.random_bits(&[3, 5], 11), key.random_bits(&[7], 12)]
        }),
        ("neg", K::Neg, true, true, |c| {
            vec![-c.x(&[2, 3], -1.0, 1.0)]
        }),
        ("recip", K::Recip, true, true, |c| {
            vec![c.x(&[2, 3], 0.5, 2.0).recip()]
        }),
        ("sqrt", K::Sqrt, true, true, |c| {
            vec![c.x(&[2, 3], 0.5, 2.0).sqrt()]
        }),
        ("exp", K::Exp, true, true, |c| {
            vec![c.x(&[2, 3], -1.0, 1.0).exp()]
        }),
        ("log", K::Log, true, true, |c| {
            vec![c.x(&[2, 3], 0.5, 2.0).log()]
        }),
        ("tanh", K::Tanh, true, true, |c| {
            vec![c.x(&[2, 3], -2.0, 2.0).tanh()]
        }),
        ("erf", K::Erf, true, true, |c| {
            vec![c.x(&[2, 3], -2.0, 2.0).erf()]
        }),
        ("add", K::Add, true, true, |c| {
            vec![c.x(&[2, 3], -1.0, 1.0) + c.x(&[2, 3], -1.0, 1.0)]
        }),
        ("add_broadcast", K::Add, true, true, |c| {
            vec![c.x(&[2, 3], -1.0, 1.0) + c.x(&[3], -1.0, 1.0) + c.x(&[2, 1], -1.0, 1.0)]
        }),
        ("sub", K::Sub, true, true, |c| {
            vec![c.x(&[2, 3], -1.0, 1.0) - c.x(&[2, 3], -1.0, 1.0)]
        }),
        ("mul", K::Mul, true, true, |c| {
            vec![c.x(&[2, 3], -1.0, 1.0) * c.x(&[2, 3], -1.0, 1.0)]
        }),
        ("div", K::Div, true, true, |c| {
            vec![c.x(&[2, 3], -1.0, 1.0) / c.x(&[2, 3], 0.5, 2.0)]
        }),
        ("max", K::Max, true, false, |c| {
            // away from ties: b differs from a by at least 0.1
            let a: Vec<f64> = c.rng().vec(6, -1.0, 1.0);
            let b: Vec<f64> = a
                .iter()
                .enumerate()
                .map(|(i, v)| v + if i % 2 == 0 { 0.3 } else { -0.2 })
                .collect();
            let d = c.dtype();
            vec![c.values(&[2, 3], a, d).maximum(c.values(&[2, 3], b, d))]
        }),
        ("lt", K::CmpLt, false, false, |c| {
            vec![c.x(&[2, 3], -1.0, 1.0).lt(c.x(&[2, 3], -1.0, 1.0))]
        }),
        ("eq", K::CmpEq, false, false, |c| {
            let d = c.dtype();
            let a = c.values(&[2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.5, 0.0], d);
            vec![a.eq(c.values(&[2, 3], vec![1.0, 2.5, 3.0, 1.0, 0.5, -0.0], d))]
        }),
        ("where", K::Where, true, true, |c| {
            let cond = c.x(&[2, 3], -1.0, 1.0).lt(c.x(&[2, 3], -1.0, 1.0));
            vec![cond.where_(c.x(&[2, 3], -1.0, 1.0), c.x(&[2, 3], -1.0, 1.0))]
        }),
        ("cast_float", K::Cast, true, true, |c| {
            let other = if c.dtype() == DType::F64 {
                DType::F32
            } else {
                DType::F64
            };
            vec![c.x(&[2, 3], -1.0, 1.0).cast(other)]
        }),
        ("cast_int_bool", K::Cast, false, false, |c| {
            let x = c
                .values(&[2, 3], vec![-2.7, -0.5, 0.0, 0.4, 1.9, 3.5], DType::F64)
                .cast(c.dtype());
            vec![
                x.cast(DType::I32),
                x.cast(DType::Bool),
                x.cast(DType::I32).cast(c.dtype()),
                x.gt(0.0).cast(c.dtype()),
            ]
        }),
        ("reduce_sum_1", K::ReduceSum, true, true, |c| {
            vec![c.x(&[3, 4, 5], -1.0, 1.0).sum(&[1], false)]
        }),
        ("reduce_sum_02", K::ReduceSum, true, true, |c| {
            vec![c.x(&[3, 4, 5], -1.0, 1.0).sum(&[0, 2], true)]
        }),
        ("reduce_max", K::ReduceMax, true, false, |c| {
            vec![c.x(&[3, 4, 5], -1.0, 1.0).max(&[1], false)]
        }),
        ("reduce_max_all", K::ReduceMax, true, false, |c| {
            vec![c.x(&[3, 4], -1.0, 1.0).max(&[], false)]
        }),
        ("argmax", K::ArgMax, false, false, |c| {
            vec![c.x(&[3, 4, 5], -1.0, 1.0).argmax(1, false)]
        }),
        ("reshape", K::Reshape, true, true, |c| {
            vec![c.x(&[3, 4, 5], -1.0, 1.0).reshape(&[12, 5]) * 2.0]
        }),
        ("permute", K::Permute, true, true, |c| {
            vec![c.x(&[3, 4, 5], -1.0, 1.0).permute(&[2, 0, 1])]
        }),
        ("expand", K::Expand, true, true, |c| {
            vec![
                c.x(&[3, 1, 5], -1.0, 1.0).expand(&[3, 4, 5]),
                c.x(&[1, 4, 1], -1.0, 1.0).expand(&[3, 4, 5]),
            ]
        }),
        ("expand_materialized", K::Expand, true, true, |c| {
            let e = c.x(&[3, 1], -1.0, 1.0).expand(&[3, 4]);
            vec![e.matmul(c.x(&[4, 2], -1.0, 1.0)), e.exp()]
        }),
        ("slice", K::Slice, true, true, |c| {
            let x = c.x(&[4, 6, 5], -1.0, 1.0);
            vec![x.prim(Op::Slice {
                start: vec![1, 0, 1],
                limit: vec![3, 6, 5],
                stride: vec![1, 2, 3],
            })]
        }),
        ("pad", K::Pad, true, true, |c| {
            let x = c.x(&[2, 3, 2], -1.0, 1.0);
            vec![x.prim(Op::Pad {
                lo: vec![1, 0, 2],
                hi: vec![0, 2, 1],
                interior: vec![0, 1, 2],
                value: 0.5,
            })]
        }),
        ("matmul", K::MatMul, true, true, |c| {
            vec![c.x(&[4, 3], -1.0, 1.0).matmul(c.x(&[3, 5], -1.0, 1.0))]
        }),
        ("matmul_batched", K::MatMul, true, true, |c| {
            vec![c
                .x(&[2, 4, 3], -1.0, 1.0)
                .matmul(c.x(&[2, 3, 5], -1.0, 1.0))]
        }),
        ("matmul_transposed", K::MatMul, true, true, |c| {
            let a = c.x(&[3, 4], -1.0, 1.0).transpose(0, 1);
            vec![a.matmul(c.x(&[5, 3], -1.0, 1.0).transpose(0, 1))]
        }),
        ("matmul_batched_transposed", K::MatMul, true, true, |c| {
            let a = c.x(&[2, 3, 4], -1.0, 1.0).transpose(-1, -2);
            vec![
                a.matmul(c.x(&[2, 3, 5], -1.0, 1.0)),
                c.x(&[2, 4, 3], -1.0, 1.0)
                    .matmul(c.x(&[2, 5, 3], -1.0, 1.0).transpose(-1, -2)),
            ]
        }),
        ("matmul_broadcast", K::MatMul, true, true, |c| {
            vec![c.x(&[2, 4, 3], -1.0, 1.0).matmul(c.x(&[3, 5], -1.0, 1.0))]
        }),
        ("conv_basic", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[2, 3, 5, 5], -1.0, 1.0),
                c.x(&[4, 3, 3, 3], -1.0, 1.0),
                [1, 1],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
            )]
        }),
        ("conv_stride2_pad1", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[2, 3, 7, 6], -1.0, 1.0),
                c.x(&[4, 3, 3, 3], -1.0, 1.0),
                [2, 2],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
            )]
        }),
        ("conv_dilation2", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[1, 2, 7, 7], -1.0, 1.0),
                c.x(&[3, 2, 3, 3], -1.0, 1.0),
                [1, 1],
                [(2, 2), (2, 2)],
                [2, 2],
                1,
            )]
        }),
        ("conv_groups2", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[2, 4, 5, 5], -1.0, 1.0),
                c.x(&[6, 2, 3, 3], -1.0, 1.0),
                [1, 1],
                [(0, 0), (0, 0)],
                [1, 1],
                2,
            )]
        }),
        ("conv_s2_p1_d2_g1", K::Conv, true, false, |c| {
            vec![conv(
                c.x(&[2, 3, 9, 8], -1.0, 1.0),
                c.x(&[4, 3, 3, 3], -1.0, 1.0),
                [2, 2],
                [(1, 1), (1, 1)],
                [2, 2],
                1,
            )]
        }),
        ("conv_s2_p1_d2_g2", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[2, 4, 9, 8], -1.0, 1.0),
                c.x(&[4, 2, 3, 3], -1.0, 1.0),
                [2, 2],
                [(1, 1), (1, 1)],
                [2, 2],
                2,
            )]
        }),
        ("conv_asymmetric_negative_pad", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[1, 2, 6, 7], -1.0, 1.0),
                c.x(&[2, 2, 2, 3], -1.0, 1.0),
                [2, 1],
                [(-1, 2), (1, -1)],
                [1, 2],
                1,
            )]
        }),
        ("conv_input_grad_stride2_pad1", K::Conv, true, true, |c| {
            // input 7×6: the stride-2 output (4×3) leaves a remainder on both axes
            vec![conv_kind(
                c.x(&[2, 4, 4, 3], -1.0, 1.0),
                c.x(&[4, 3, 3, 3], -1.0, 1.0),
                [2, 2],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
                ConvKind::InputGrad { input_hw: [7, 6] },
            )]
        }),
        ("conv_input_grad_s2_p1_d2_g2", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 4, 4, 3], -1.0, 1.0),
                c.x(&[4, 2, 3, 3], -1.0, 1.0),
                [2, 2],
                [(1, 1), (1, 1)],
                [2, 2],
                2,
                ConvKind::InputGrad { input_hw: [9, 8] },
            )]
        }),
        (
            "conv_input_grad_asymmetric_negative_pad",
            K::Conv,
            true,
            true,
            |c| {
                vec![conv_kind(
                    c.x(&[1, 2, 3, 3], -1.0, 1.0),
                    c.x(&[2, 2, 2, 3], -1.0, 1.0),
                    [2, 1],
                    [(-1, 2), (1, -1)],
                    [1, 2],
                    1,
                    ConvKind::InputGrad { input_hw: [6, 7] },
                )]
            },
        ),
        ("conv_input_grad_pointwise", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 4, 4, 5], -1.0, 1.0),
                c.x(&[4, 3, 1, 1], -1.0, 1.0),
                [1, 1],
                [(0, 0), (0, 0)],
                [1, 1],
                1,
                ConvKind::InputGrad { input_hw: [4, 5] },
            )]
        }),
        ("conv_kernel_grad_stride2_pad1", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 3, 7, 6], -1.0, 1.0),
                c.x(&[2, 4, 4, 3], -1.0, 1.0),
                [2, 2],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
                ConvKind::KernelGrad { kernel_hw: [3, 3] },
            )]
        }),
        ("conv_kernel_grad_s2_p1_d2_g2", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 4, 9, 8], -1.0, 1.0),
                c.x(&[2, 4, 4, 3], -1.0, 1.0),
                [2, 2],
                [(1, 1), (1, 1)],
                [2, 2],
                2,
                ConvKind::KernelGrad { kernel_hw: [3, 3] },
            )]
        }),
        (
            "conv_kernel_grad_asymmetric_negative_pad",
            K::Conv,
            true,
            true,
            |c| {
                vec![conv_kind(
                    c.x(&[1, 2, 6, 7], -1.0, 1.0),
                    c.x(&[1, 2, 3, 3], -1.0, 1.0),
                    [2, 1],
                    [(-1, 2), (1, -1)],
                    [1, 2],
                    1,
                    ConvKind::KernelGrad { kernel_hw: [2, 3] },
                )]
            },
        ),
        ("conv_kernel_grad_pointwise", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 3, 4, 5], -1.0, 1.0),
                c.x(&[2, 4, 4, 5], -1.0, 1.0),
                [1, 1],
                [(0, 0), (0, 0)],
                [1, 1],
                1,
                ConvKind::KernelGrad { kernel_hw: [1, 1] },
            )]
        }),
        // A column stride of 3 (lamina-cpu splits rows into column phases for any stride).
        ("conv_stride_2x3", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[2, 3, 8, 10], -1.0, 1.0),
                c.x(&[4, 3, 3, 3], -1.0, 1.0),
                [2, 3],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
            )]
        }),
        ("conv_input_grad_stride_2x3", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 4, 4, 4], -1.0, 1.0),
                c.x(&[4, 3, 3, 3], -1.0, 1.0),
                [2, 3],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
                ConvKind::InputGrad { input_hw: [8, 10] },
            )]
        }),
        ("conv_kernel_grad_stride_2x3", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 3, 8, 10], -1.0, 1.0),
                c.x(&[2, 4, 4, 4], -1.0, 1.0),
                [2, 3],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
                ConvKind::KernelGrad { kernel_hw: [3, 3] },
            )]
        }),
        // Stride-1 3×3 convolutions with 8 or more input channels (the shapes a Winograd
        // F(2×2, 3×3) path must get right): odd and even output sizes, low padding 0, 1 and 2,
        // 1, 3 and odd output channels, all three kinds.
        ("conv_3x3_odd_size_pad1", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[2, 9, 7, 5], -1.0, 1.0),
                c.x(&[3, 9, 3, 3], -1.0, 1.0),
                [1, 1],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
            )]
        }),
        ("conv_3x3_even_size_pad0", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[3, 8, 6, 8], -1.0, 1.0),
                c.x(&[1, 8, 3, 3], -1.0, 1.0),
                [1, 1],
                [(0, 0), (0, 0)],
                [1, 1],
                1,
            )]
        }),
        ("conv_3x3_asymmetric_pad2", K::Conv, true, true, |c| {
            vec![conv(
                c.x(&[1, 10, 5, 6], -1.0, 1.0),
                c.x(&[5, 10, 3, 3], -1.0, 1.0),
                [1, 1],
                [(2, 0), (1, 2)],
                [1, 1],
                1,
            )]
        }),
        ("conv_kernel_grad_3x3_pad1", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 9, 7, 5], -1.0, 1.0),
                c.x(&[2, 8, 7, 5], -1.0, 1.0),
                [1, 1],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
                ConvKind::KernelGrad { kernel_hw: [3, 3] },
            )]
        }),
        ("conv_kernel_grad_3x3_pad0", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[3, 8, 6, 8], -1.0, 1.0),
                c.x(&[3, 9, 4, 6], -1.0, 1.0),
                [1, 1],
                [(0, 0), (0, 0)],
                [1, 1],
                1,
                ConvKind::KernelGrad { kernel_hw: [3, 3] },
            )]
        }),
        (
            "conv_kernel_grad_3x3_asymmetric_pad2",
            K::Conv,
            true,
            true,
            |c| {
                vec![conv_kind(
                    c.x(&[1, 8, 5, 6], -1.0, 1.0),
                    c.x(&[1, 11, 5, 7], -1.0, 1.0),
                    [1, 1],
                    [(2, 0), (1, 2)],
                    [1, 1],
                    1,
                    ConvKind::KernelGrad { kernel_hw: [3, 3] },
                )]
            },
        ),
        ("conv_input_grad_3x3_pad1", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 9, 7, 6], -1.0, 1.0),
                c.x(&[9, 3, 3, 3], -1.0, 1.0),
                [1, 1],
                [(1, 1), (1, 1)],
                [1, 1],
                1,
                ConvKind::InputGrad { input_hw: [7, 6] },
            )]
        }),
        ("conv_input_grad_3x3_pad0", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[2, 8, 3, 4], -1.0, 1.0),
                c.x(&[8, 1, 3, 3], -1.0, 1.0),
                [1, 1],
                [(0, 0), (0, 0)],
                [1, 1],
                1,
                ConvKind::InputGrad { input_hw: [5, 6] },
            )]
        }),
        ("conv_input_grad_3x3_pad2", K::Conv, true, true, |c| {
            vec![conv_kind(
                c.x(&[1, 11, 6, 5], -1.0, 1.0),
                c.x(&[11, 5, 3, 3], -1.0, 1.0),
                [1, 1],
                [(2, 2), (2, 2)],
                [1, 1],
                1,
                ConvKind::InputGrad { input_hw: [4, 3] },
            )]
        }),
        ("gather_rows", K::Gather, true, true, |c| {
            let idx = c.values(&[2, 3], vec![4.0, 0.0, 2.0, 2.0, 1.0, 3.0], DType::I32);
            vec![c.x(&[5, 4], -1.0, 1.0).gather(idx, 0)]
        }),
        ("gather_axis1_out_of_range", K::Gather, true, true, |c| {
            let idx = c.values(&[4], vec![1.0, 4.0, 5.0, -1.0], DType::I32);
            vec![c.x(&[2, 5, 3], -1.0, 1.0).gather(idx, 1)]
        }),
        ("scatter_add", K::ScatterAdd, true, true, |c| {
            let idx = c.values(&[3], vec![1.0, 4.0, 1.0], DType::I32);
            vec![Tensor::apply(
                Op::ScatterAdd {
                    axis: 1,
                    dim_size: 5,
                },
                &[c.x(&[2, 3, 4], -1.0, 1.0), idx],
            )]
        }),
        ("compose_softmax", K::Exp, true, true, |c| {
            vec![c.x(&[3, 5], -2.0, 2.0).softmax(-1)]
        }),
        ("compose_log_softmax", K::Log, true, true, |c| {
            vec![c.x(&[3, 5], -2.0, 2.0).log_softmax(1)]
        }),
        ("compose_gelu_silu_sigmoid", K::Erf, true, true, |c| {
            let x = c.x(&[2, 5], -3.0, 3.0);
            vec![x.gelu(), x.silu(), x.sigmoid()]
        }),
        ("compose_var_mean", K::ReduceSum, true, true, |c| {
            let x = c.x(&[3, 4, 2], -1.0, 1.0);
            vec![x.var(&[0, 2], false), x.mean(&[1], true)]
        }),
        ("compose_max_pool2d", K::Max, true, false, |c| {
            let x = c.x(&[2, 2, 6, 5], -1.0, 1.0);
            vec![x.max_pool2d(2, 2, 0), x.max_pool2d(3, 2, 1)]
        }),
        ("compose_avg_pool2d", K::Conv, true, true, |c| {
            let x = c.x(&[2, 3, 6, 6], -1.0, 1.0);
            vec![x.avg_pool2d(2, 2, 0), x.avg_pool2d(3, 1, 1)]
        }),
        ("compose_concat_minimum_relu", K::Pad, true, false, |c| {
            let a = c.x(&[2, 3], -1.0, 1.0);
            let b = c.x(&[2, 2], -1.0, 1.0);
            vec![Tensor::concat(&[a, b, a], 1), a.minimum(0.1).relu()]
        }),
        (
            "compose_one_hot_cross_entropy",
            K::Gather,
            true,
            true,
            |c| {
                let labels = c.values(&[4], vec![2.0, 0.0, 1.0, 2.0], DType::I32);
                let logits = c.x(&[4, 3], -2.0, 2.0);
                let oh = labels.one_hot(3, c.dtype());
                vec![-(logits.log_softmax(-1) * oh)
                    .sum(&[1], false)
                    .mean(&[], false)]
            },
        ),
    ]
}

/// Every row of the op table, with float inputs and graphs of `dtype` (F32 or F64).
pub fn op_table(dtype: DType) -> Vec<OpCase> {
    rows()
        .into_iter()
        .enumerate()
        .map(|(i, (name, kind, grad, grad2, build))| {
            let mut c = CaseBuilder::new(dtype, 1000 + i as u64);
            let outs = build(&mut c);
            c.finish(name, kind, &outs, grad, grad2)
        })
        .collect()
}
