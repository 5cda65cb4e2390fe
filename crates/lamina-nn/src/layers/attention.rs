use super::need_rank;
use crate::config::{bool_or, uint};
use crate::{Init, Layer, Scope};
use lamina_core::{DType, Error, Result, Tensor};
use serde_json::{json, Value};

/// Multi-head self-attention over `[batch, time, dim]`, PyTorch
/// `nn.MultiheadAttention(dim, heads, batch_first=True)` called as `mha(x, x, x)`: one input
/// projection `in_proj_weight` `[3·dim, dim]` (Xavier uniform) with `in_proj_bias` (zeros), scaled
/// dot-product attention per head, output projection `out_proj` (Linear, bias zeros). With
/// `causal`, position t attends only to positions ≤ t.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiHeadAttention {
    pub heads: usize,
    pub causal: bool,
}

impl MultiHeadAttention {
    pub fn from_config(cfg: &Value) -> Result<MultiHeadAttention, String> {
        Ok(MultiHeadAttention {
            heads: uint(cfg, "heads")?,
            causal: bool_or(cfg, "causal", false)?,
        })
    }
}

impl Layer for MultiHeadAttention {
    fn type_name(&self) -> &str {
        "MultiHeadAttention"
    }
    fn validate(&self) -> Result<(), String> {
        if self.heads == 0 {
            return Err("heads must be ≥ 1, got 0".into());
        }
        Ok(())
    }
    fn build(&self, s: &mut Scope, x: Tensor) -> Result<Tensor> {
        need_rank(x, "MultiHeadAttention", &[3], "[batch, time, dim]")?;
        let (b, t, d, h) = (x.dim(0), x.dim(1), x.dim(2), self.heads);
        if d % h != 0 {
            return Err(Error::Spec(format!(
                "MultiHeadAttention: dim {d} is not divisible by {h} heads"
            )));
        }
        let dh = d / h;
        let w_in = s.param(
            "in_proj_weight",
            &[3 * d, d],
            Init::XavierUniform { gain: 1.0 },
        );
        let b_in = s.param("in_proj_bias", &[3 * d], Init::Zeros);
        let qkv = x.matmul(w_in.transpose(0, 1)) + b_in;
        // [B, T, D] slice → [B, T, H, Dh] → [B, H, T, Dh]
        let head = |i: usize| {
            qkv.slice(-1, i * d, (i + 1) * d, 1)
                .reshape(&[b, t, h, dh])
                .permute(&[0, 2, 1, 3])
        };
        let (q, k, v) = (head(0), head(1), head(2));
        let mut scores = q.matmul(k.transpose(-1, -2)) * (1.0 / (dh as f64).sqrt());
        if self.causal {
            let row = s.builder().iota(&[t, t], 0, DType::I32);
            let col = s.builder().iota(&[t, t], 1, DType::I32);
            scores = row.lt(col).where_(f64::NEG_INFINITY, scores);
        }
        let ctx = scores
            .softmax(-1)
            .matmul(v)
            .permute(&[0, 2, 1, 3])
            .reshape(&[b, t, d]);
        let w_out = s.param(
            "out_proj.weight",
            &[d, d],
            Init::KaimingUniform { a: 5f64.sqrt() },
        );
        let b_out = s.param("out_proj.bias", &[d], Init::Zeros);
        Ok(ctx.matmul(w_out.transpose(0, 1)) + b_out)
    }
    fn config(&self) -> Value {
        json!({ "heads": self.heads, "causal": self.causal })
    }
}
