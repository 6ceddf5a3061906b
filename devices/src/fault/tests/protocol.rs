//! Register decoding, the event encoding and the sync outcome values.

use crate::fault::*;

fn invalid(offset: u64, size: usize, access: Access) -> ProtocolError {
    match decode(offset, size, access) {
        Request::Invalid(e) => e,
        other => panic!("{offset:#x}/{size}/{access:?} decoded as {other:?}"),
    }
}

#[test]
fn identity_registers() {
    let expected = [
        (0x00, Register::Magic, Some(MAGIC)),
        (0x08, Register::Version, Some(1)),
        (0x10, Register::WindowLen, Some(0x1_0000)),
        (0x18, Register::SyncBase, Some(0x8000)),
        (0x20, Register::SyncThreads, Some(8)),
        (0x28, Register::SyncPoints, Some(512)),
        (0x30, Register::Status, None),
    ];
    for (offset, reg, value) in expected {
        assert_eq!(decode(offset, 8, Access::Read), Request::Identity(reg));
        assert_eq!(reg.offset(), offset);
        assert_eq!(reg.constant(), value);
        assert_eq!(invalid(offset, 8, Access::Write), ProtocolError::ReadOnly { offset });
    }
    assert_eq!(MAGIC.to_le_bytes(), *b"DAXFAULT");
    assert_eq!(Register::ALL.len(), expected.len());
}

#[test]
fn event_register_is_write_only() {
    assert_eq!(decode(0x100, 8, Access::Write), Request::Event);
    assert_eq!(invalid(0x100, 8, Access::Read), ProtocolError::WriteOnly { offset: 0x100 });
}

#[test]
fn sync_offsets_encode_thread_and_point() {
    assert_eq!(decode(0x8000, 8, Access::Read), Request::Sync { thread: 0, point: 0 });
    assert_eq!(decode(0x9008, 8, Access::Read), Request::Sync { thread: 1, point: 1 });
    assert_eq!(decode(0xfff8, 8, Access::Read), Request::Sync { thread: 7, point: 511 });
    for thread in 0..MAX_THREADS {
        for point in 0..MAX_POINTS {
            let offset = sync_offset(thread, point).unwrap();
            assert_eq!(offset, 0x8000 + (u64::from(thread) << 12) + (u64::from(point) << 3));
            assert_eq!(decode(offset, 8, Access::Read), Request::Sync { thread, point });
            assert_eq!(invalid(offset, 8, Access::Write), ProtocolError::ReadOnly { offset });
        }
    }
    assert_eq!(sync_offset(8, 0), None);
    assert_eq!(sync_offset(0, 512), None);
}

#[test]
fn every_aligned_offset_classified() {
    let (mut identity, mut event, mut sync, mut unmapped) = (0, 0, 0, 0);
    for offset in (0..WINDOW_LEN).step_by(8) {
        match (decode(offset, 8, Access::Read), decode(offset, 8, Access::Write)) {
            (Request::Identity(_), Request::Invalid(ProtocolError::ReadOnly { .. })) => identity += 1,
            (Request::Invalid(ProtocolError::WriteOnly { .. }), Request::Event) => event += 1,
            (Request::Sync { .. }, Request::Invalid(ProtocolError::ReadOnly { .. })) => sync += 1,
            (
                Request::Invalid(ProtocolError::Unmapped { offset: a }),
                Request::Invalid(ProtocolError::Unmapped { offset: b }),
            ) => {
                assert_eq!((a, b), (offset, offset));
                assert!((0x38..0x8000).contains(&offset) && offset != 0x100);
                unmapped += 1;
            }
            other => panic!("{offset:#x}: {other:?}"),
        }
    }
    assert_eq!((identity, event, sync), (7, 1, 8 * 512));
    assert_eq!(unmapped, 0x8000 / 8 - 8);
}

#[test]
fn wrong_size_unaligned_and_out_of_window() {
    for offset in [0x00, 0x30, 0x100, 0x8000, 0xfff8] {
        for size in [0, 1, 2, 4, 16] {
            for access in [Access::Read, Access::Write] {
                let e = invalid(offset, size, access);
                if offset + size as u64 > WINDOW_LEN {
                    assert_eq!(e, ProtocolError::OutOfWindow { offset, size });
                } else {
                    assert_eq!(e, ProtocolError::WrongSize { offset, size });
                }
            }
        }
    }
    for offset in [0x01, 0x04, 0x101, 0x104, 0x8004, 0xfff0 + 3] {
        assert_eq!(invalid(offset, 8, Access::Read), ProtocolError::Unaligned { offset });
        assert_eq!(invalid(offset, 8, Access::Write), ProtocolError::Unaligned { offset });
    }
    for (offset, size) in [(0xfffc, 8), (0x1_0000, 8), (0x1_0000, 1), (u64::MAX, 8), (u64::MAX - 3, 8)] {
        assert_eq!(invalid(offset, size, Access::Read), ProtocolError::OutOfWindow { offset, size });
    }
    let kinds: std::collections::HashSet<_> = [
        invalid(0, 4, Access::Read),
        invalid(4, 8, Access::Read),
        invalid(0x1_0000, 8, Access::Read),
        invalid(0x40, 8, Access::Read),
        invalid(0, 8, Access::Write),
        invalid(0x100, 8, Access::Read),
    ]
    .iter()
    .map(ProtocolError::kind)
    .collect();
    assert_eq!(kinds.len(), 6, "each error kind has its own name");
}

#[test]
fn event_codes_are_contiguous_and_round_trip() {
    for (i, &code) in EventCode::ALL.iter().enumerate() {
        assert_eq!(code.code() as usize, i + 1);
        assert_eq!(EventCode::from_code(code.code()), Some(code));
    }
    assert_eq!(EventCode::ALL.len(), 15);
    for c in [0x00, 0x10, 0x11, 0x80, 0xff] {
        assert_eq!(EventCode::from_code(c), None);
    }
}

#[test]
fn event_encoding() {
    let ev = Event::with_pfn(EventCode::WaitEnd, 0, 0x12345, 512).unwrap();
    assert_eq!(ev.encode(), 0x0800_2000_0001_2345);
    assert_eq!((ev.pfn(), ev.detail()), (0x12345, 512));
    assert_eq!(Event::decode(0x0800_2000_0001_2345), Ok(ev));

    // The example in docs/fault-injection.md: wait-end of pfn 0x12345, ERESTARTSYS, from a hook.
    let doc = Event::decode(0x08ff_2000_0001_2345).unwrap();
    assert_eq!(
        (doc.code, doc.thread, doc.pfn(), doc.detail()),
        (EventCode::WaitEnd, THREAD_ANY, 0x12345, 512)
    );

    let marker = Event::new(EventCode::Marker, THREAD_ANY, (1 << 48) - 1).unwrap();
    assert_eq!(marker.encode(), 0x0eff_ffff_ffff_ffff);
    assert_eq!(Event::decode(marker.encode()), Ok(marker));

    for &code in EventCode::ALL {
        for thread in (0..MAX_THREADS).chain([THREAD_ANY]) {
            for arg in [0, 1, 0xdead_beef, (1 << 48) - 1] {
                let ev = Event::new(code, thread, arg).unwrap();
                assert_eq!(Event::decode(ev.encode()), Ok(ev));
            }
        }
    }

    assert_eq!(Event::decode(0), Err(ProtocolError::UnknownEvent { code: 0 }));
    assert_eq!(Event::decode(0x1000_0000_0000_0000), Err(ProtocolError::UnknownEvent { code: 0x10 }));
    assert_eq!(Event::decode(u64::MAX), Err(ProtocolError::UnknownEvent { code: 0xff }));
    assert_eq!(Event::decode(0x0108_0000_0000_0000), Err(ProtocolError::BadThread { thread: 8 }));
    assert_eq!(Event::decode(0x01fe_0000_0000_0000), Err(ProtocolError::BadThread { thread: 0xfe }));

    assert_eq!(Event::new(EventCode::PinTaken, 0, 1 << 48), None);
    assert_eq!(Event::new(EventCode::PinTaken, 8, 0), None);
    assert_eq!(Event::with_pfn(EventCode::PinTaken, 0, 1 << 36, 0), None);
    assert_eq!(Event::with_pfn(EventCode::PinTaken, 0, 0, 1 << 12), None);
    let max = Event::with_pfn(EventCode::PinTaken, 0, (1 << 36) - 1, (1 << 12) - 1).unwrap();
    assert_eq!(max.arg, (1 << 48) - 1);
}

#[test]
fn sync_outcome_values() {
    let codes: Vec<u64> = [
        SyncOutcome::Released,
        SyncOutcome::TimedOut,
        SyncOutcome::NotArmed,
        SyncOutcome::Unscheduled,
        SyncOutcome::Retry,
    ]
    .iter()
    .map(|o| o.code())
    .collect();
    assert_eq!(codes, [0, 1, 2, 3, 4]);
}

#[test]
fn kernel_points_have_unique_ids_names_and_sync_ids_and_read_back_in_schedules() {
    let mut ids = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    for &k in KernelPoint::ALL {
        assert!(ids.insert(k.id()) && names.insert(k.name()), "{k:?} repeats an id or a name");
        assert_eq!(KernelPoint::from_id(k.id()), Some(k));
        assert_eq!(KernelPoint::from_name(k.name()), Some(k));
        assert_eq!(KernelPoint::from_sync_id(k.sync_id()), Some(k));
        assert!(k.sync_id() < MAX_POINTS && k.id() < 32, "{k:?} must fit the sync area and a u32 tag mask");
        let step = Step::sync(3, k.sync_id());
        assert_eq!(step.to_string(), format!("3.k{}", k.name()));
        assert_eq!(step.to_string().parse::<Step>().unwrap(), step);
    }
    assert_eq!(KernelPoint::from_sync_id(KERNEL_POINT_BASE - 1), None, "user points stay user points");
    assert_eq!(Step::sync(0, 7).to_string(), "0.s7");
    assert!("0.knope".parse::<Step>().is_err());
    assert!(matches!("8.s1".parse::<Step>(), Err(FaultError::ThreadOutOfRange { thread: 8 })));
    assert!(matches!("0.s512".parse::<Step>(), Err(FaultError::PointOutOfRange { point: 512, .. })));
    assert!("9.s9999 200.s1".parse::<Schedule>().is_err());
    assert!("0.k".parse::<Step>().is_err());
    let s: Schedule = "0.s1 0.kbusy 1.s1 0.ksleep 1.e9 0.kwoken".parse().unwrap();
    assert_eq!(s.to_string(), "0.s1 0.kbusy 1.s1 0.ksleep 1.e9 0.kwoken");
    assert!(KernelPoint::Free.atomic() && !KernelPoint::Sleep.atomic());
    assert!(s.leaves_order_to_timing(), "1.e9 is not right after 1.s1");
    let user: Schedule = "0.s1 1.s1 0.s2 1.s2".parse().unwrap();
    assert!(!user.leaves_order_to_timing(), "sync steps only: every release waits for the last one");
    for (text, timing) in [
        ("0.s1 0.e7 1.s1 1.s2 0.s2", false),
        ("0.s1 1.s1 0.e7 1.s2 0.s2", true),
        ("0.e9 0.e7 0.e8", false),
        ("1.s1 0.e9", true),
        ("0.s1 0.kbusy 1.s1 0.ksleep 1.e9 0.kwoken", true),
    ] {
        assert_eq!(text.parse::<Schedule>().unwrap().leaves_order_to_timing(), timing, "{text}");
    }
}
