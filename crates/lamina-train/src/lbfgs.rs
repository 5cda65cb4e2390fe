//! L-BFGS with strong-Wolfe line search, on the host, step for step as `torch.optim.LBFGS`
//! (its `step(closure)` and `_strong_wolfe`), so trajectories match PyTorch's.
//!
//! The parameters are one flat f64 vector; `eval(x)` returns the loss and the flat gradient at `x`
//! (the trainer runs its compiled loss-and-gradient graph there).

use lamina_core::Result;

/// PyTorch's L-BFGS settings (`lr=1`, `max_iter=20`, `max_eval=max_iter·5/4`,
/// `tolerance_grad=1e-7`, `tolerance_change=1e-9`, `history_size=100`, `line_search_fn='strong_wolfe'`).
#[derive(Clone, Debug, PartialEq)]
pub struct LbfgsSettings {
    pub lr: f64,
    pub max_iter: usize,
    pub max_eval: usize,
    pub tolerance_grad: f64,
    pub tolerance_change: f64,
    pub history_size: usize,
}

/// The optimizer's memory between `step` calls.
#[derive(Clone, Debug, Default)]
pub struct Lbfgs {
    n_iter: usize,
    func_evals: usize,
    d: Vec<f64>,
    t: f64,
    old_dirs: Vec<Vec<f64>>,
    old_stps: Vec<Vec<f64>>,
    ro: Vec<f64>,
    h_diag: f64,
    prev_flat_grad: Option<Vec<f64>>,
    prev_loss: f64,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn along(x: &[f64], t: f64, d: &[f64]) -> Vec<f64> {
    x.iter().zip(d).map(|(a, b)| a + t * b).collect()
}

fn cubic_interpolate(
    x1: f64,
    f1: f64,
    g1: f64,
    x2: f64,
    f2: f64,
    g2: f64,
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

type Eval<'a> = dyn FnMut(&[f64]) -> Result<(f64, Vec<f64>)> + 'a;

/// `_strong_wolfe` with PyTorch's constants (c1 1e-4, c2 0.9, tolerance_change 1e-9, 25 tries).
#[allow(clippy::too_many_arguments)]
fn strong_wolfe(
    eval: &mut Eval,
    x: &[f64],
    mut t: f64,
    d: &[f64],
    f: f64,
    g: &[f64],
    gtd: f64,
) -> Result<(f64, Vec<f64>, f64, usize)> {
    let (c1, c2, tolerance_change, max_ls) = (1e-4, 0.9, 1e-9, 25);
    let d_norm = max_abs(d);
    let (mut f_new, mut g_new) = eval(&along(x, t, d))?;
    let mut evals = 1;
    let mut gtd_new = dot(&g_new, d);
    let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) = (0.0, f, g.to_vec(), gtd);
    let mut done = false;
    let mut ls_iter = 0;
    let mut bracket: Vec<f64> = vec![];
    let mut bracket_f: Vec<f64> = vec![];
    let mut bracket_g: Vec<Vec<f64>> = vec![];
    let mut bracket_gtd: Vec<f64> = vec![];
    while ls_iter < max_ls {
        if f_new > f + c1 * t * gtd || (ls_iter > 1 && f_new >= f_prev) {
            bracket = vec![t_prev, t];
            bracket_f = vec![f_prev, f_new];
            bracket_g = vec![g_prev.clone(), g_new.clone()];
            bracket_gtd = vec![gtd_prev, gtd_new];
            break;
        }
        if gtd_new.abs() <= -c2 * gtd {
            bracket = vec![t];
            bracket_f = vec![f_new];
            bracket_g = vec![g_new.clone()];
            done = true;
            break;
        }
        if gtd_new >= 0.0 {
            bracket = vec![t_prev, t];
            bracket_f = vec![f_prev, f_new];
            bracket_g = vec![g_prev.clone(), g_new.clone()];
            bracket_gtd = vec![gtd_prev, gtd_new];
            break;
        }
        let (min_step, max_step) = (t + 0.01 * (t - t_prev), t * 10.0);
        let tmp = t;
        t = cubic_interpolate(
            t_prev,
            f_prev,
            gtd_prev,
            t,
            f_new,
            gtd_new,
            Some((min_step, max_step)),
        );
        t_prev = tmp;
        f_prev = f_new;
        g_prev = g_new.clone();
        gtd_prev = gtd_new;
        (f_new, g_new) = eval(&along(x, t, d))?;
        evals += 1;
        gtd_new = dot(&g_new, d);
        ls_iter += 1;
    }
    if ls_iter == max_ls {
        bracket = vec![0.0, t];
        bracket_f = vec![f, f_new];
        bracket_g = vec![g.to_vec(), g_new.clone()];
    }
    let mut insuf_progress = false;
    let order = |bf: &[f64]| {
        if bf[0] <= bf[bf.len() - 1] {
            (0, 1)
        } else {
            (1, 0)
        }
    };
    let (mut low, mut high) = order(&bracket_f);
    while !done && ls_iter < max_ls {
        if (bracket[1] - bracket[0]).abs() * d_norm < tolerance_change {
            break;
        }
        t = cubic_interpolate(
            bracket[0],
            bracket_f[0],
            bracket_gtd[0],
            bracket[1],
            bracket_f[1],
            bracket_gtd[1],
            None,
        );
        let (bmax, bmin) = (bracket[0].max(bracket[1]), bracket[0].min(bracket[1]));
        let eps = 0.1 * (bmax - bmin);
        if (bmax - t).min(t - bmin) < eps {
            if insuf_progress || t >= bmax || t <= bmin {
                t = if (t - bmax).abs() < (t - bmin).abs() {
                    bmax - eps
                } else {
                    bmin + eps
                };
                insuf_progress = false;
            } else {
                insuf_progress = true;
            }
        } else {
            insuf_progress = false;
        }
        (f_new, g_new) = eval(&along(x, t, d))?;
        evals += 1;
        gtd_new = dot(&g_new, d);
        ls_iter += 1;
        if f_new > f + c1 * t * gtd || f_new >= bracket_f[low] {
            bracket[high] = t;
            bracket_f[high] = f_new;
            bracket_g[high] = g_new.clone();
            bracket_gtd[high] = gtd_new;
            (low, high) = order(&bracket_f);
        } else {
            if gtd_new.abs() <= -c2 * gtd {
                done = true;
            } else if gtd_new * (bracket[high] - bracket[low]) >= 0.0 {
                bracket[high] = bracket[low];
                bracket_f[high] = bracket_f[low];
                bracket_g[high] = bracket_g[low].clone();
                bracket_gtd[high] = bracket_gtd[low];
            }
            bracket[low] = t;
            bracket_f[low] = f_new;
            bracket_g[low] = g_new.clone();
            bracket_gtd[low] = gtd_new;
        }
    }
    let low = low.min(bracket.len() - 1);
    Ok((bracket_f[low], bracket_g[low].clone(), bracket[low], evals))
}

impl Lbfgs {
    /// One `optimizer.step(closure)`: updates `x` in place, returns the loss at the starting point.
    pub fn step(&mut self, s: &LbfgsSettings, x: &mut Vec<f64>, eval: &mut Eval) -> Result<f64> {
        let (orig_loss, mut flat_grad) = eval(x)?;
        let mut loss = orig_loss;
        let mut current_evals = 1;
        self.func_evals += 1;
        if max_abs(&flat_grad) <= s.tolerance_grad {
            return Ok(orig_loss);
        }
        let mut n_iter = 0;
        while n_iter < s.max_iter {
            n_iter += 1;
            self.n_iter += 1;
            if self.n_iter == 1 {
                self.d = flat_grad.iter().map(|v| -v).collect();
                self.old_dirs.clear();
                self.old_stps.clear();
                self.ro.clear();
                self.h_diag = 1.0;
            } else {
                let prev = self
                    .prev_flat_grad
                    .as_ref()
                    .expect("set after the first iteration");
                let y: Vec<f64> = flat_grad.iter().zip(prev).map(|(a, b)| a - b).collect();
                let st: Vec<f64> = self.d.iter().map(|v| v * self.t).collect();
                let ys = dot(&y, &st);
                if ys > 1e-10 {
                    if self.old_dirs.len() == s.history_size {
                        self.old_dirs.remove(0);
                        self.old_stps.remove(0);
                        self.ro.remove(0);
                    }
                    self.h_diag = ys / dot(&y, &y);
                    self.old_dirs.push(y);
                    self.old_stps.push(st);
                    self.ro.push(1.0 / ys);
                }
                let num_old = self.old_dirs.len();
                let mut al = vec![0.0; num_old];
                let mut q: Vec<f64> = flat_grad.iter().map(|v| -v).collect();
                for i in (0..num_old).rev() {
                    al[i] = dot(&self.old_stps[i], &q) * self.ro[i];
                    for (qj, dj) in q.iter_mut().zip(&self.old_dirs[i]) {
                        *qj -= al[i] * dj;
                    }
                }
                let mut r: Vec<f64> = q.iter().map(|v| v * self.h_diag).collect();
                for (i, a) in al.iter().enumerate() {
                    let be_i = dot(&self.old_dirs[i], &r) * self.ro[i];
                    for (rj, sj) in r.iter_mut().zip(&self.old_stps[i]) {
                        *rj += (a - be_i) * sj;
                    }
                }
                self.d = r;
            }
            self.prev_flat_grad = Some(flat_grad.clone());
            self.prev_loss = loss;
            self.t = if self.n_iter == 1 {
                (1.0f64).min(1.0 / flat_grad.iter().map(|v| v.abs()).sum::<f64>()) * s.lr
            } else {
                s.lr
            };
            let gtd = dot(&flat_grad, &self.d);
            if gtd > -s.tolerance_change {
                break;
            }
            let (f_new, g_new, t, ls_evals) =
                strong_wolfe(eval, x, self.t, &self.d, loss, &flat_grad, gtd)?;
            loss = f_new;
            flat_grad = g_new;
            self.t = t;
            *x = along(x, t, &self.d);
            let opt_cond = max_abs(&flat_grad) <= s.tolerance_grad;
            current_evals += ls_evals;
            self.func_evals += ls_evals;
            if n_iter == s.max_iter || current_evals >= s.max_eval || opt_cond {
                break;
            }
            if self.d.iter().fold(0.0f64, |m, v| m.max((v * t).abs())) <= s.tolerance_change {
                break;
            }
            if (loss - self.prev_loss).abs() < s.tolerance_change {
                break;
            }
        }
        Ok(orig_loss)
    }
}
