//! Model specs from anywhere: `ModelSpec::from_json` (JSON parsing, layer configs, validation,
//! shape inference of every layer) must return an error, never panic. A spec that compiles must
//! also build its evaluation graph and print its summary.
#![no_main]

use lamina_core::DType;
use lamina_nn::{LayerRegistry, Mode, ModelSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = ModelSpec::from_json(text, &LayerRegistry::new()) {
        let _ = spec.summary();
        let again = ModelSpec::from_json(&spec.to_json(), &LayerRegistry::new());
        assert!(
            again.is_ok(),
            "a compiled spec's own JSON must load: {:?}",
            again.err()
        );
        let _ = spec.forward_graph(1, Mode::Eval, DType::F32);
    }
});
