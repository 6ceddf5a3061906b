//! Scenario validation, enumeration, seeded sampling and the schedule text form.

use std::collections::{HashMap, HashSet};

use super::{a2_b1, shape, truncate_vs_unpin};
use crate::fault::*;

fn s(text: &str) -> Schedule {
    text.parse().unwrap()
}

#[test]
fn a2_b1_has_exactly_the_three_orders() {
    let sc = a2_b1();
    assert_eq!(sc.interleaving_count(), Some(3));
    let all: Vec<String> = sc.interleavings(10).unwrap().iter().map(ToString::to_string).collect();
    assert_eq!(all, ["0.s1 0.s2 1.s1", "0.s1 1.s1 0.s2", "1.s1 0.s1 0.s2"]);
}

#[test]
fn enumeration_is_the_multinomial_unique_and_in_program_order() {
    for (counts, expected) in [
        (&[1, 1][..], 2),
        (&[2, 2], 6),
        (&[3, 2], 10),
        (&[1, 1, 1, 1], 24),
        (&[2, 2, 2], 90),
        (&[4, 3, 2], 1260),
    ] {
        let sc = shape(counts);
        assert_eq!(sc.interleaving_count(), Some(expected), "{counts:?}");
        let all = sc.interleavings(10_000).unwrap();
        assert_eq!(all.len() as u128, expected, "{counts:?}");
        let unique: HashSet<&Schedule> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "{counts:?}: duplicates");
        for schedule in &all {
            sc.check(schedule).unwrap();
            for t in 0..counts.len() as u8 {
                let points: Vec<_> =
                    schedule.steps().iter().filter(|s| s.thread == t).map(|s| s.kind).collect();
                let program: Vec<_> = (0..counts[t as usize]).map(StepKind::Sync).collect();
                assert_eq!(points, program, "{schedule}");
            }
        }
    }
}

#[test]
fn enumeration_refuses_past_the_limit() {
    let sc = shape(&[4, 3, 2]);
    assert_eq!(
        sc.interleavings(1259),
        Err(FaultError::TooManyInterleavings { count: Some(1260), limit: 1259 })
    );
    // 8 threads of 512 points: far more orders than a u128 counts; sampling still works.
    let huge = shape(&[512; 8]);
    assert_eq!(huge.interleaving_count(), None);
    let err = huge.interleavings(usize::MAX).unwrap_err();
    assert!(err.to_string().contains("over 2^128"), "{err}");
    let one = huge.sample(7);
    assert_eq!(one.steps().len(), 4096);
    huge.check(&one).unwrap();
}

#[test]
fn sampling_is_deterministic_per_seed_and_varies_across_seeds() {
    let sc = shape(&[4, 4, 4]);
    assert_eq!(sc.sample(42), sc.sample(42));
    assert_ne!(sc.sample(1), sc.sample(2));
    let distinct: HashSet<Schedule> = (0..50).map(|seed| sc.sample(seed)).collect();
    assert!(distinct.len() >= 45, "only {} distinct schedules from 50 seeds", distinct.len());
    for schedule in &distinct {
        sc.check(schedule).unwrap();
    }
}

#[test]
fn sampling_is_uniform_over_the_orders() {
    let sc = a2_b1();
    let mut hits: HashMap<String, u32> = HashMap::new();
    for seed in 0..3000 {
        *hits.entry(sc.sample(seed).to_string()).or_default() += 1;
    }
    assert_eq!(hits.len(), 3);
    assert!(hits.values().all(|&h| (850..1150).contains(&h)), "{hits:?}");
}

#[test]
fn validation() {
    let t = |tag| ThreadSpec::new(tag, "t").sync(0, "p");
    assert_eq!(Scenario::new("x", vec![]), Err(FaultError::NoThreads));
    assert_eq!(Scenario::new("x", vec![t(8)]), Err(FaultError::ThreadOutOfRange { thread: 8 }));
    assert_eq!(Scenario::new("x", vec![t(1), t(1)]), Err(FaultError::DuplicateThread { thread: 1 }));
    assert_eq!(Scenario::new("x", vec![ThreadSpec::new(2, "e")]), Err(FaultError::EmptyThread { thread: 2 }));
    let far = ThreadSpec::new(0, "t").sync(512, "p");
    assert_eq!(Scenario::new("x", vec![far]), Err(FaultError::PointOutOfRange { thread: 0, point: 512 }));
    let twice = ThreadSpec::new(3, "t").sync(5, "p").sync(5, "q");
    assert_eq!(Scenario::new("x", vec![twice]), Err(FaultError::DuplicatePoint { thread: 3, point: 5 }));
    // A kernel hold point can come twice (a second wait); a user sync point cannot.
    let waits_twice = ThreadSpec::new(0, "t").kernel(KernelPoint::Sleep).kernel(KernelPoint::Sleep);
    assert!(Scenario::new("x", vec![waits_twice]).is_ok());
    // Repeated events are fine (two folios freed).
    let events = ThreadSpec::new(0, "t").event(EventCode::FolioFree).event(EventCode::FolioFree);
    assert!(Scenario::new("x", vec![events]).is_ok());
}

#[test]
fn check_rejects_orders_that_are_not_the_scenarios() {
    let sc = a2_b1();
    sc.check(&s("0.s1 1.s1 0.s2")).unwrap();
    for bad in
        ["0.s2 0.s1 1.s1", "0.s1 0.s2", "0.s1 0.s2 1.s1 1.s1", "0.s1 0.s2 1.s1 2.s0", "0.s1 0.s2 1.s2", ""]
    {
        assert!(matches!(sc.check(&s(bad)), Err(FaultError::ScheduleMismatch { .. })), "{bad:?} accepted");
    }
}

#[test]
fn text_form_round_trips_and_rejects_garbage() {
    let sc = truncate_vs_unpin();
    for schedule in sc.interleavings(100).unwrap() {
        assert_eq!(s(&schedule.to_string()), schedule);
    }
    assert_eq!(sc.interleaving_count(), Some(10));
    assert_eq!(s("0.s1 0.e7 1.s2").steps()[1], Step::event(0, EventCode::WaitBegin));
    for bad in ["x", "0", "0.", "0.x1", "0.s", "0.e99", "0.e0", "300.s1", "0.s70000", "-1.s1", "0.s1,1.s1"] {
        assert!(matches!(bad.parse::<Schedule>(), Err(FaultError::ParseStep { .. })), "{bad:?} parsed");
    }
    assert_eq!(sc.step_name(&Step::sync(1, 2)), "unpinner:after-unpin");
    assert_eq!(sc.step_name(&Step::event(0, EventCode::WaitBegin)), "truncator:wait-begin");
    assert_eq!(sc.step_name(&Step::sync(5, 1)), "5.s1");
}
