//! `daxvmm-dax-check`: DAX probes for guest test scripts, the pmem bandwidth benchmark (see
//! daxvmm_guest_tools::dax) and the block benchmark's O_DIRECT I/O (daxvmm_guest_tools::blk).
//! Exit codes: 0 success / yes, 1 failure / no, 2 usage error.

use std::process::ExitCode;

use daxvmm_guest_tools::blk::{self, BlkArgs, BlkError};
use daxvmm_guest_tools::dax::{bandwidth, statx_dax, touch, BwTarget, DaxError};
use daxvmm_guest_tools::fs_error::FsErrorWatch;
use daxvmm_guest_tools::{devdax, poison_load};
use thiserror::Error;

const USAGE: &str = "usage: daxvmm-dax-check statx FILE            exit 0 if FILE has STATX_ATTR_DAX
       daxvmm-dax-check touch FILE MIB [--sync] create FILE, map it (MAP_SYNC), write every page
       daxvmm-dax-check bw FILE|--anon|--hugetlb MIB [PASSES]   memcpy bandwidth (MB/s)
       daxvmm-dax-check devdax DEVICE MARKER    exit 0 if DEVICE maps 2 MiB with one fault and refuses 4 KiB
       daxvmm-dax-check blk DEVICE MIB [RAND_OPS]   O_DIRECT sequential 1 MiB and random 4 KiB I/O
                                                over DEVICE's first MIB MiB (overwrites it!)
       daxvmm-dax-check poison-load FILE        exit 0 if a process that maps FILE's first page dies of
                                                SIGBUS BUS_MCEERR_AR when the page is poisoned under it
                                                (through /dev/ndctl0's error injection) and read again;
                                                says whether the filesystem reported an error (fanotify)";

/// How long poison-load waits for the filesystem's error event (the kernel reports it from a worker).
const FS_ERROR_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a check gave no answer (exit code 1).
#[derive(Debug, Error)]
enum CheckError {
    /// The probe itself failed.
    #[error(transparent)]
    Dax(#[from] DaxError),
    /// The block measurement failed.
    #[error(transparent)]
    Blk(#[from] BlkError),
    /// The poisoning process could not be started.
    #[error("poison-load: {0}")]
    PoisonLoad(#[from] std::io::Error),
    /// MIB was not a positive whole number.
    #[error("bad size '{0}': give a positive number of MiB")]
    Size(String),
    /// MIB or PASSES was not a positive whole number.
    #[error("bad size '{size}' or pass count: give positive whole numbers")]
    SizeOrPasses {
        /// The MIB argument given.
        size: String,
    },
}

// A command-line tool: its results go to stdout, diagnostics to stderr.
#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mib = |s: &str| s.parse::<usize>().ok().filter(|&m| m > 0).map(|m| m << 20);
    let result: Result<bool, CheckError> = match args.as_slice() {
        ["statx", file] => statx_dax(file).map_err(CheckError::from).inspect(|&dax| {
            println!("{file}: dax={}", u8::from(dax));
        }),
        ["touch", file, size, rest @ ..] if rest.is_empty() || rest == ["--sync"] => match mib(size) {
            Some(len) => touch(file, len, !rest.is_empty()).map_err(CheckError::from).map(|()| {
                println!(
                    "{file}: {size} MiB mapped{} and written",
                    if rest.is_empty() { "" } else { " MAP_SYNC" }
                );
                true
            }),
            None => Err(CheckError::Size(size.to_string())),
        },
        ["devdax", dev, marker] => devdax::probe(dev, marker.as_bytes()).map_err(CheckError::from).map(|p| {
            println!(
                "{dev}: 2 MiB written with {} fault(s); a 4 KiB mapping was {}",
                p.faults,
                if p.small_map_refused { "refused" } else { "accepted" }
            );
            p.faults == 1 && p.small_map_refused
        }),
        ["bw", target, size, rest @ ..] if rest.len() <= 1 => {
            let passes = rest.first().map_or(Some(3), |p| p.parse().ok());
            let target = match *target {
                "--anon" => BwTarget::Anon,
                "--hugetlb" => BwTarget::Hugetlb,
                f => BwTarget::File(f),
            };
            match (mib(size), passes) {
                (Some(len), Some(passes)) => {
                    bandwidth(target, len, passes).map_err(CheckError::from).map(|bw| {
                        println!("write_MBps={:.0} read_MBps={:.0}", bw.write, bw.read);
                        true
                    })
                }
                _ => Err(CheckError::SizeOrPasses { size: size.to_string() }),
            }
        }
        ["poison-load", file] => {
            let watch = FsErrorWatch::new(file);
            poison_load::run(file).map_err(CheckError::from).map(|out| {
                if let Some(phys) = out.phys {
                    println!("poison-load: {file}: page at physical {phys:#x} (pfn {:#x})", phys >> 12);
                }
                println!("poison-load: the process mapping {file} {}", out.end.describe());
                match watch.and_then(|w| w.wait(FS_ERROR_WAIT)) {
                    Ok(events) if events.is_empty() => println!("poison-load: no filesystem error event"),
                    Ok(events) => println!(
                        "poison-load: the filesystem reported {} error event(s), errno {}",
                        events.len(),
                        events[0].error
                    ),
                    Err(e) => println!("poison-load: filesystem error events not watched: {e}"),
                }
                out.end == poison_load::End::ArAtPage
            })
        }
        ["blk", rest @ ..] => match BlkArgs::parse(rest) {
            Some(args) => args.and_then(|a| blk::run(&a)).map_err(CheckError::from).map(|figures| {
                println!("{figures}");
                true
            }),
            None => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: daxvmm-dax-check: {e}");
            ExitCode::from(1)
        }
    }
}
