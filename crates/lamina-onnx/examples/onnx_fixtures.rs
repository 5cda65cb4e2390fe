//! Writes, for every test model, every built-in layer alone (lamina-nn's layer table) and every
//! example model (`examples/*.json`), `NAME.onnx`, `NAME.input.f32`, `NAME.expected.f32` (raw
//! little-endian f32; the expected output is lamina's reference interpreter on the exported graph)
//! and `NAME.json` (shapes), for `tools/golden/onnx_check.py` to compare with onnxruntime.
//!
//! `cargo run -p lamina-onnx --example onnx_fixtures -- OUTDIR`

#[path = "../tests/common/models.rs"]
#[allow(dead_code)] // the test binary uses the rest
mod models;

use lamina_core::HostTensor;
use std::path::PathBuf;

fn f32_bytes(t: &HostTensor) -> Vec<u8> {
    t.to_f64()
        .iter()
        .flat_map(|&x| (x as f32).to_le_bytes())
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: onnx_fixtures OUTDIR")?,
    );
    std::fs::create_dir_all(&dir)?;
    let all = models::models()
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .chain(models::layer_models())
        .chain(models::example_models());
    for (name, spec) in all {
        let name = name.as_str();
        let params = models::params(&spec);
        let x = models::input(name, &spec);
        let y = models::expected(&spec, &params, &x);
        lamina_onnx::export_to_file(dir.join(format!("{name}.onnx")), &spec, &params, None)?;
        std::fs::write(dir.join(format!("{name}.input.f32")), f32_bytes(&x))?;
        std::fs::write(dir.join(format!("{name}.expected.f32")), f32_bytes(&y))?;
        let meta = serde_json::json!({
            "input": "x", "output": "y",
            "input_shape": x.shape(), "output_shape": y.shape(),
        });
        std::fs::write(dir.join(format!("{name}.json")), meta.to_string())?;
        println!("{name}: input {:?} -> output {:?}", x.shape(), y.shape());
    }
    Ok(())
}
