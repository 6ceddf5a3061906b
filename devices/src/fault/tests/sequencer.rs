//! The pure state machine: forced orders, events, deviations, expired holds. No threads.

use super::{a2_b1, shape, truncate_vs_unpin};
use crate::fault::*;

fn s(text: &str) -> Schedule {
    text.parse().unwrap()
}

fn released(notes: &[Note]) -> Vec<Step> {
    notes.iter().filter_map(|n| if let Note::Released(s) = n { Some(*s) } else { None }).collect()
}

fn deviations(notes: &[Note]) -> Vec<Deviation> {
    notes.iter().filter_map(|n| if let Note::Deviation(d) = n { Some(*d) } else { None }).collect()
}

#[test]
fn wrong_order_arrivals_are_released_in_schedule_order() {
    let mut seq = Sequencer::new(&s("1.s1 0.s1"));
    let Arrival::Wait { ticket: a, .. } = seq.arrive(0, 1) else { panic!("thread 0 must wait for thread 1") };
    assert_eq!(seq.poll(a), None);
    assert_eq!(seq.cursor(), Some(Step::sync(1, 1)));
    assert_eq!(seq.arrive(1, 1), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.poll(a), Some(SyncOutcome::Released));
    let notes = seq.take_notes();
    assert_eq!(released(&notes), [Step::sync(1, 1), Step::sync(0, 1)]);
    assert!(deviations(&notes).is_empty());
    assert!(seq.is_complete());
}

/// Simulated threads: each arrives at its next point once released from the previous one, in an order
/// picked by a seeded PRNG; a held thread either wakes up (claim) or reads its point again (retry).
/// Whatever the arrival order, releases follow the schedule exactly.
fn simulate(scenario: &Scenario, schedule: &Schedule, seed: u64) -> Vec<Step> {
    let mut seq = Sequencer::new(schedule);
    let mut rng = SplitMix64::new(seed);
    let threads = scenario.threads();
    let mut next = vec![0usize; threads.len()];
    let mut held: Vec<Option<Ticket>> = vec![None; threads.len()];
    let mut order = Vec::new();
    for _ in 0..10_000 {
        let live: Vec<usize> = (0..threads.len()).filter(|&t| next[t] < threads[t].steps.len()).collect();
        if live.is_empty() {
            break;
        }
        let t = live[rng.below(live.len() as u64) as usize];
        let StepKind::Sync(point) = threads[t].steps[next[t]].kind else { panic!("sync steps only") };
        let passed = match (held[t], rng.below(2)) {
            (Some(ticket), 0) => {
                seq.claim(ticket).inspect(|&o| assert_eq!(o, SyncOutcome::Released)).is_some()
            }
            (Some(ticket), _) => match seq.arrive(threads[t].tag, point) {
                Arrival::Collected(t2) => t2 == ticket,
                Arrival::Wait { ticket: t2, again: true } if t2 == ticket => false,
                other => panic!("re-read of a held point: {other:?}"),
            },
            (None, _) => match seq.arrive(threads[t].tag, point) {
                Arrival::Go(SyncOutcome::Released) => true,
                Arrival::Wait { ticket, again: false } => {
                    held[t] = Some(ticket);
                    false
                }
                other => panic!("first arrival: {other:?}"),
            },
        };
        if passed {
            held[t] = None;
            next[t] += 1;
        }
        let notes = seq.take_notes();
        assert!(deviations(&notes).is_empty(), "{notes:?}");
        order.extend(released(&notes));
    }
    assert!(seq.is_complete(), "{schedule} seed {seed}: stuck at {:?}", seq.cursor());
    order
}

#[test]
fn any_arrival_order_follows_every_schedule() {
    for sc in [a2_b1(), shape(&[2, 2, 1])] {
        for schedule in sc.interleavings(100).unwrap() {
            for seed in 0..30 {
                assert_eq!(simulate(&sc, &schedule, seed), schedule.steps(), "{schedule} seed {seed}");
            }
        }
    }
}

#[test]
fn event_steps_release_the_held_thread() {
    // Worked example: the unpinner may pass "before-unpin" only once the truncator waits in break-layout.
    let sc = truncate_vs_unpin();
    let schedule = s("0.s1 0.e7 1.s1 1.s2 0.s2");
    sc.check(&schedule).unwrap();
    let mut seq = Sequencer::new(&schedule);
    let Arrival::Wait { ticket: u, .. } = seq.arrive(1, 1) else { panic!() };
    assert_eq!(seq.arrive(0, 1), Arrival::Go(SyncOutcome::Released));
    seq.event(1, EventCode::WaitBegin); // wrong thread tag: no match
    seq.event(0, EventCode::PinTaken); // not in the schedule: only logged
    assert_eq!(seq.poll(u), None);
    seq.event(THREAD_ANY, EventCode::WaitBegin); // from the hook, which knows no thread
    assert_eq!(seq.poll(u), Some(SyncOutcome::Released));
    assert_eq!(seq.arrive(1, 2), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.arrive(0, 2), Arrival::Go(SyncOutcome::Released));
    let notes = seq.take_notes();
    assert!(deviations(&notes).is_empty(), "{notes:?}");
    assert!(notes.contains(&Note::EventMatched(Step::event(0, EventCode::WaitBegin))));
    assert!(seq.is_complete());
}

#[test]
fn early_events_unscheduled_and_repeated_arrivals_are_deviations() {
    let mut seq = Sequencer::new(&s("0.s1 1.e2 1.s1"));
    seq.event(1, EventCode::Unpin);
    assert_eq!(seq.arrive(3, 3), Arrival::Go(SyncOutcome::Unscheduled));
    assert_eq!(seq.arrive(0, 1), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.arrive(0, 1), Arrival::Go(SyncOutcome::Unscheduled));
    assert_eq!(seq.arrive(1, 1), Arrival::Go(SyncOutcome::Released), "the early event step is passed over");
    assert_eq!(
        deviations(&seq.take_notes()),
        [
            Deviation::EarlyEvent {
                step: Step::event(1, EventCode::Unpin),
                blocked_on: Some(Step::sync(0, 1))
            },
            Deviation::Unscheduled { thread: 3, point: 3 },
            Deviation::Repeated { thread: 0, point: 1 },
        ]
    );
    assert!(seq.is_complete());
}

#[test]
fn a_thread_past_its_steps_skips_them() {
    let mut seq = Sequencer::new(&s("0.s1 0.s2 1.s1"));
    assert_eq!(seq.arrive(0, 2), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.arrive(1, 1), Arrival::Go(SyncOutcome::Released));
    assert_eq!(deviations(&seq.take_notes()), [Deviation::Skipped { step: Step::sync(0, 1) }]);
    let states: Vec<StepState> = seq.progress().map(|(_, st)| st).collect();
    assert_eq!(states, [StepState::Skipped, StepState::Passed, StepState::Passed]);
}

#[test]
fn an_expired_hold_proceeds_and_the_rest_stays_in_order() {
    let mut seq = Sequencer::new(&s("0.s1 1.s1 1.s2"));
    let Arrival::Wait { ticket: b, .. } = seq.arrive(1, 1) else { panic!() };
    assert_eq!(seq.expire(b), SyncOutcome::TimedOut);
    assert_eq!(seq.poll(b), Some(SyncOutcome::TimedOut));
    let Arrival::Wait { ticket: b2, .. } = seq.arrive(1, 2) else { panic!("still waits for thread 0") };
    assert_eq!(seq.arrive(0, 1), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.poll(b2), Some(SyncOutcome::Released));
    assert_eq!(seq.expire(b2), SyncOutcome::Released, "released before the bound: stays released");
    let notes = seq.take_notes();
    assert_eq!(
        deviations(&notes),
        [Deviation::TimedOut { step: Step::sync(1, 1), blocked_on: Some(Step::sync(0, 1)) }]
    );
    assert_eq!(released(&notes), [Step::sync(0, 1), Step::sync(1, 2)]);
    assert!(seq.is_complete());
}

#[test]
fn empty_schedule_sends_everyone_on() {
    let mut seq = Sequencer::new(&Schedule::default());
    assert!(seq.is_complete());
    assert_eq!(seq.arrive(0, 0), Arrival::Go(SyncOutcome::Unscheduled));
    seq.event(0, EventCode::Marker);
    assert_eq!(seq.take_notes().len(), 1);
}

#[test]
fn a_held_thread_reading_again_is_the_same_arrival() {
    let mut seq = Sequencer::new(&s("0.s1 1.s1 1.s2"));
    let Arrival::Wait { ticket, again: false } = seq.arrive(1, 1) else { panic!() };
    assert_eq!(seq.arrive(1, 1), Arrival::Wait { ticket, again: true }, "a retry, not a repeat");
    assert_eq!(seq.arrive(0, 1), Arrival::Go(SyncOutcome::Released));
    // Released while its thread was between two reads: the next read collects it, once.
    assert_eq!(seq.poll(ticket), Some(SyncOutcome::Released));
    assert_eq!(seq.arrive(1, 1), Arrival::Collected(ticket));
    assert_eq!(seq.arrive(1, 1), Arrival::Go(SyncOutcome::Unscheduled));
    assert_eq!(deviations(&seq.take_notes()), [Deviation::Repeated { thread: 1, point: 1 }]);
    let states: Vec<StepState> = seq.progress().map(|(_, st)| st).collect();
    assert_eq!(states, [StepState::Passed, StepState::Passed, StepState::Pending]);
}

#[test]
fn worked_example_on_a_kernel_that_does_not_wait() {
    // docs/fault-injection.md: with the pinned-idle mutant wait-begin never comes; the truncator's return
    // skips it, which lets the unpinner go, and the run completes with one skipped-step deviation.
    let mut seq = Sequencer::new(&s("0.s1 0.e7 1.s1 1.s2 0.s2"));
    let Arrival::Wait { ticket: u, .. } = seq.arrive(1, 1) else { panic!() };
    assert_eq!(seq.arrive(0, 1), Arrival::Go(SyncOutcome::Released));
    let Arrival::Wait { ticket: t, .. } = seq.arrive(0, 2) else {
        panic!("after-truncate waits for the unpinner")
    };
    assert_eq!(seq.claim(u), Some(SyncOutcome::Released));
    assert_eq!(seq.arrive(1, 2), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.claim(t), Some(SyncOutcome::Released));
    let notes = seq.take_notes();
    assert_eq!(deviations(&notes), [Deviation::Skipped { step: Step::event(0, EventCode::WaitBegin) }]);
    assert_eq!(released(&notes), [Step::sync(0, 1), Step::sync(1, 1), Step::sync(1, 2), Step::sync(0, 2)]);
    assert!(seq.is_complete());
}

/// After a release, that thread runs alone until it reaches its next step, with kernel points or without.
#[test]
fn a_forced_schedule_releases_the_next_thread_only_when_the_last_one_reached_its_next_step() {
    // Thread 1 is held at its first point before thread 0 even starts.
    let mut seq = Sequencer::new(&s("0.s1 1.s1 0.kbusy 1.s2"));
    let Arrival::Wait { ticket: t1, .. } = seq.arrive(1, 1) else { panic!("thread 1 must wait") };
    assert_eq!(seq.arrive(0, 1), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.poll(t1), None, "thread 0 still runs towards kbusy: thread 1 must stay held");
    let Arrival::Wait { ticket: t0, .. } = seq.arrive(0, KernelPoint::Busy.sync_id()) else {
        panic!("kbusy comes after 1.s1")
    };
    assert_eq!(seq.poll(t1), Some(SyncOutcome::Released), "thread 0 reached its next step");
    assert_eq!(seq.poll(t0), None, "and now thread 1 runs alone until 1.s2");
    // Thread 1 reaches 1.s2: kbusy goes (thread 0's last step, so nobody runs), then 1.s2 at once.
    assert_eq!(seq.arrive(1, 2), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.poll(t0), Some(SyncOutcome::Released));
    assert!(seq.is_complete());
    assert!(deviations(&seq.take_notes()).is_empty());

    // The same order with user points only: thread 1 goes once thread 0 has reached 0.s2.
    let mut seq = Sequencer::new(&s("0.s1 1.s1 0.s2 1.s2"));
    let Arrival::Wait { ticket: t1, .. } = seq.arrive(1, 1) else { panic!("thread 1 must wait") };
    assert_eq!(seq.arrive(0, 1), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.poll(t1), None, "thread 0 still runs towards 0.s2");
    let Arrival::Wait { ticket: t0, .. } = seq.arrive(0, 2) else { panic!("0.s2 comes after 1.s1") };
    assert_eq!(seq.poll(t1), Some(SyncOutcome::Released));
    assert_eq!(seq.poll(t0), None, "thread 1 runs alone until 1.s2");
}

#[test]
fn a_forced_schedule_goes_on_past_a_sleep_point_a_last_step_and_an_event() {
    // Released from ksleep, thread 0 sleeps until thread 1's unpin wakes it: 1.s1 must not wait for it.
    let mut seq = Sequencer::new(&s("0.ksleep 1.s1 1.s2 0.kwoken"));
    let sleep = KernelPoint::Sleep.sync_id();
    let Arrival::Wait { ticket: t1, .. } = seq.arrive(1, 1) else { panic!("thread 1 must wait") };
    assert_eq!(seq.arrive(0, sleep), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.poll(t1), Some(SyncOutcome::Released));
    // Thread 1 runs until 1.s2; thread 0's wake-up arrival waits for it.
    let Arrival::Wait { ticket: t0, .. } = seq.arrive(0, KernelPoint::Woken.sync_id()) else {
        panic!("kwoken comes after 1.s2")
    };
    assert_eq!(seq.arrive(1, 2), Arrival::Go(SyncOutcome::Released), "a last step never waits");
    assert_eq!(seq.poll(t0), Some(SyncOutcome::Released));
    assert!(seq.is_complete());

    // An event step of the running thread counts as reaching its next step.
    let mut seq = Sequencer::new(&s("0.kbusy 0.e7 1.s1 0.kwoken"));
    assert_eq!(seq.arrive(0, KernelPoint::Busy.sync_id()), Arrival::Go(SyncOutcome::Released));
    let Arrival::Wait { ticket: t1, .. } = seq.arrive(1, 1) else { panic!("thread 1 must wait") };
    seq.event(THREAD_ANY, EventCode::WaitBegin);
    assert_eq!(seq.poll(t1), Some(SyncOutcome::Released));
    assert!(deviations(&seq.take_notes()).is_empty());
}

#[test]
fn an_order_the_kernel_cannot_take_holds_until_the_bound() {
    // Thread 0 released from kbusy never reaches kbroken before the unpin (it waits in the kernel), so
    // thread 1's unpin, scheduled after kbroken, stays held until its bound expires.
    let mut seq = Sequencer::new(&s("0.kbusy 0.kbroken 1.s1"));
    assert_eq!(seq.arrive(0, KernelPoint::Busy.sync_id()), Arrival::Go(SyncOutcome::Released));
    let Arrival::Wait { ticket: t1, .. } = seq.arrive(1, 1) else { panic!("thread 1 must wait") };
    assert_eq!(seq.poll(t1), None);
    assert_eq!(seq.expire(t1), SyncOutcome::TimedOut);
    let d = deviations(&seq.take_notes());
    assert!(matches!(d[..], [Deviation::TimedOut { step, .. }] if step == Step::sync(1, 1)), "{d:?}");
}

#[test]
fn a_kernel_point_listed_twice_holds_each_visit_in_turn() {
    // truncate-late-pin's shape: thread 0 sleeps on one page, wakes, and sleeps again on another, which
    // thread 1 releases after the second sleep.
    let mut seq = Sequencer::new(&s("0.ksleep 1.s1 1.s2 0.kwoken 0.ksleep 1.s3"));
    let (sleep, woken) = (KernelPoint::Sleep.sync_id(), KernelPoint::Woken.sync_id());
    assert_eq!(seq.arrive(0, sleep), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.arrive(1, 1), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.arrive(1, 2), Arrival::Go(SyncOutcome::Released));
    // Thread 1 runs alone to 1.s3, which waits for the second sleep.
    let Arrival::Wait { ticket: t1, .. } = seq.arrive(1, 3) else {
        panic!("1.s3 waits for the second sleep")
    };
    assert_eq!(seq.arrive(0, woken), Arrival::Go(SyncOutcome::Released));
    // The second visit is the second step, not a repeat of the first.
    assert_eq!(seq.poll(t1), None);
    assert_eq!(seq.arrive(0, sleep), Arrival::Go(SyncOutcome::Released));
    assert_eq!(seq.poll(t1), Some(SyncOutcome::Released));
    assert!(deviations(&seq.take_notes()).is_empty());
    assert!(seq.is_complete());
    // A third visit is one the schedule does not have.
    assert_eq!(seq.arrive(0, sleep), Arrival::Go(SyncOutcome::Unscheduled));
    assert!(matches!(deviations(&seq.take_notes())[..], [Deviation::Repeated { .. }]));
}

#[test]
fn deviations_read_as_schedule_steps() {
    let busy = KernelPoint::Busy.sync_id();
    let cases = [
        (
            Deviation::Unscheduled { thread: 1, point: 7 },
            "1.s7 arrived, which the schedule does not name: let through",
        ),
        (Deviation::Repeated { thread: 0, point: busy }, "0.kbusy arrived again after its step: let through"),
        (
            Deviation::Skipped { step: Step::sync(0, busy) },
            "0.kbusy skipped: its thread went on without arriving there",
        ),
        (
            Deviation::TimedOut { step: Step::sync(1, 1), blocked_on: Some(Step::sync(0, busy)) },
            "1.s1 let go by the hold bound while the schedule waited for 0.kbusy",
        ),
        (
            Deviation::Skipped { step: "0.e7".parse().expect("an event step") },
            "0.e7 skipped: its thread went on without sending that event",
        ),
        (
            Deviation::EarlyEvent { step: Step::sync(0, 2), blocked_on: None },
            "0.s2 came early, while the schedule waited for the end",
        ),
    ];
    for (d, text) in cases {
        assert_eq!(d.to_string(), text);
    }
}
