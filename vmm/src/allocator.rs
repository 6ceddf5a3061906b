//! The daxvmm binary's memory allocator: dlmalloc instead of the C library's.
//!
//! daxvmm ships as a static musl binary, and musl's allocator gives a block of a few KiB a mapping of
//! its own when few blocks of that size are in use, and unmaps it when the block is freed. A 1 MiB
//! virtio-blk request allocates several such blocks (its descriptors, data segments and iovecs), so the
//! disk thread called `munmap` for every request. An unmap in a process whose vCPU threads are running
//! interrupts their CPUs to flush the TLB (a VM exit when they are in the guest) and waits for them.
//! dlmalloc keeps freed blocks for reuse and gives memory back to the kernel only when more than 2 MiB
//! at the top of its heap, or a whole segment of it, is free.

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[cfg(test)]
mod tests {
    use std::hint::black_box;

    /// The calling thread's minor page faults so far.
    fn minor_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes one struct rusage to the pointer, which points to room for one.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD): {}", std::io::Error::last_os_error());
        // SAFETY: zeroed is a valid rusage, and getrusage filled it in.
        unsafe { usage.assume_init() }.ru_minflt
    }

    /// The heap blocks of one 1 MiB virtio-blk request on 256 scattered pages, with the element sizes
    /// of the real ones: the chain's 258 descriptors pushed one by one (so the vector grows), its data
    /// segments, the guest memory slices and their guards, and the iovecs.
    fn one_request() {
        let mut descs = Vec::new();
        for i in 0..258u64 {
            descs.push([i, i << 12]);
        }
        let segments: Vec<[u64; 2]> = descs[1..257].to_vec();
        let slices: Vec<[u64; 3]> = segments.iter().map(|s| [s[0], s[1], 4096]).collect();
        let guards: Vec<[u64; 3]> = slices.clone();
        let iov: Vec<[u64; 2]> = guards.iter().map(|g| [g[1], g[2]]).collect();
        black_box((descs, segments, slices, guards, iov));
    }

    /// Fails under musl's allocator: every request then maps fresh pages, which fault when written.
    #[test]
    fn request_sized_blocks_are_reused_not_mapped_again() {
        let faults = std::thread::spawn(|| {
            one_request();
            let before = minor_faults();
            for _ in 0..500 {
                one_request();
            }
            minor_faults() - before
        })
        .join()
        .expect("the allocating thread ran to its end");
        assert!(faults < 50, "500 requests' worth of allocations caused {faults} minor page faults");
    }
}
