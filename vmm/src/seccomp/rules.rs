//! The system calls each thread kind may make (x86-64). The lists are what daxvmm's own code, the Rust
//! standard library and the C library (musl for the release binary, glibc for `cargo run` and tests)
//! issue on each thread's path; anything else traps.

use std::collections::BTreeMap;

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::ThreadKind;

/// The rules of one filter: system call number to the argument conditions of which one must hold (no
/// condition: any arguments).
pub(super) type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// KVM's ioctl type (`KVMIO`).
const KVMIO: u64 = 0xAE;
/// The terminal ioctls' type ('T'): TCGETS/TCSETS for the console's raw mode, FIOCLEX, TIOCGWINSZ.
const TTY_IOCTL: u64 = 0x54;

/// Every thread: memory, futexes, clocks, signal masks, the alternate signal stack, read, write,
/// close, exit.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_read,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The main thread sets up and tears down every run, so it may open, create, size and remove files,
/// map memory, create KVM objects and threads. What it may not do is what no VMM needs and an attacker
/// wants: start programs (execve, fork), use the network, trace or write other processes, mount,
/// change namespaces, load modules or BPF programs, reboot.
const MAIN: &[i64] = &[
    // Files: kernel, initrd, pmem backings, /proc/self, --out and repro files.
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    // Filters stack: a virtio thread's disk I/O must pass this filter too.
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_stat,
    libc::SYS_fstat,
    libc::SYS_lstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_fcntl,
    // A --disk image is locked (LOCK_EX, or LOCK_SH with ,ro) so two VMMs cannot write it at once.
    libc::SYS_flock,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_msync,
    libc::SYS_memfd_create,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rmdir,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_getdents64,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    // Waiting: the main loop's epoll (signalfd, timerfd, stdin, the event queue's eventfd), the
    // event queue's futex (in COMMON).
    libc::SYS_eventfd2,
    libc::SYS_signalfd4,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_pipe2,
    // Threads (clone is allowed below for threads only) and their signals: the vCPU kick is a tkill.
    libc::SYS_set_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_membarrier,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigaction,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    // Host facts for messages and limits.
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getrlimit,
    libc::SYS_prlimit64,
    // Threads drop their capabilities before they install their own filter (crate::privileges);
    // capset can only lower them once the bounding set is empty.
    libc::SYS_capget,
    libc::SYS_capset,
];

/// The rules for `kind`.
pub(super) fn rules(kind: ThreadKind) -> Result<Rules, seccompiler::BackendError> {
    let mut map = Rules::new();
    for &call in COMMON {
        map.insert(call, Vec::new());
    }
    match kind {
        ThreadKind::Vcpu => {
            // The NVDIMM flush hints write a region back to its file; the _DSM mailbox reads and writes
            // a DIMM's label file at an offset and makes each write durable.
            for call in [libc::SYS_msync, libc::SYS_pread64, libc::SYS_pwrite64, libc::SYS_fdatasync] {
                map.insert(call, Vec::new());
            }
            // KVM_RUN, KVM_GET_REGS, KVM_GET_MP_STATE...: any ioctl of KVM's type, nothing else.
            map.insert(libc::SYS_ioctl, vec![ioctl_of_type(KVMIO)?]);
        }
        ThreadKind::Virtio => {
            // The worker's event loop (epoll on the queue notification and the stop); a virtio-pmem
            // flush's msync of the region; a disk's positioned reads and writes between its image and
            // guest memory (preadv, pwritev) and a flush's fdatasync.
            for call in [
                libc::SYS_epoll_create1,
                libc::SYS_epoll_ctl,
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                // Rust's debug builds check a descriptor with F_GETFD before closing it (the loop's).
                libc::SYS_fcntl,
                libc::SYS_msync,
                libc::SYS_preadv,
                libc::SYS_pwritev,
                libc::SYS_fdatasync,
                // A discard punches a hole in the image.
                libc::SYS_fallocate,
            ] {
                map.insert(call, Vec::new());
            }
        }
        ThreadKind::Main => {
            for &call in MAIN {
                map.insert(call, Vec::new());
            }
            map.insert(libc::SYS_ioctl, vec![ioctl_of_type(KVMIO)?, ioctl_of_type(TTY_IOCTL)?]);
            // New threads only (pthread_create); a fork would escape the filter's intent.
            let thread = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
                libc::CLONE_THREAD as u64,
            )?;
            map.insert(libc::SYS_clone, vec![SeccompRule::new(vec![thread])?]);
            // clone3's flags are in memory a filter cannot read: allowed here, answered ENOSYS by
            // `clone3_unsupported`, so glibc falls back to clone.
            map.insert(libc::SYS_clone3, Vec::new());
            // Thread names, and what a thread installing its own filter needs (no_new_privs, then
            // seccomp(SECCOMP_SET_MODE_FILTER), which can only narrow what is allowed).
            map.insert(
                libc::SYS_prctl,
                vec![arg0_is(libc::PR_SET_NAME as u64)?, arg0_is(libc::PR_SET_NO_NEW_PRIVS as u64)?],
            );
            map.insert(libc::SYS_seccomp, vec![arg0_is(u64::from(libc::SECCOMP_SET_MODE_FILTER))?]);
        }
    }
    Ok(map)
}

/// The filter installed beside the main one: clone3 fails with ENOSYS, everything else is left to the
/// other filter.
pub(super) fn clone3_unsupported() -> Rules {
    Rules::from([(libc::SYS_clone3, Vec::new())])
}

/// An ioctl whose request number has type `ty` (bits 8-15).
fn ioctl_of_type(ty: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    let cond = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(0xff00), ty << 8)?;
    SeccompRule::new(vec![cond])
}

fn arg0_is(value: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_main_thread_may_lock_a_disk_image() {
        // Disk::open runs after the main filter is in place; without flock every --disk run stopped.
        assert!(rules(ThreadKind::Main).unwrap().contains_key(&libc::SYS_flock));
    }

    #[test]
    fn what_a_vcpu_or_virtio_thread_may_call_the_main_filter_allows() {
        // The main thread's filter is inherited by every thread it creates and the thread's own filter
        // is stacked on it, so a call missing from the main list traps although the thread's list has it.
        let main = rules(ThreadKind::Main).unwrap();
        for kind in [ThreadKind::Vcpu, ThreadKind::Virtio] {
            for call in rules(kind).unwrap().keys() {
                assert!(main.contains_key(call), "system call {call} of {} threads", kind.name());
            }
        }
    }
}
