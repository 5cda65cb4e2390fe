//! Per-step timing (feature `profile`, off by default): every run adds each step's wall time, and
//! dropping the executable prints the steps sorted by total time to stderr, with each step's
//! median and fastest run (less disturbed than the mean on a shared machine).

use lamina_core::{Op, Plan, Step};
use std::sync::Mutex;
use std::time::Duration;

/// Labels and accumulated times of an executable's steps.
pub(crate) struct Profile {
    labels: Vec<String>,
    /// Runs so far and every run's time per step.
    times: Mutex<(usize, Vec<Vec<Duration>>)>,
}

impl Profile {
    pub(crate) fn new(plan: &Plan) -> Profile {
        let label = |id: usize| {
            let n = &plan.graph.nodes[id];
            let op = match &n.op {
                Op::Conv(p) => format!("conv {:?} s{:?}", p.kind, p.stride),
                op => op.name().to_string(),
            };
            let ins: Vec<_> = n
                .inputs
                .iter()
                .map(|&i| format!("{:?}", plan.graph.nodes[i].ty.shape))
                .collect();
            format!("%{id} {op} {} -> {:?}", ins.join(" "), n.ty.shape)
        };
        let labels = plan
            .steps
            .iter()
            .map(|s| match s {
                Step::Node(id) => label(*id),
                Step::Fused { nodes, outputs } => format!(
                    "fused[{}] -> {}",
                    nodes
                        .iter()
                        .map(|&i| label(i))
                        .collect::<Vec<_>>()
                        .join("; "),
                    outputs
                        .iter()
                        .map(|&o| format!("{:?}", plan.graph.nodes[o].ty.shape))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            })
            .collect();
        Profile {
            labels,
            times: Mutex::new((0, vec![Vec::new(); plan.steps.len()])),
        }
    }

    pub(crate) fn add(&self, step: usize, t: Duration) {
        let mut g = self.times.lock().unwrap_or_else(|e| e.into_inner());
        if step == 0 {
            g.0 += 1;
        }
        g.1[step].push(t);
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let (runs, all) = &mut *self.times.lock().unwrap_or_else(|e| e.into_inner());
        if *runs == 0 {
            return;
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        // per step: mean, median, fastest (µs)
        let stats: Vec<[f64; 3]> = all
            .iter_mut()
            .map(|ts| {
                ts.sort();
                let mean = ts.iter().map(|&t| us(t)).sum::<f64>() / *runs as f64;
                [
                    mean,
                    ts.get(ts.len() / 2).map_or(0.0, |&t| us(t)),
                    ts.first().map_or(0.0, |&t| us(t)),
                ]
            })
            .collect();
        let sum = |k: usize| stats.iter().map(|s| s[k]).sum::<f64>();
        let total = sum(0);
        let mut order: Vec<usize> = (0..stats.len()).collect();
        order.sort_by(|&a, &b| stats[b][0].total_cmp(&stats[a][0]));
        eprintln!(
            "lamina-cpu profile: {runs} runs, {total:.1} µs per run (sum of medians {:.1} µs, of fastest {:.1} µs)",
            sum(1),
            sum(2)
        );
        for i in order.into_iter().take(40) {
            let [mean, median, fastest] = stats[i];
            eprintln!(
                "{mean:>10.1} µs (median {median:>8.1}, fastest {fastest:>8.1}) {:>5.1}%  {}",
                100.0 * mean / total,
                self.labels[i]
            );
        }
    }
}
