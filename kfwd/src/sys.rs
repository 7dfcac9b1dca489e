//! The bpf(2) system call, for the handful of commands this crate uses.
//!
//! Each command's attribute block is a `#[repr(C)]` prefix of the kernel's
//! `union bpf_attr`, padded with zeros (the kernel accepts a shorter block and requires
//! unused trailing bytes to be zero). File descriptors come back as [`OwnedFd`]s, so a
//! map, a program or a tcx link is released when its owner drops it — a crashed
//! voxgate leaves nothing attached.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::asm::Insn;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_CREATE: libc::c_long = 28;

pub const MAP_TYPE_HASH: u32 = 1;
pub const MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_TCX_INGRESS` (Linux 6.6): tc ingress hook with multi-program links.
pub const ATTACH_TCX_INGRESS: u32 = 46;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let size = std::mem::size_of::<T>();
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` block of `size`
    // bytes laid out as the prefix of `union bpf_attr` for `cmd`; every pointer inside
    // it points to memory that outlives this call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd(r: libc::c_long) -> io::Result<OwnedFd> {
    let raw = RawFd::try_from(r).map_err(|_| io::Error::other("bpf returned a bad fd"))?;
    // SAFETY: the kernel just returned `raw` as a new file descriptor owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn name16(name: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    for (d, s) in n.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    n
}

#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    _pad: [u32; 9],
}

pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut a = MapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_name: name16(name),
        ..MapCreate::default()
    };
    fd(bpf(BPF_MAP_CREATE, &mut a)?)
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn elem(map: &OwnedFd, key: *const u8, value: *const u8, flags: u64) -> MapElem {
    MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key as u64,
        value: value as u64,
        flags,
    }
}

/// Creates or replaces `key`'s value.
pub fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut a = elem(map, key.as_ptr(), value.as_ptr(), 0);
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// Copies `key`'s value into `value` (whose length must be the map's value size, or
/// value size × possible CPUs for a per-CPU map); `false` if there is none.
pub fn map_lookup(map: &OwnedFd, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut a = elem(map, key.as_ptr(), value.as_mut_ptr(), 0);
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut a) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes `key`; `false` if it was not there.
pub fn map_delete(map: &OwnedFd, key: &[u8]) -> io::Result<bool> {
    let mut a = elem(map, key.as_ptr(), std::ptr::null(), 0);
    match bpf(BPF_MAP_DELETE_ELEM, &mut a) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _pad: [u64; 7],
}

/// Loads a program; on a verifier rejection the error carries the verifier's log.
pub fn prog_load(
    prog_type: u32,
    attach_type: u32,
    insns: &[Insn],
    name: &str,
) -> io::Result<OwnedFd> {
    let raw: Vec<u64> = insns.iter().map(|i| i.encode()).collect();
    let license = b"GPL\0";
    let load = |log: &mut [u8]| {
        let mut a = ProgLoad {
            prog_type,
            insn_cnt: u32::try_from(raw.len()).unwrap_or(u32::MAX),
            insns: raw.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: u32::try_from(log.len()).unwrap_or(0),
            log_buf: log.as_mut_ptr() as u64,
            prog_name: name16(name),
            expected_attach_type: attach_type,
            ..ProgLoad::default()
        };
        bpf(BPF_PROG_LOAD, &mut a)
    };
    match load(&mut []) {
        Ok(r) => fd(r),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            // Load again with the verifier's log, to say why.
            let mut log = vec![0u8; 1 << 20];
            let again = load(&mut log);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n");
            match again {
                Ok(r) => fd(r),
                Err(_) => Err(io::Error::new(e.kind(), format!("{e}; verifier: {tail}"))),
            }
        }
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad0: u32,
    expected_revision: u64,
    _pad1: [u8; 32],
}

/// Attaches `prog` at the end of `ifindex`'s tcx chain of `attach_type`.
pub fn tcx_attach(prog: &OwnedFd, ifindex: u32, attach_type: u32) -> io::Result<OwnedFd> {
    let mut a = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        ..LinkCreate::default()
    };
    fd(bpf(BPF_LINK_CREATE, &mut a)?)
}

#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs `prog` once on a copy of `packet` (`BPF_PROG_TEST_RUN`): returns the program's
/// return value and the packet as the program left it.
pub fn test_run(prog: &OwnedFd, packet: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; packet.len() + 256];
    let mut a = TestRun {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: u32::try_from(packet.len()).unwrap_or(0),
        data_size_out: u32::try_from(out.len()).unwrap_or(0),
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRun::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut a)?;
    out.truncate(a.data_size_out as usize);
    Ok((a.retval, out))
}

/// Number of possible CPUs (the per-CPU map value stride), from
/// `/sys/devices/system/cpu/possible` ("0-3", "0").
pub fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0usize;
    for part in s.trim().split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: usize = lo.parse().map_err(io::Error::other)?;
        let hi: usize = hi.parse().map_err(io::Error::other)?;
        n = n.max(hi + 1).max(lo + 1);
    }
    Ok(n)
}

#[repr(C)]
#[derive(Default)]
struct GetFdById {
    id: u32,
    next_id: u32,
    open_flags: u32,
    _pad: u32,
}

/// Whether a BPF program with this id is still loaded anywhere on the machine (for
/// checking that a dead process left nothing behind).
pub fn prog_exists(id: u32) -> io::Result<bool> {
    let mut a = GetFdById {
        id,
        ..GetFdById::default()
    };
    match bpf(BPF_PROG_GET_FD_BY_ID, &mut a) {
        Ok(r) => {
            drop(fd(r)?);
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
