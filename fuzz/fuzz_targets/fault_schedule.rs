//! Schedule text (the form repro files carry) from arbitrary bytes: parsing must never panic, and what
//! parses must print back to text that parses to the same schedule.
#![no_main]

use daxvmm_devices::fault::Schedule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(s) = text.parse::<Schedule>() {
        let again: Schedule = s.to_string().parse().expect("a printed schedule parses");
        assert_eq!(again, s, "schedule text round trip");
    }
});
