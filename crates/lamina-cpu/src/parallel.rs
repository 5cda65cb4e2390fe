//! Parallel loops of a step, run by workers that stay awake between them.
//!
//! A step runs its small kernels (elementwise groups over a few thousand elements, the optimizer
//! updates of small tensors) on one thread between its parallel ones. A rayon worker that finds
//! no work yields 32 times and then sleeps, and a thread that waits for a stolen half of a
//! `join` sleeps too, so each parallel kernel woke threads: in readme_cnn's step about 20 times.
//! On a virtual machine a wake-up is an interrupt sent through the hypervisor, which must then
//! schedule the sleeping virtual core, whose caches the host may have given to another guest
//! meanwhile; when the host is busy that takes long. (On the benchmark Xeon, in a busy period,
//! ten runs each, alternating: 29.4 ms per readme_cnn step on average as before, 28.3 ms with
//! workers kept awake only inside each step, 24.8 ms with rayon patched to yield 20000 times
//! instead of 32 before sleeping. This module, which also keeps them awake 2 ms past the step,
//! ran at 22.3 ms against 25.1 ms for the old build in a later call.)
//!
//! So each pool has a [`Team`]: while a step runs, and for the idle limit after, every worker of
//! the pool that does not run the step runs a *spinner*. It takes the step's loops as they are
//! published, else any rayon work (gemm's own threads; the next step, handed to the pool from
//! outside, which then starts without a wake-up), else spins, as OpenMP runtimes do between
//! parallel regions. [`for_each`] publishes a loop, takes part in it and spins, never sleeps,
//! until the indices others took are done. Each participant starts on a contiguous range of its
//! own and then takes what is left of the others', so the common case keeps each thread's indices
//! in order (the convolutions fetch a thread's next image ahead) and a slowed or absent worker's
//! share is taken over by the others.
//!
//! A spinner that found nothing to do for the idle limit ([`idle_limit`]: 2 ms, or
//! `LAMINA_CPU_SPIN_MS`) returns and its worker goes back to rayon's own idling: a pool between
//! training runs does not burn its cores, and a spinner that ended up on the stack above work
//! another thread waits for (two steps running at once on one pool, as tests do) lets it go on.
//! One step at a time holds a team; a step that finds its team held, any loop outside a step, and
//! every loop when `LAMINA_CPU_SPIN_MS=0` (cores shared with other busy processes, like OpenMP's
//! `OMP_WAIT_POLICY=passive`) run their loops on rayon as before.

use rayon::prelude::*;
use rayon::Yield;
use std::any::Any;
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a spinner waits for work before it gives its worker back to rayon, unless
/// `LAMINA_CPU_SPIN_MS` says otherwise.
const IDLE_LIMIT: Duration = Duration::from_millis(2);

/// The spinners' idle limit: `LAMINA_CPU_SPIN_MS` (whole milliseconds; 0 turns the teams off)
/// if set to a number, else [`IDLE_LIMIT`]; read once.
fn idle_limit() -> Duration {
    static LIMIT: OnceLock<Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| spin_setting(std::env::var("LAMINA_CPU_SPIN_MS").ok().as_deref()))
}

/// The idle limit a `LAMINA_CPU_SPIN_MS` value asks for (unset or not a number: [`IDLE_LIMIT`]).
fn spin_setting(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(IDLE_LIMIT, Duration::from_millis)
}

thread_local! {
    /// The team whose step this thread runs (null when none): its loops are published there.
    static STEP: Cell<*const Arc<Team>> = const { Cell::new(ptr::null()) };
    /// Whether a spinner runs on this thread (perhaps below the current job).
    static SPINNING: Cell<bool> = const { Cell::new(false) };
    /// Whether this thread runs an index of a published loop: a loop inside it runs in order.
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// What a rayon pool's step shares with the pool's spinners.
pub(crate) struct Team {
    /// The loop being run (null between loops), its lifetime erased: [`Retire`] unpublishes it
    /// and waits for every user before it ends.
    current: AtomicPtr<Loop<'static>>,
    /// Spinners that may be reading `current`'s loop.
    users: AtomicUsize,
    /// Whether a step holds the team.
    held: AtomicBool,
    /// Threads with a spinner on their stack.
    spinners: AtomicUsize,
    /// Loops published so far: a spinner joins each once (joining again while the owner
    /// finishes the last index would only bounce the loop's cache lines).
    loops: AtomicUsize,
}

impl Team {
    /// A team for a pool of its own.
    pub(crate) fn new() -> Arc<Team> {
        Arc::new(Team {
            current: AtomicPtr::new(ptr::null_mut()),
            users: AtomicUsize::new(0),
            held: AtomicBool::new(false),
            spinners: AtomicUsize::new(0),
            loops: AtomicUsize::new(0),
        })
    }

    /// The team of rayon's global pool.
    pub(crate) fn global() -> Arc<Team> {
        static GLOBAL: OnceLock<Arc<Team>> = OnceLock::new();
        GLOBAL.get_or_init(Team::new).clone()
    }

    /// Starts a spinner on every thread of the current pool unless each other thread has one.
    fn call_helpers(self: &Arc<Team>) {
        let others = self
            .spinners
            .load(Acquire)
            .saturating_sub(usize::from(SPINNING.get()));
        if others + 1 < rayon::current_num_threads() {
            let team = self.clone();
            rayon::spawn_broadcast(move |_| team.spin());
        }
    }

    /// A worker's part: the step's loops, else rayon's work, else spinning until nothing came
    /// for the idle limit. Returns at once on a thread that spins already or runs a step.
    fn spin(&self) {
        if SPINNING.get() || !STEP.get().is_null() {
            return;
        }
        SPINNING.set(true);
        self.spinners.fetch_add(1, AcqRel);
        let mut idle_since: Option<Instant> = None;
        let mut idle_rounds = 0u32;
        let mut joined = None;
        loop {
            // read before the loop: a loop published after it has a later number
            let published = self.loops.load(SeqCst);
            if !self.current.load(SeqCst).is_null() {
                // a loop is on: join it once, then wait for its owner to finish (not idle)
                if joined != Some(published) {
                    self.join_loop();
                    joined = Some(published);
                } else {
                    std::hint::spin_loop();
                }
                idle_since = None;
                continue;
            }
            match rayon::yield_now() {
                Some(Yield::Executed) => idle_since = None,
                _ => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > idle_limit() {
                        break;
                    }
                    idle_rounds = idle_rounds.wrapping_add(1);
                    if idle_rounds.is_multiple_of(256) {
                        // lets a runnable thread of another kind (the host's, a data loader's)
                        // have the core
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        self.spinners.fetch_sub(1, AcqRel);
        SPINNING.set(false);
    }

    /// Takes part in the published loop, if it is still there.
    fn join_loop(&self) {
        // announce the use before reading the loop again: `Retire` unpublishes it and then
        // waits for the users, so a loop read after the announcement is still alive
        self.users.fetch_add(1, SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let _leave = Leave(&self.users);
        let job = self.current.load(SeqCst);
        if !job.is_null() {
            // SAFETY: published and, with `users` raised, not yet retired (see `Retire`).
            unsafe { (*job).help() };
        }
    }
}

/// One published loop: `n` indices cut into one contiguous range per participant slot.
struct Loop<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    /// Next unclaimed index of each range (range `r` ends where range `r + 1` starts).
    cursors: Vec<Cursor>,
    /// Participants so far: the `k`-th starts on range `k mod cursors.len()`.
    joined: AtomicUsize,
    /// A helper's panic, for the loop's owner to resume (a panic on a spinner's stack would
    /// end the process: spinners are detached rayon jobs).
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// A range's cursor, alone on its cache line.
#[repr(align(64))]
struct Cursor(AtomicUsize);

impl Loop<'_> {
    fn range_start(&self, r: usize) -> usize {
        r * self.n / self.cursors.len()
    }

    /// Runs indices until none is left: this participant's own range first, then the rest of
    /// the others' in turn.
    fn run(&self) {
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                IN_LOOP.set(self.0);
            }
        }
        let _restore = Restore(IN_LOOP.replace(true));
        let ranges = self.cursors.len();
        let home = self.joined.fetch_add(1, Relaxed) % ranges;
        for r in (home..ranges).chain(0..home) {
            let end = self.range_start(r + 1);
            loop {
                let i = self.cursors[r].0.fetch_add(1, Relaxed);
                if i >= end {
                    break;
                }
                (self.f)(i);
            }
        }
    }

    /// [`Loop::run`] on a helper: a panic is kept for the owner.
    fn help(&self) {
        if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| self.run())) {
            self.panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(p);
        }
    }
}

/// Runs `step` on the current thread as the step of `team`, the current rayon pool's team (see
/// the module's doc). Outside a pool, in a pool of one, inside another step or while another
/// step holds the team, it just runs `step`.
pub(crate) fn run_step<R>(team: &Arc<Team>, step: impl FnOnce() -> R) -> R {
    if rayon::current_num_threads() < 2
        || idle_limit().is_zero()
        || rayon::current_thread_index().is_none()
        || !STEP.get().is_null()
        || team.held.swap(true, Acquire)
    {
        return step();
    }
    // releases the team even if `step` panics, and leaves this thread spinning for the next step
    struct Held<'a>(&'a Arc<Team>);
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            STEP.set(ptr::null());
            self.0.held.store(false, Release);
            if !SPINNING.get() {
                let team = self.0.clone();
                rayon::spawn(move || team.spin());
            }
        }
    }
    STEP.set(team);
    let _held = Held(team);
    team.call_helpers();
    step()
}

/// Runs `f(i)` for every `i < n`, in parallel where it can: on the step's team inside
/// [`run_step`], on rayon's pool outside one, in order inside another loop's index.
pub(crate) fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    let team = STEP.get();
    if n <= 1 || IN_LOOP.get() {
        (0..n).for_each(f);
        return;
    }
    if team.is_null() {
        (0..n).into_par_iter().for_each(&f);
        return;
    }
    // SAFETY: set by `run_step` on this thread from a team that outlives the step.
    let team = unsafe { &*team };
    // spinners that found nothing for a while (a long kernel on one thread) have left
    team.call_helpers();
    let ranges = rayon::current_num_threads().clamp(1, n);
    let job = Loop {
        f: &f,
        n,
        cursors: (0..ranges).map(|_| Cursor(AtomicUsize::new(0))).collect(),
        joined: AtomicUsize::new(0),
        panic: Mutex::new(None),
    };
    for (r, c) in job.cursors.iter().enumerate() {
        c.0.store(job.range_start(r), Relaxed);
    }
    /// Unpublishes the loop and waits until no spinner uses it, also when `f` panics.
    struct Retire<'a>(&'a Arc<Team>);
    impl Drop for Retire<'_> {
        fn drop(&mut self) {
            self.0.current.store(ptr::null_mut(), SeqCst);
            while self.0.users.load(SeqCst) != 0 {
                std::hint::spin_loop();
            }
        }
    }
    // SAFETY (the cast): only the lifetime is erased; `Retire` ends every use before `job`
    // goes out of scope.
    let published = &job as *const Loop<'_> as *mut Loop<'static>;
    team.loops.fetch_add(1, SeqCst);
    team.current.store(published, SeqCst);
    let retire = Retire(team);
    job.run();
    drop(retire);
    if let Some(p) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        std::panic::resume_unwind(p);
    }
}

/// Runs `f(c, chunk)` for every `chunk`-element piece `c` of `data` (the last may be shorter),
/// in parallel as [`for_each`].
pub(crate) fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunk = chunk.max(1);
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    for_each(len.div_ceil(chunk), |c| {
        let start = c * chunk;
        let end = (start + chunk).min(len);
        // SAFETY: the pieces are disjoint parts of `data`, each given to one call.
        f(c, unsafe {
            std::slice::from_raw_parts_mut(base.get().add(start), end - start)
        })
    });
}

/// `[f(0), …, f(n − 1)]`, computed in parallel as [`for_each`].
pub(crate) fn map<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for_each_chunk_mut(&mut out, 1, |i, slot| slot[0] = Some(f(i)));
    out.into_iter()
        .map(|r| r.expect("every index ran"))
        .collect()
}

/// A pointer that may cross threads: the callers hand each thread disjoint elements.
struct SendPtr<T>(*mut T);
// SAFETY: see the type's doc.
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// How often each index of `n` ran, through `for_each` (and through a nested loop inside
    /// index 0), `map` and `for_each_chunk_mut`.
    fn counts(n: usize) -> Vec<usize> {
        let ran: Vec<AtomicUsize> = (0..n + 3).map(|_| AtomicUsize::new(0)).collect();
        for_each(n, |i| {
            ran[i].fetch_add(1, Relaxed);
            if i == 0 {
                for_each(3, |j| {
                    ran[n + j].fetch_add(1, Relaxed);
                });
            }
        });
        assert_eq!(map(n, |i| i * i), (0..n).map(|i| i * i).collect::<Vec<_>>());
        let mut data = vec![0usize; n];
        for_each_chunk_mut(&mut data, 3, |c, piece| {
            for (k, v) in piece.iter_mut().enumerate() {
                *v += c * 3 + k + 1;
            }
        });
        assert_eq!(data, (1..=n).collect::<Vec<_>>());
        ran.iter().map(|r| r.load(Relaxed)).collect()
    }

    /// Every index runs once: in a step, outside one, inside another loop, for every pool size
    /// and loop length (fewer indices than threads included).
    #[test]
    fn each_index_once() {
        for threads in [1, 2, 3, 5] {
            let team = Team::new();
            let p = pool(threads);
            for n in [0, 1, 2, 3, 4, 7, 64, 1001] {
                let expect = |c: Vec<usize>| {
                    let nested = if n > 0 { 1 } else { 0 };
                    assert!(
                        c[..n].iter().all(|&k| k == 1),
                        "{threads} threads, n {n}: {c:?}"
                    );
                    assert!(c[n..].iter().all(|&k| k == nested), "{threads}, {n}: {c:?}");
                };
                expect(p.install(|| run_step(&team, || counts(n))));
                expect(p.install(|| counts(n)));
                expect(counts(n));
            }
        }
    }

    /// The loops of a step spread over the pool's threads, and the step's thread hands them out
    /// again in the next step.
    #[test]
    fn loops_use_the_other_workers() {
        let team = Team::new();
        let p = pool(3);
        for _ in 0..3 {
            let seen = Mutex::new(HashSet::new());
            p.install(|| {
                run_step(&team, || {
                    for_each(12, |_| {
                        seen.lock().unwrap().insert(std::thread::current().id());
                        std::thread::sleep(Duration::from_millis(5));
                    })
                })
            });
            assert!(
                seen.lock().unwrap().len() >= 2,
                "one thread ran all 12 indices"
            );
        }
    }

    /// A panic inside a loop reaches the step's caller, and the team serves the next step.
    #[test]
    fn a_panic_leaves_the_team_usable() {
        let team = Team::new();
        let p = pool(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.install(|| {
                run_step(&team, || {
                    for_each(8, |i| {
                        std::thread::sleep(Duration::from_millis(1));
                        assert!(i != 5, "index 5 fails");
                    })
                })
            })
        }));
        assert!(r.is_err());
        assert!(!team.held.load(SeqCst));
        let c = p.install(|| run_step(&team, || counts(50)));
        assert!(c[..50].iter().all(|&k| k == 1));
    }

    /// `LAMINA_CPU_SPIN_MS`: whole milliseconds, 0 included; anything else keeps the default.
    #[test]
    fn spin_setting_reads_milliseconds() {
        let cases = [
            (None, IDLE_LIMIT),
            (Some("5"), Duration::from_millis(5)),
            (Some(" 0 "), Duration::ZERO),
            (Some("fast"), IDLE_LIMIT),
            (Some("-1"), IDLE_LIMIT),
            (Some("1.5"), IDLE_LIMIT),
        ];
        for (value, limit) in cases {
            assert_eq!(spin_setting(value), limit, "{value:?}");
        }
    }

    /// Steps started at once from several threads on one pool all finish, one holding the team
    /// and the others on rayon's loops.
    #[test]
    fn steps_at_once_share_a_pool() {
        let team = Team::new();
        let p = pool(2);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let c = p.install(|| run_step(&team, || counts(40)));
                        assert!(c[..40].iter().all(|&k| k == 1));
                    }
                });
            }
        });
    }
}
