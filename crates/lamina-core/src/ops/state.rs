//! State: Assign writes its operand into a persistent buffer. Its result aliases the buffer after
//! the write. An effect has no gradient.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub(crate) fn vjp(name: &str) -> Result<Vec<Option<Tensor>>> {
    Err(Error::NoGradient {
        op: "assign".into(),
        why: format!(
            "it writes the persistent buffer '{name}'; differentiate the value before assigning it"
        ),
    })
}
