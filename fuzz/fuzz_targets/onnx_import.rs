//! ONNX files from anywhere: `lamina_onnx::import` (protobuf decoding, the graph checks, tensor
//! sizes, the lamina-spec route and the layer patterns) must return an error, never panic, and
//! allocate nothing much larger than its input. A model that imports must be consistent: every
//! parameter of its spec has a weight of that shape, and it exports again.
//!
//! Seeds: `crates/lamina-onnx/tests/fixtures/*.onnx` (PyTorch's exporters) and the files of
//! `cargo run -p lamina-onnx --example onnx_fixtures -- DIR` (lamina's exporter).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = lamina_onnx::import(data) {
        for p in m.spec.params() {
            let w = &m.weights[&p.path];
            assert_eq!(w.shape(), p.shape.as_slice(), "{}", p.path);
        }
        assert_eq!(m.weights.len(), m.spec.params().count());
        let again = lamina_onnx::export(&m.spec, &m.weights, None);
        assert!(again.is_ok(), "an imported model exports: {:?}", again.err());
    }
});
