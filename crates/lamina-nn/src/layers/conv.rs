use super::need_rank;
use crate::config::{bool_or, int, uint, uint_or};
use crate::{Init, Layer, Scope};
use lamina_core::{ConvKind, ConvParams, Result, Tensor};
use serde_json::{json, Value};

/// 2-D convolution over NCHW input, PyTorch `nn.Conv2d` (square kernel, symmetric stride, padding
/// and dilation; groups). Weight `[out, in/groups, k, k]` ~ `kaiming_uniform(a=√5)`, bias
/// `U(±1/√fan_in)` with `fan_in = in/groups·k²`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2D {
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: i64,
    pub dilation: usize,
    pub groups: usize,
    pub use_bias: bool,
}

impl Conv2D {
    /// A convolution with dilation 1 and one group.
    pub fn new(
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: i64,
        use_bias: bool,
    ) -> Self {
        Conv2D {
            out_channels,
            kernel,
            stride,
            padding,
            dilation: 1,
            groups: 1,
            use_bias,
        }
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn from_config(cfg: &Value) -> Result<Conv2D, String> {
        Ok(Conv2D {
            out_channels: uint(cfg, "out_channels")?,
            kernel: uint(cfg, "kernel")?,
            stride: uint_or(cfg, "stride", 1)?,
            padding: int(cfg, "padding").or_else(|e| {
                if cfg.get("padding").is_none() {
                    Ok(0)
                } else {
                    Err(e)
                }
            })?,
            dilation: uint_or(cfg, "dilation", 1)?,
            groups: uint_or(cfg, "groups", 1)?,
            use_bias: bool_or(cfg, "use_bias", true)?,
        })
    }
}

impl Layer for Conv2D {
    fn type_name(&self) -> &str {
        "Conv2D"
    }
    fn validate(&self) -> Result<(), String> {
        for (what, v) in [
            ("out_channels", self.out_channels),
            ("kernel", self.kernel),
            ("stride", self.stride),
            ("dilation", self.dilation),
            ("groups", self.groups),
        ] {
            if v == 0 {
                return Err(format!("{what} must be ≥ 1, got 0"));
            }
        }
        if self.padding < 0 {
            return Err(format!("padding must be ≥ 0, got {}", self.padding));
        }
        if !self.out_channels.is_multiple_of(self.groups) {
            return Err(format!(
                "out_channels {} is not divisible by groups {}",
                self.out_channels, self.groups
            ));
        }
        Ok(())
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        need_rank(x, "Conv2D", &[4], "[batch, channels, height, width]")?;
        let c = x.dim(1);
        if !c.is_multiple_of(self.groups) {
            return Err(lamina_core::Error::Spec(format!(
                "Conv2D: {c} input channels are not divisible by groups {}",
                self.groups
            )));
        }
        let k = self.kernel;
        let w = s.param(
            "weight",
            &[self.out_channels, c / self.groups, k, k],
            Init::KaimingUniform { a: 5f64.sqrt() },
        );
        let p = ConvParams {
            stride: [self.stride; 2],
            padding: [(self.padding, self.padding); 2],
            dilation: [self.dilation; 2],
            groups: self.groups,
            kind: ConvKind::Forward,
        };
        let y = x.conv(w, &p).check()?;
        if !self.use_bias {
            return Ok(y);
        }
        let bound = 1.0 / ((c / self.groups * k * k) as f64).sqrt();
        let b = s.param(
            "bias",
            &[self.out_channels],
            Init::Uniform {
                lo: -bound,
                hi: bound,
            },
        );
        Ok(y + b.reshape(&[self.out_channels, 1, 1]))
    }
    fn config(&self) -> Value {
        json!({ "out_channels": self.out_channels, "kernel": self.kernel, "stride": self.stride, "padding": self.padding,
                "dilation": self.dilation, "groups": self.groups, "use_bias": self.use_bias })
    }
}

fn pool_config(cfg: &Value) -> Result<(usize, usize, usize), String> {
    let kernel = uint(cfg, "kernel")?;
    Ok((
        kernel,
        uint_or(cfg, "stride", kernel)?,
        uint_or(cfg, "padding", 0)?,
    ))
}

fn pool_validate(kernel: usize, stride: usize, padding: usize) -> Result<(), String> {
    if kernel == 0 || stride == 0 {
        return Err(format!(
            "kernel and stride must be ≥ 1, got kernel {kernel}, stride {stride}"
        ));
    }
    if 2 * padding > kernel {
        return Err(format!(
            "padding {padding} must be at most half the kernel {kernel}"
        ));
    }
    Ok(())
}

/// Max pooling, PyTorch `nn.MaxPool2d(kernel, stride, padding)`.
#[derive(Clone, Debug, PartialEq)]
pub struct MaxPool2D {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2D {
    pub fn from_config(cfg: &Value) -> Result<MaxPool2D, String> {
        let (kernel, stride, padding) = pool_config(cfg)?;
        Ok(MaxPool2D {
            kernel,
            stride,
            padding,
        })
    }
}

impl Layer for MaxPool2D {
    fn type_name(&self) -> &str {
        "MaxPool2D"
    }
    fn validate(&self) -> Result<(), String> {
        pool_validate(self.kernel, self.stride, self.padding)
    }
    fn build(&self, _: &mut Scope, x: Tensor) -> Result<Tensor> {
        need_rank(x, "MaxPool2D", &[4], "[batch, channels, height, width]")?;
        x.max_pool2d(self.kernel, self.stride, self.padding).check()
    }
    fn config(&self) -> Value {
        json!({ "kernel": self.kernel, "stride": self.stride, "padding": self.padding })
    }
}

/// Average pooling, PyTorch `nn.AvgPool2d(kernel, stride, padding)` (zero padding counted).
#[derive(Clone, Debug, PartialEq)]
pub struct AvgPool2D {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl AvgPool2D {
    pub fn from_config(cfg: &Value) -> Result<AvgPool2D, String> {
        let (kernel, stride, padding) = pool_config(cfg)?;
        Ok(AvgPool2D {
            kernel,
            stride,
            padding,
        })
    }
}

impl Layer for AvgPool2D {
    fn type_name(&self) -> &str {
        "AvgPool2D"
    }
    fn validate(&self) -> Result<(), String> {
        pool_validate(self.kernel, self.stride, self.padding)
    }
    fn build(&self, _: &mut Scope, x: Tensor) -> Result<Tensor> {
        need_rank(x, "AvgPool2D", &[4], "[batch, channels, height, width]")?;
        x.avg_pool2d(self.kernel, self.stride, self.padding).check()
    }
    fn config(&self) -> Value {
        json!({ "kernel": self.kernel, "stride": self.stride, "padding": self.padding })
    }
}
