//! The fuzz check: random ioctl numbers and arguments (biased towards the driver's own commands and
//! towards pins of memory this program can afford to have written), then a sanity check that the driver
//! still works.

use super::{pin, q_str, query, CheckError, IoctlResult, PIN_BIAS};
use crate::abi::{DAX_RC_HOOK_STATS, DAX_RC_PIN, DAX_RC_QUERY, DAX_RC_UNPIN, DAX_RC_WRITE_THROUGH_PIN};
use crate::sys::{anon, ename, map_file, Dev, TFile, PAGE};
use crate::tap::{check, diag, Res};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `Err` when it could not set up or run the ioctls; the check then fails with that error.
pub fn fuzz(dir: &str, iters: usize) -> Result<Res, CheckError> {
    let d = Dev::open()?;
    // Pins only ever target these scratch areas (or addresses nothing is mapped at), so writes through
    // pins cannot corrupt this program.
    let scratch = anon(64 * PAGE, libc::PROT_READ | libc::PROT_WRITE)?;
    scratch.touch();
    let f = TFile::create(dir, "fuzz", 16 * PAGE)?;
    let fm = map_file(f.fd, 16 * PAGE)?;
    fm.touch();
    let cmds = [DAX_RC_PIN, DAX_RC_UNPIN, DAX_RC_QUERY, DAX_RC_WRITE_THROUGH_PIN, DAX_RC_HOOK_STATS];
    // A new seed each run (printed, so a failing run can be replayed with DAXVMM_FUZZ_SEED).
    let seed =
        std::env::var("DAXVMM_FUZZ_SEED").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            t.as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15
        }) | 1;
    diag(&format!("fuzz seed {seed} (DAXVMM_FUZZ_SEED)"));
    let mut rng = Rng(seed);
    let (mut oks, mut errs) = (0usize, std::collections::BTreeMap::<i32, usize>::new());
    let mut buf = [0u64; 16];
    for _ in 0..iters {
        let cmd = match rng.below(10) {
            0..=6 => cmds[rng.below(5) as usize],
            7 => (rng.next() as u32 & 0xc0ff_00ff) | (0xDA << 8),
            8 => rng.next() as u32 & 0x3fff_ffff | ((rng.below(4) as u32) << 30),
            _ => rng.next() as u32,
        };
        // Skip numbers the VFS handles itself before the driver sees them (FIOCLEX and friends, 'T'/'f'/'X').
        let ty = (cmd >> 8) & 0xff;
        if ty == b'T' as u32 || ty == b'f' as u32 || ty == b'X' as u32 || ty == 0x94 || ty == 0x15 {
            continue;
        }
        for w in buf.iter_mut() {
            *w = match rng.below(4) {
                0 => rng.next(),
                1 => rng.below(8),
                2 => rng.below(5 * PAGE as u64),
                _ => 0,
            };
        }
        if cmd == DAX_RC_PIN {
            // addr: a scratch page, a DAX file page, or nothing (unmapped low/high addresses)
            buf[0] = match rng.below(4) {
                0 => (scratch.addr() + PAGE * rng.below(64) as usize) as u64,
                1 => (fm.addr() + PAGE * rng.below(16) as usize) as u64,
                2 => 0x1000_0000_0000 + rng.below(1 << 20) * PAGE as u64,
                _ => rng.next() | (1 << 63),
            };
            buf[1] = PAGE as u64 * rng.below(20);
            buf[2] &= 0xffff_ffff_0000_0007;
            if rng.below(4) == 0 {
                buf[2] = 0;
            }
        }
        let arg = match rng.below(8) {
            0 => rng.below(0x10000) as usize,
            1 => rng.next() as usize | (1 << 63),
            _ => buf.as_mut_ptr() as usize,
        };
        match d.raw(cmd, arg) {
            Ok(_) => oks += 1,
            Err(e) => *errs.entry(e).or_default() += 1,
        }
    }
    diag(&format!(
        "fuzz: {iters} ioctls, {oks} succeeded, errors: {}",
        errs.iter().map(|(e, n)| format!("{} x{n}", ename(*e))).collect::<Vec<_>>().join(", ")
    ));
    drop(d);
    // The driver still works after the fuzzed file is closed (all its pins released).
    let d = Dev::open()?;
    let st = d.stats().ioctl("HOOK_STATS after the fuzz")?;
    let p = pin(&d, fm.addr(), PAGE, 0)?;
    let q = query(&d, p.handle, 0)?;
    Ok(check(q.ref_count == 1 + PIN_BIAS && st.hooks_registered == 1, || {
        format!("after fuzz: {}", q_str(&q))
    }))
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn rng_is_xorshift64_star() {
        // Reference values of xorshift64* (Vigna) seeded with 1.
        let mut r = Rng(1);
        assert_eq!(r.next(), 0x47e4_ce4b_896c_dd1d);
        assert_eq!(r.next(), 0xabcf_a6a8_e079_651d);
        assert_eq!(r.next(), 0xb9d1_0d8f_eb73_1f57);
    }

    #[test]
    fn rng_replays_a_seed_and_stays_below() {
        let (mut a, mut b) = (Rng(0x9e37_79b9_7f4a_7c15), Rng(0x9e37_79b9_7f4a_7c15));
        for n in 1..2000 {
            let x = a.below(n);
            assert_eq!(x, b.below(n));
            assert!(x < n);
        }
    }
}
