//! The pure state machine that enforces one [`Schedule`]: given arrivals at sync points, events, and
//! expired holds, it decides who may proceed. No threads, no clocks, no locks: the injector drives it
//! under its mutex and turns its answers into held or released vCPUs, and tests drive it directly.
//!
//! Rules (docs/fault-injection.md, "Sync semantics"):
//! - The cursor is the first step not yet passed. A sync step is released when its thread has arrived and
//!   the cursor reaches it; then the cursor moves on, releasing the next step if its thread is already
//!   waiting, and so on. An event step passes when a matching event comes while it is the cursor.
//! - An arrival goes to the first pending sync step of that thread and point. Pending steps of the same
//!   thread before it can no longer happen in program order: they are skipped (a deviation).
//! - A held thread may read its sync point again (after a [`SyncOutcome::Retry`]): that is the same
//!   arrival, still held, or released if the schedule got there meanwhile.
//! - An arrival with no pending step (not in the schedule, or already passed) proceeds at once
//!   ([`SyncOutcome::Unscheduled`], a deviation).
//! - An event matching a pending event step that is not the cursor passes it early (a deviation: events
//!   cannot be held). An event matching no pending step is only logged.
//! - An expired hold passes its step as timed out (a deviation); the cursor still waits for the steps
//!   before it, so a late arrival at one of those is released in order.
//! - Every schedule is *forced*: after a thread is released it runs alone until it reaches its next step
//!   of the schedule (arrives at a sync point, or sends the event of its next event step); only then is
//!   another thread released. Two exceptions, where the thread is known to stop by itself: its last step,
//!   and a kernel point where it goes to sleep ([`KernelPoint::blocks`]). So no step is left to timing;
//!   an order the kernel cannot take holds until the bound ends it (a timed-out deviation, "blocked").
//!   Events cannot be held, so an event step that does not come right after its thread's previous step
//!   names an order nothing can force ([`Schedule::leaves_order_to_timing`]): it comes early.

use super::protocol::{EventCode, KernelPoint, SyncOutcome, THREAD_ANY};
use super::scenario::{Schedule, Step, StepKind};

/// Where a schedule step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Not reached yet.
    Pending,
    /// Its thread has arrived and is held.
    Waiting,
    /// Released in schedule order; its thread has not read that yet (it was between two reads).
    Released,
    /// Passed in schedule order.
    Passed,
    /// Its thread was released by the hold bound, out of order.
    TimedOut,
    /// Its thread went past it without arriving.
    Skipped,
    /// An event step whose event came before its turn.
    Early,
}

/// Something that happened against the schedule; reported, never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deviation {
    /// An arrival at a sync point the schedule does not contain.
    Unscheduled {
        /// Thread tag.
        thread: u8,
        /// Sync point id.
        point: u16,
    },
    /// An arrival at a sync point whose step was already passed (or is held for another arrival).
    Repeated {
        /// Thread tag.
        thread: u8,
        /// Sync point id.
        point: u16,
    },
    /// A step its thread went past without arriving at it.
    Skipped {
        /// The step.
        step: Step,
    },
    /// A held arrival released by the hold bound while the schedule waited for `blocked_on`.
    TimedOut {
        /// The held step.
        step: Step,
        /// The step the schedule was waiting for.
        blocked_on: Option<Step>,
    },
    /// An event that came while the schedule still waited for `blocked_on`.
    EarlyEvent {
        /// The event step.
        step: Step,
        /// The step the schedule was waiting for.
        blocked_on: Option<Step>,
    },
}

impl std::fmt::Display for StepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepState::Pending => "pending",
            StepState::Waiting => "waiting",
            StepState::Released => "released",
            StepState::Passed => "passed",
            StepState::TimedOut => "timed-out",
            StepState::Skipped => "skipped",
            StepState::Early => "early",
        })
    }
}

impl std::fmt::Display for Deviation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = |b: &Option<Step>| b.map_or_else(|| "the end".to_string(), |s| s.to_string());
        match self {
            Deviation::Unscheduled { thread, point } => {
                write!(
                    f,
                    "{} arrived, which the schedule does not name: let through",
                    Step::sync(*thread, *point)
                )
            }
            Deviation::Repeated { thread, point } => {
                write!(f, "{} arrived again after its step: let through", Step::sync(*thread, *point))
            }
            Deviation::Skipped { step } => match step.kind {
                StepKind::Event(_) => {
                    write!(f, "{step} skipped: its thread went on without sending that event")
                }
                StepKind::Sync(_) => write!(f, "{step} skipped: its thread went on without arriving there"),
            },
            Deviation::TimedOut { step, blocked_on } => {
                write!(
                    f,
                    "{step} let go by the hold bound while the schedule waited for {}",
                    waiting(blocked_on)
                )
            }
            Deviation::EarlyEvent { step, blocked_on } => {
                write!(f, "{step} came early, while the schedule waited for {}", waiting(blocked_on))
            }
        }
    }
}

/// What the injector should record, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A held (or just arrived) sync step was released in schedule order.
    Released(Step),
    /// An event step passed in schedule order.
    EventMatched(Step),
    /// A deviation.
    Deviation(Deviation),
}

/// A held arrival, to poll or expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(usize);

/// The answer to an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Proceed now, with this outcome.
    Go(SyncOutcome),
    /// Hold until [`Sequencer::claim`] says otherwise or the bound expires.
    Wait {
        /// What to claim or expire.
        ticket: Ticket,
        /// A held thread reading its sync point again, not a new arrival.
        again: bool,
    },
    /// A held thread read its sync point again after the schedule released it: it proceeds
    /// ([`SyncOutcome::Released`]); the same arrival, not a new one.
    Collected(Ticket),
}

/// One schedule being enforced.
#[derive(Debug, Clone)]
pub struct Sequencer {
    steps: Vec<Step>,
    state: Vec<StepState>,
    cursor: usize,
    notes: Vec<Note>,
    /// The thread released last, until it reaches its next step (see the module rules).
    running: Option<u8>,
}

impl Sequencer {
    /// Starts enforcing `schedule`, nothing arrived yet.
    pub fn new(schedule: &Schedule) -> Self {
        let steps = schedule.steps().to_vec();
        let state = vec![StepState::Pending; steps.len()];
        Self { state, steps, cursor: 0, notes: Vec::new(), running: None }
    }

    /// Thread `thread` arrives at sync point `point`.
    pub fn arrive(&mut self, thread: u8, point: u16) -> Arrival {
        let target = Step::sync(thread, point);
        let open = |st| matches!(st, StepState::Pending | StepState::Waiting | StepState::Released);
        let Some(idx) = self.position(|s, st| s == target && open(st)) else {
            let deviation = if self.steps.contains(&target) {
                Deviation::Repeated { thread, point }
            } else {
                Deviation::Unscheduled { thread, point }
            };
            self.notes.push(Note::Deviation(deviation));
            return Arrival::Go(SyncOutcome::Unscheduled);
        };
        match self.state[idx] {
            StepState::Waiting => return Arrival::Wait { ticket: Ticket(idx), again: true },
            StepState::Released => {
                self.state[idx] = StepState::Passed;
                return Arrival::Collected(Ticket(idx));
            }
            _ => {}
        }
        for i in 0..idx {
            if self.steps[i].thread == thread && self.state[i] == StepState::Pending {
                self.state[i] = StepState::Skipped;
                self.notes.push(Note::Deviation(Deviation::Skipped { step: self.steps[i] }));
            }
        }
        self.state[idx] = StepState::Waiting;
        if self.running == Some(thread) {
            self.running = None;
        }
        self.pump();
        match self.claim(Ticket(idx)) {
            Some(outcome) => Arrival::Go(outcome),
            None => Arrival::Wait { ticket: Ticket(idx), again: false },
        }
    }

    /// An event with `code` from `thread` ([`THREAD_ANY`] matches an event step of any thread).
    pub fn event(&mut self, thread: u8, code: EventCode) {
        let matches = |s: Step, st| {
            st == StepState::Pending
                && s.kind == StepKind::Event(code)
                && (thread == THREAD_ANY || s.thread == thread)
        };
        let Some(idx) = self.position(matches) else { return };
        if self.running == Some(self.steps[idx].thread) {
            self.running = None;
        }
        if idx == self.cursor {
            self.state[idx] = StepState::Passed;
            self.notes.push(Note::EventMatched(self.steps[idx]));
            self.cursor += 1;
            self.pump();
        } else {
            self.state[idx] = StepState::Early;
            let blocked_on = self.steps.get(self.cursor).copied();
            self.notes.push(Note::Deviation(Deviation::EarlyEvent { step: self.steps[idx], blocked_on }));
        }
    }

    /// How a held arrival stands, and that its thread now knows: `None` while it must stay held.
    pub fn claim(&mut self, ticket: Ticket) -> Option<SyncOutcome> {
        let outcome = self.poll(ticket)?;
        if self.state[ticket.0] == StepState::Released {
            self.state[ticket.0] = StepState::Passed;
        }
        Some(outcome)
    }

    /// How a held arrival stands: `None` while it must stay held.
    pub fn poll(&self, ticket: Ticket) -> Option<SyncOutcome> {
        match self.state.get(ticket.0)? {
            StepState::Waiting => None,
            StepState::TimedOut => Some(SyncOutcome::TimedOut),
            _ => Some(SyncOutcome::Released),
        }
    }

    /// The hold bound of `ticket` expired: if it is still held it proceeds out of order (a deviation);
    /// if the schedule released it meanwhile, that stands. Claims the outcome.
    pub fn expire(&mut self, ticket: Ticket) -> SyncOutcome {
        if self.state.get(ticket.0) == Some(&StepState::Waiting) {
            self.state[ticket.0] = StepState::TimedOut;
            let blocked_on = self.steps.get(self.cursor).copied();
            let step = self.steps[ticket.0];
            self.notes.push(Note::Deviation(Deviation::TimedOut { step, blocked_on }));
        }
        self.claim(ticket).unwrap_or(SyncOutcome::Released)
    }

    /// Takes what happened since the last call, in order.
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// The step the schedule waits for next, if any.
    pub fn cursor(&self) -> Option<Step> {
        self.steps.get(self.cursor).copied()
    }

    /// Every step has passed one way or another.
    pub fn is_complete(&self) -> bool {
        self.cursor == self.steps.len() && !self.state.contains(&StepState::Waiting)
    }

    /// The schedule's steps with where each stands.
    pub fn progress(&self) -> impl Iterator<Item = (Step, StepState)> + '_ {
        self.steps.iter().copied().zip(self.state.iter().copied())
    }

    fn position(&self, pred: impl Fn(Step, StepState) -> bool) -> Option<usize> {
        (0..self.steps.len()).find(|&i| pred(self.steps[i], self.state[i]))
    }

    /// Moves the cursor over passed steps, releasing waiting ones, up to the first pending step, or to a
    /// step of another thread while one still runs.
    fn pump(&mut self) {
        while let Some(&state) = self.state.get(self.cursor) {
            let step = self.steps[self.cursor];
            match state {
                StepState::Pending => break,
                StepState::Waiting if self.running.is_some_and(|r| r != step.thread) => break,
                StepState::Waiting => {
                    self.state[self.cursor] = StepState::Released;
                    self.notes.push(Note::Released(step));
                    let later = self.steps[self.cursor + 1..].iter().any(|s| s.thread == step.thread);
                    let sleeps = step.kernel_point().is_some_and(KernelPoint::blocks);
                    self.running = (later && !sleeps).then_some(step.thread);
                }
                _ => {}
            }
            self.cursor += 1;
        }
    }
}
