//! Writing one byte to an x86 I/O port from user space: `ioperm` + `outb`, or `/dev/port` when the kernel
//! has no ioperm (built without CONFIG_X86_IOPL_IOPERM).

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;

/// Why a port write failed.
#[derive(Debug)]
pub enum PortError {
    /// The caller lacks CAP_SYS_RAWIO (is not root).
    NotRoot { port: u16 },
    /// Neither `ioperm` nor `/dev/port` is available in this kernel.
    Unsupported { port: u16, ioperm: io::Error, devport: io::Error },
    /// Any other failure of `ioperm` or `/dev/port`.
    Io { port: u16, what: &'static str, err: io::Error },
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::NotRoot { port } => {
                write!(f, "no permission to write port {port:#x}: port I/O needs root (CAP_SYS_RAWIO)")
            }
            PortError::Unsupported { port, ioperm, devport } => write!(
                f,
                "cannot write port {port:#x}: ioperm failed ({ioperm}; kernel built without \
                 CONFIG_X86_IOPL_IOPERM?) and /dev/port failed ({devport}; CONFIG_DEVPORT?)"
            ),
            PortError::Io { port, what, err } => {
                write!(f, "cannot write port {port:#x}: {what}: {err}")
            }
        }
    }
}

impl std::error::Error for PortError {}

/// Writes `value` to I/O port `port`.
pub fn write_port(port: u16, value: u8) -> Result<(), PortError> {
    // SAFETY: ioperm only changes this thread's I/O permission bitmap; it touches no memory of ours.
    let rc = unsafe { libc::ioperm(libc::c_ulong::from(port), 1, 1) };
    if rc == 0 {
        // SAFETY: ioperm granted access to exactly this port, so `out` cannot fault. A write to the
        // daxvmm debug ports has no effect on this process's memory; the VMM records the byte.
        unsafe {
            std::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
        }
        return Ok(());
    }
    let ioperm_err = io::Error::last_os_error();
    match ioperm_err.raw_os_error() {
        Some(libc::EPERM) => Err(PortError::NotRoot { port }),
        Some(libc::ENOSYS) => write_devport(port, value).map_err(|devport| match devport.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => PortError::NotRoot { port },
            _ => PortError::Unsupported { port, ioperm: ioperm_err, devport },
        }),
        _ => Err(PortError::Io { port, what: "ioperm", err: ioperm_err }),
    }
}

/// Writes `value` to `port` again and again; returns only when a write fails.
pub fn flood_port(port: u16, value: u8) -> PortError {
    if let Err(e) = write_port(port, value) {
        return e;
    }
    // The first write worked, through ioperm or, without it, /dev/port (then this ioperm fails again).
    // SAFETY: ioperm only changes this thread's I/O permission bitmap; it touches no memory of ours.
    if unsafe { libc::ioperm(libc::c_ulong::from(port), 1, 1) } == 0 {
        loop {
            // SAFETY: ioperm granted access to exactly this port, so `out` cannot fault; the write does
            // not touch this process's memory.
            unsafe {
                std::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
            }
        }
    }
    loop {
        if let Err(err) = write_devport(port, value) {
            return PortError::Io { port, what: "/dev/port", err };
        }
    }
}

/// The fallback: `/dev/port` maps file offsets to port numbers.
fn write_devport(port: u16, value: u8) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open("/dev/port")?;
    let n = f.write_at(&[value], u64::from(port))?;
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, "short write to /dev/port"))
    }
}
