//! The built-in layers. Each is a plain struct implementing [`Layer`](crate::Layer) with the same
//! semantics as the PyTorch module named in its docs, and a `from_config` constructor the
//! [`LayerRegistry`](crate::LayerRegistry) uses to load it from JSON.

mod activation;
mod attention;
mod conv;
mod dense;
mod norm;
mod residual;
mod shape;

pub use activation::{Activation, Elu, Glu, LeakyRelu, PRelu, Softmax};
pub use attention::MultiHeadAttention;
pub use conv::{AvgPool2D, Conv2D, MaxPool2D};
pub use dense::Dense;
pub use norm::{BatchNorm, Dropout, LayerNorm};
pub use residual::Residual;
pub use shape::{Embedding, Flatten, Reshape};

use lamina_core::{dtype::fmt_shape, Result, Tensor};

/// Checks the input rank, with a message naming the layer type, what it takes and what came.
pub(crate) fn need_rank(x: Tensor, type_name: &str, ranks: &[usize], what: &str) -> Result<()> {
    let r = x.rank();
    if ranks.contains(&r) {
        Ok(())
    } else {
        Err(lamina_core::Error::Spec(format!(
            "{type_name} needs input {what}, got {}",
            fmt_shape(&x.shape())
        )))
    }
}
