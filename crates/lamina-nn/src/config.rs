//! Reading layer configurations from JSON, with errors that name the field.

use serde_json::Value;

pub(crate) type CfgResult<T> = std::result::Result<T, String>;

fn field<'a>(cfg: &'a Value, key: &str) -> CfgResult<&'a Value> {
    cfg.get(key)
        .ok_or_else(|| format!("config is missing \"{key}\""))
}

pub(crate) fn int(cfg: &Value, key: &str) -> CfgResult<i64> {
    field(cfg, key)?
        .as_i64()
        .ok_or_else(|| format!("\"{key}\" must be an integer, got {}", cfg[key]))
}

pub(crate) fn uint(cfg: &Value, key: &str) -> CfgResult<usize> {
    let v = int(cfg, key)?;
    usize::try_from(v).map_err(|_| format!("\"{key}\" must be ≥ 0, got {v}"))
}

pub(crate) fn uint_or(cfg: &Value, key: &str, default: usize) -> CfgResult<usize> {
    if cfg.get(key).is_none() {
        Ok(default)
    } else {
        uint(cfg, key)
    }
}

pub(crate) fn float(cfg: &Value, key: &str) -> CfgResult<f64> {
    field(cfg, key)?
        .as_f64()
        .ok_or_else(|| format!("\"{key}\" must be a number, got {}", cfg[key]))
}

pub(crate) fn boolean(cfg: &Value, key: &str) -> CfgResult<bool> {
    field(cfg, key)?
        .as_bool()
        .ok_or_else(|| format!("\"{key}\" must be true or false, got {}", cfg[key]))
}

pub(crate) fn bool_or(cfg: &Value, key: &str, default: bool) -> CfgResult<bool> {
    if cfg.get(key).is_none() {
        Ok(default)
    } else {
        boolean(cfg, key)
    }
}

pub(crate) fn uints(cfg: &Value, key: &str) -> CfgResult<Vec<usize>> {
    let arr = field(cfg, key)?
        .as_array()
        .ok_or_else(|| format!("\"{key}\" must be an array of integers, got {}", cfg[key]))?;
    arr.iter()
        .map(|v| {
            v.as_u64()
                .map(|u| u as usize)
                .ok_or_else(|| format!("\"{key}\" must hold integers ≥ 0, got {v}"))
        })
        .collect()
}
