//! Checkpoint bytes from anywhere: decoding (safetensors structure, lamina metadata, the model
//! spec inside, dtypes) and an inference-only load must return an error, never panic, hang or
//! allocate beyond the input's size. A file that loads must also predict.
#![no_main]

use lamina_nn::LayerRegistry;
use lamina_train::{CheckpointFile, Device, Inferencer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let registry = LayerRegistry::new();
    if CheckpointFile::from_bytes(data, &registry).is_err() {
        return;
    }
    if let Ok(mut inf) = Inferencer::from_bytes(data, &registry, Device::Cpu) {
        let mut shape = inf.model().input_shape.clone();
        shape[0] = 1;
        let n: usize = shape.iter().product();
        // a model too large to run is the file's business, not a crash; bound the work per input
        if n <= 1 << 16 && inf.model().total_parameters <= 1 << 20 {
            let _ = inf.predict(&vec![0.5; n], &shape);
        }
    }
});
