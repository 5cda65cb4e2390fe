//! Per-step timing (feature `profile`, off by default): every run adds each step's wall time, and
//! dropping the executable prints the steps sorted by total time to stderr, with each step's
//! fastest run (less disturbed than the mean on a shared machine).

use lamina_core::{Op, Plan, Step};
use std::sync::Mutex;
use std::time::Duration;

/// Labels and accumulated times of an executable's steps.
pub(crate) struct Profile {
    labels: Vec<String>,
    /// Runs so far, total time per step, fastest time per step.
    times: Mutex<(usize, Vec<Duration>, Vec<Duration>)>,
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
            times: Mutex::new((
                0,
                vec![Duration::ZERO; plan.steps.len()],
                vec![Duration::MAX; plan.steps.len()],
            )),
        }
    }

    pub(crate) fn add(&self, step: usize, t: Duration) {
        let mut g = self.times.lock().unwrap_or_else(|e| e.into_inner());
        if step == 0 {
            g.0 += 1;
        }
        g.1[step] += t;
        g.2[step] = g.2[step].min(t);
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let (runs, times, fastest) = &*self.times.lock().unwrap_or_else(|e| e.into_inner());
        if *runs == 0 {
            return;
        }
        let total: Duration = times.iter().sum();
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(times[i]));
        eprintln!(
            "lamina-cpu profile: {runs} runs, {:.1} µs per run (sum of fastest {:.1} µs)",
            total.as_secs_f64() * 1e6 / *runs as f64,
            fastest.iter().sum::<Duration>().as_secs_f64() * 1e6
        );
        for i in order.into_iter().take(40) {
            eprintln!(
                "{:>10.1} µs (fastest {:>8.1}) {:>5.1}%  {}",
                times[i].as_secs_f64() * 1e6 / *runs as f64,
                fastest[i].as_secs_f64() * 1e6,
                100.0 * times[i].as_secs_f64() / total.as_secs_f64(),
                self.labels[i]
            );
        }
    }
}
