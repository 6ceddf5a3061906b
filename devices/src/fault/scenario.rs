//! Scenarios and schedules as data. A [`Scenario`] names its threads and, per thread, the steps it passes
//! in program order: sync points (where the device can hold it) and events (which the device can only
//! observe). A [`Schedule`] is one total order of all those steps that keeps each thread's program order;
//! this module enumerates every such order of a small scenario, samples one from a seed for a large one,
//! checks a given order against the scenario, and reads and writes the one-line text form repro files use.

use std::fmt;
use std::str::FromStr;

use super::protocol::{EventCode, KernelPoint, MAX_POINTS, MAX_THREADS};
use super::rng::SplitMix64;
use super::FaultError;

/// What a thread does at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// Arrives at sync point `id` (a read the device can hold).
    Sync(u16),
    /// Announces an event with this code (the device cannot hold it, only wait for it).
    Event(EventCode),
}

/// One step of one thread: the unit a schedule orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Step {
    /// The scenario thread's tag.
    pub thread: u8,
    /// What it does.
    pub kind: StepKind,
}

impl Step {
    /// Thread `thread` arriving at sync point `point`.
    pub fn sync(thread: u8, point: u16) -> Self {
        Self { thread, kind: StepKind::Sync(point) }
    }

    /// Thread `thread` announcing `code`.
    pub fn event(thread: u8, code: EventCode) -> Self {
        Self { thread, kind: StepKind::Event(code) }
    }

    /// The kernel hold point this step holds its thread at, if it is one.
    pub fn kernel_point(&self) -> Option<KernelPoint> {
        match self.kind {
            StepKind::Sync(point) => KernelPoint::from_sync_id(point),
            StepKind::Event(_) => None,
        }
    }
}

/// `0.s3` (thread 0, sync point 3), `1.e7` (thread 1, event code 7) or `0.ksleep` (thread 0 held at
/// the kernel point "sleep", which is sync point `KERNEL_POINT_BASE + id`), the schedule text form.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            StepKind::Sync(point) => match self.kernel_point() {
                Some(k) => write!(f, "{}.k{}", self.thread, k.name()),
                None => write!(f, "{}.s{point}", self.thread),
            },
            StepKind::Event(code) => write!(f, "{}.e{}", self.thread, code.code()),
        }
    }
}

impl FromStr for Step {
    type Err = FaultError;

    fn from_str(s: &str) -> Result<Self, FaultError> {
        let bad = || FaultError::ParseStep { token: s.to_string() };
        let (thread, rest) = s.split_once('.').ok_or_else(bad)?;
        let thread: u8 = thread.parse().map_err(|_| bad())?;
        let kind = match rest.split_at_checked(1).ok_or_else(bad)? {
            ("s", point) => StepKind::Sync(point.parse().map_err(|_| bad())?),
            ("e", code) => {
                StepKind::Event(EventCode::from_code(code.parse().map_err(|_| bad())?).ok_or_else(bad)?)
            }
            ("k", name) => StepKind::Sync(KernelPoint::from_name(name).ok_or_else(bad)?.sync_id()),
            _ => return Err(bad()),
        };
        // A step the device could never see is a mistake in the text, not a step that never comes.
        if thread >= MAX_THREADS {
            return Err(FaultError::ThreadOutOfRange { thread });
        }
        if let StepKind::Sync(point) = kind {
            if point >= MAX_POINTS {
                return Err(FaultError::PointOutOfRange { thread, point });
            }
        }
        Ok(Self { thread, kind })
    }
}

/// A named step in a thread's program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    /// What reports call it ("before-truncate").
    pub name: String,
    /// What it is.
    pub kind: StepKind,
}

/// One scenario thread: its tag (the `thread` the guest puts in sync addresses and events), its name and
/// its steps in program order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSpec {
    /// Tag, below [`MAX_THREADS`].
    pub tag: u8,
    /// What reports call it ("truncator").
    pub name: String,
    /// Steps in program order.
    pub steps: Vec<StepSpec>,
}

impl ThreadSpec {
    /// A thread with no steps yet.
    pub fn new(tag: u8, name: &str) -> Self {
        Self { tag, name: name.to_string(), steps: Vec::new() }
    }

    /// Appends sync point `point`, called `name`.
    pub fn sync(mut self, point: u16, name: &str) -> Self {
        self.steps.push(StepSpec { name: name.to_string(), kind: StepKind::Sync(point) });
        self
    }

    /// Appends kernel hold point `point` (named `k:NAME`): the thread is held inside the kernel there.
    pub fn kernel(mut self, point: KernelPoint) -> Self {
        self.steps
            .push(StepSpec { name: format!("k:{}", point.name()), kind: StepKind::Sync(point.sync_id()) });
        self
    }

    /// Appends an awaited event (named after its code).
    pub fn event(mut self, code: EventCode) -> Self {
        self.steps.push(StepSpec { name: code.name().to_string(), kind: StepKind::Event(code) });
        self
    }
}

/// A named set of threads whose steps a schedule interleaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    name: String,
    threads: Vec<ThreadSpec>,
}

impl Scenario {
    /// Checks and builds a scenario: at least one thread, every thread with steps, tags unique and below
    /// [`MAX_THREADS`], sync points below [`MAX_POINTS`] and unique within their thread (so an arrival
    /// names exactly one step), but for kernel hold points: a thread can reach one again (a
    /// break-layout that waits twice), and the sequencer matches each arrival to the first of its steps
    /// still open.
    pub fn new(name: &str, threads: Vec<ThreadSpec>) -> Result<Self, FaultError> {
        if threads.is_empty() {
            return Err(FaultError::NoThreads);
        }
        for (i, t) in threads.iter().enumerate() {
            if t.tag >= MAX_THREADS {
                return Err(FaultError::ThreadOutOfRange { thread: t.tag });
            }
            if threads[..i].iter().any(|u| u.tag == t.tag) {
                return Err(FaultError::DuplicateThread { thread: t.tag });
            }
            if t.steps.is_empty() {
                return Err(FaultError::EmptyThread { thread: t.tag });
            }
            for (j, s) in t.steps.iter().enumerate() {
                if let StepKind::Sync(point) = s.kind {
                    if point >= MAX_POINTS {
                        return Err(FaultError::PointOutOfRange { thread: t.tag, point });
                    }
                    if KernelPoint::from_sync_id(point).is_none()
                        && t.steps[..j].iter().any(|o| o.kind == s.kind)
                    {
                        return Err(FaultError::DuplicatePoint { thread: t.tag, point });
                    }
                }
            }
        }
        Ok(Self { name: name.to_string(), threads })
    }

    /// The scenario's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its threads.
    pub fn threads(&self) -> &[ThreadSpec] {
        &self.threads
    }

    /// Thread `i`'s steps as schedule steps.
    fn program(&self, i: usize) -> impl Iterator<Item = Step> + '_ {
        let t = &self.threads[i];
        t.steps.iter().map(move |s| Step { thread: t.tag, kind: s.kind })
    }

    /// The number of schedules: the multinomial (n1 + ... + nk)! / (n1! ... nk!) of the threads' step
    /// counts; `None` if it does not fit in a u128.
    pub fn interleaving_count(&self) -> Option<u128> {
        let mut total: u128 = 0;
        let mut count: u128 = 1;
        for t in &self.threads {
            let n = t.steps.len() as u128;
            total += n;
            // count *= C(total, n), built so that every intermediate value is an integer.
            let mut c: u128 = 1;
            for i in 1..=n {
                c = c.checked_mul(total - n + i)? / i;
            }
            count = count.checked_mul(c)?;
        }
        Some(count)
    }

    /// Every schedule, in a fixed order (threads tried in declaration order at each position); refuses
    /// when there are more than `limit`.
    pub fn interleavings(&self, limit: usize) -> Result<Vec<Schedule>, FaultError> {
        let count = self.interleaving_count();
        if count.is_none_or(|c| c > limit as u128) {
            return Err(FaultError::TooManyInterleavings { count, limit });
        }
        let programs: Vec<Vec<Step>> = (0..self.threads.len()).map(|i| self.program(i).collect()).collect();
        let total = programs.iter().map(Vec::len).sum();
        let mut out = Vec::new();
        let mut cursors = vec![0; programs.len()];
        let mut current = Vec::with_capacity(total);
        interleave(&programs, &mut cursors, &mut current, total, &mut out);
        Ok(out)
    }

    /// One schedule drawn uniformly from all of them by `seed` (at each position the next thread is picked
    /// with probability proportional to its remaining steps): the same seed always gives the same schedule.
    pub fn sample(&self, seed: u64) -> Schedule {
        let programs: Vec<Vec<Step>> = (0..self.threads.len()).map(|i| self.program(i).collect()).collect();
        let mut cursors = vec![0; programs.len()];
        let mut remaining: usize = programs.iter().map(Vec::len).sum();
        let mut rng = SplitMix64::new(seed);
        let mut steps = Vec::with_capacity(remaining);
        while remaining > 0 {
            let mut r = rng.below(remaining as u64) as usize;
            for (t, p) in programs.iter().enumerate() {
                let left = p.len() - cursors[t];
                if r < left {
                    steps.push(p[cursors[t]]);
                    cursors[t] += 1;
                    break;
                }
                r -= left;
            }
            remaining -= 1;
        }
        Schedule(steps)
    }

    /// Checks that `schedule` is one of this scenario's orders: exactly its steps, each thread's in
    /// program order.
    pub fn check(&self, schedule: &Schedule) -> Result<(), FaultError> {
        for (i, t) in self.threads.iter().enumerate() {
            let mine: Vec<Step> = schedule.0.iter().copied().filter(|s| s.thread == t.tag).collect();
            if !mine.iter().copied().eq(self.program(i)) {
                return Err(FaultError::ScheduleMismatch { thread: t.tag });
            }
        }
        match schedule.0.iter().find(|s| !self.threads.iter().any(|t| t.tag == s.thread)) {
            Some(s) => Err(FaultError::ScheduleMismatch { thread: s.thread }),
            None => Ok(()),
        }
    }

    /// `thread:step` names for a step of this scenario ("truncator:before-truncate"), or its text form.
    pub fn step_name(&self, step: &Step) -> String {
        let name = self.threads.iter().find(|t| t.tag == step.thread).and_then(|t| {
            let s = t.steps.iter().find(|s| s.kind == step.kind)?;
            Some(format!("{}:{}", t.name, s.name))
        });
        name.unwrap_or_else(|| step.to_string())
    }
}

fn interleave(
    programs: &[Vec<Step>],
    cursors: &mut [usize],
    current: &mut Vec<Step>,
    total: usize,
    out: &mut Vec<Schedule>,
) {
    if current.len() == total {
        out.push(Schedule(current.clone()));
        return;
    }
    for t in 0..programs.len() {
        if let Some(&step) = programs[t].get(cursors[t]) {
            current.push(step);
            cursors[t] += 1;
            interleave(programs, cursors, current, total, out);
            cursors[t] -= 1;
            current.pop();
        }
    }
}

/// A total order of steps for the device to enforce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Schedule(Vec<Step>);

impl Schedule {
    /// A schedule of exactly these steps (not checked against any scenario; see [`Scenario::check`]).
    pub fn new(steps: Vec<Step>) -> Self {
        Self(steps)
    }

    /// The steps in order.
    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    /// Whether it names an order the sequencer cannot force: an event step that does not come right
    /// after its thread's previous step (or, for a thread's first step, first). Events cannot be held:
    /// the thread sends it while it runs alone after its previous release, before any step between.
    pub fn leaves_order_to_timing(&self) -> bool {
        self.0.iter().enumerate().any(|(j, s)| {
            matches!(s.kind, StepKind::Event(_))
                && match self.0[..j].iter().rposition(|p| p.thread == s.thread) {
                    Some(i) => i + 1 != j,
                    None => j != 0,
                }
        })
    }
}

/// Steps in text form separated by single spaces: `0.s1 1.s1 0.e7 0.s2`.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl FromStr for Schedule {
    type Err = FaultError;

    fn from_str(s: &str) -> Result<Self, FaultError> {
        s.split_whitespace().map(Step::from_str).collect::<Result<_, _>>().map(Self)
    }
}
