// Shared by the seed examples (included with `include!`): a synthetic classification problem with a
// learnable rule, generated deterministically, and the tutorial's progress table.

/// `n` samples of `features` values in [-1, 1); the class is the index of the largest of
/// `classes` fixed random projections, so a model can learn it.
fn synthetic(n: usize, features: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<i32>) {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
    };
    let proj: Vec<f32> = (0..features * classes).map(|_| next()).collect();
    let x: Vec<f32> = (0..n * features).map(|_| next()).collect();
    let y = (0..n)
        .map(|i| {
            let row = &x[i * features..(i + 1) * features];
            let score = |c: usize| row.iter().zip(&proj[c * features..(c + 1) * features]).map(|(a, b)| a * b).sum::<f32>();
            (0..classes).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap_or(0) as i32
        })
        .collect();
    (x, y)
}

fn print_header() {
    println!("{:>5} | {:>9} | {:>8}", "Epoch", "Loss", "Accuracy");
    println!("{:-<5}-+-{:-<9}-+-{:-<8}", "", "", "");
}

fn print_row(epoch: usize, loss: f64, acc: f64) {
    println!("{epoch:>5} | {loss:>9.4} | {:>7.2}%", acc * 100.0);
}
