//! The UDP hot loop of `tunnelwatch receive`.
//!
//! [`UdpReceiver`] starts a reader thread (no GIL) that waits for the receiver's UDP
//! socket with `poll` and reads it with `recvmmsg` (up to `batch` datagrams a system
//! call) into segments, buffered up to `max_buffer_bytes` for the event loop, which an
//! eventfd (`ready_fd`, watched with `loop.add_reader`) wakes. So the datagrams leave the
//! kernel's socket buffer (which `net.core.rmem_max` may keep small) as they come, however
//! long the event loop is busy elsewhere. `drain`, on the event loop, then does for each
//! datagram what `Receiver.on_datagram` and `RecordMaker.make` do on the Python path:
//!
//! - the source: its `host` and `ip:port` header text and whether `--allow` admits it are
//!   asked of Python once per source address (`resolve`), then remembered;
//! - `--rate-limit`: the same token bucket per host as `protection.RateLimiter`;
//! - the message: trailing CR, LF and NUL dropped, cut to `--max-message-bytes`
//!   (counted), empty ones dropped (counted);
//! - the device key, where `record.DeviceFinder` would read it with `header.fast_prefix`
//!   (one ASCII line with a message tag and a header of a shape the fast path reads):
//!   [`Keyer`]; every other datagram is handed back to Python, whose `DeviceFinder` keys
//!   it;
//! - the record: an instance of the Python `Record` class (`key`, `value`, `headers`)
//!   whose headers tuple is shared by the records of one source in one call (they have
//!   the same `received_at`: the time of the call).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem::{size_of, zeroed};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memchr::memchr;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple, PyType};

use crate::{fast_prefix, find_tag, FnvBuild, HeaderCfg, HeaderMemo, MAX_LINE};

/// A slot holds any UDP datagram (IPv4 and IPv6 payloads are below 64 KiB).
const SLOT_BYTES: usize = 65536;
const KEYS_MAX: usize = 100_000;
/// `sockaddr_in6` is the largest source address a UDP socket gives.
const ADDR_KEY: usize = 28;

// -- the device key ----------------------------------------------------------------------

/// What [`Keyer::key`] found.
pub(crate) enum Key<'py> {
    /// The device named in the header.
    Device(Bound<'py, PyBytes>),
    /// The header names no device: the source address is the key.
    Source,
    /// Not for the fast path: Python's `DeviceFinder` decides.
    Python,
}

/// The device key of a message, as `record.DeviceFinder.device_of` finds it through
/// `fast_prefix`; [`Key::Python`] wherever `DeviceFinder` would go another way.
pub(crate) struct Keyer {
    cfg: HeaderCfg,
    memo: HeaderMemo,
    keys: HashMap<Vec<u8>, Py<PyBytes>, FnvBuild>,
}

impl Keyer {
    fn new(fast: &str, fast_bare: &str, tz_offset_minutes: Py<PyAny>) -> PyResult<Self> {
        let cfg = HeaderCfg::new(fast, fast_bare, tz_offset_minutes)?;
        let memo = cfg.memo();
        Ok(Keyer { cfg, memo, keys: HashMap::default() })
    }

    pub(crate) fn key<'py>(&mut self, py: Python<'py>, value: &[u8]) -> PyResult<Key<'py>> {
        // DeviceFinder: text.rstrip("\r\n"); continuation lines are joined (Python's);
        // only pure ASCII here (no decoding question, Python's \s and \d are ASCII's).
        let mut end = value.len();
        while end > 0 && matches!(value[end - 1], b'\r' | b'\n') {
            end -= 1;
        }
        let line = &value[..end.min(MAX_LINE)];
        if !value[..end].is_ascii() || memchr(b'\n', &value[..end]).is_some() {
            return Ok(Key::Python);
        }
        let Some(tag) = find_tag(line) else {
            return Ok(Key::Python); // untagged: the full Parser decides
        };
        let Some(h) = fast_prefix(py, &self.cfg, &mut self.memo, &line[..tag.start])? else {
            return Ok(Key::Python); // scan_prefix decides
        };
        // `header.host or header.origin or source`
        match h.host.filter(|d| !d.is_empty()).or(h.origin.filter(|d| !d.is_empty())) {
            None => Ok(Key::Source),
            Some(name) => Ok(Key::Device(self.bytes(py, name))),
        }
    }

    fn bytes<'py>(&mut self, py: Python<'py>, name: &[u8]) -> Bound<'py, PyBytes> {
        if let Some(b) = self.keys.get(name) {
            return b.bind(py).clone();
        }
        let b = PyBytes::new(py, name);
        if self.keys.len() >= KEYS_MAX {
            self.keys.clear();
        }
        self.keys.insert(name.to_vec(), b.clone().unbind());
        b
    }
}

/// Test hook: the device keys of messages, as the receiver's fast path finds them.
#[pyclass(module = "tunnelwatch_native")]
pub(crate) struct DeviceKeys {
    keyer: Keyer,
}

#[pymethods]
impl DeviceKeys {
    #[new]
    #[pyo3(signature = (*, fast, fast_bare, tz_offset_minutes))]
    fn new(fast: &str, fast_bare: &str, tz_offset_minutes: Py<PyAny>) -> PyResult<Self> {
        Ok(DeviceKeys { keyer: Keyer::new(fast, fast_bare, tz_offset_minutes)? })
    }

    /// The key of `value` (a message as the receiver keeps it): the device, `b""` when
    /// the header names none (the source address is the key), or None when Python's
    /// `DeviceFinder` decides.
    fn key<'py>(&mut self, py: Python<'py>, value: &[u8]) -> PyResult<Option<Bound<'py, PyBytes>>> {
        Ok(match self.keyer.key(py, value)? {
            Key::Device(b) => Some(b),
            Key::Source => Some(PyBytes::new(py, b"")),
            Key::Python => None,
        })
    }
}

// -- sources -----------------------------------------------------------------------------

/// What the receiver knows of one source address.
struct Source {
    host: Py<PyString>,
    /// The host's text: the rate limiter's bucket.
    host_key: Box<[u8]>,
    /// The `source` header value (`ip:port`).
    source: Py<PyBytes>,
    /// The key of a message naming no device: the host.
    fallback: Py<PyBytes>,
    allowed: bool,
    /// The headers tuple for the `received_at` object it was made with.
    headers: Option<(Py<PyBytes>, Py<PyTuple>)>,
}

type AddrKey = [u8; ADDR_KEY];

/// The arguments of `resolve` for a source address: family, address bytes, port,
/// flowinfo, scope id (as Python's socket module gives them).
fn addr_parts(key: &AddrKey) -> (i32, Vec<u8>, u16, u32, u32) {
    // SAFETY: an all-zero sockaddr_storage is valid; it is larger than a key.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    // SAFETY: as above; the key holds the start of the sockaddr the kernel wrote.
    unsafe {
        std::ptr::copy_nonoverlapping(
            key.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            ADDR_KEY,
        );
    }
    let name = &storage;
    let family = i32::from(name.ss_family);
    // SAFETY: the kernel wrote a sockaddr of `family` into the storage, which is large
    // enough and aligned for every sockaddr type.
    unsafe {
        match family {
            libc::AF_INET => {
                let sa = &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                (family, sa.sin_addr.s_addr.to_ne_bytes().to_vec(), u16::from_be(sa.sin_port), 0, 0)
            }
            libc::AF_INET6 => {
                let sa = &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                (
                    family,
                    sa.sin6_addr.s6_addr.to_vec(),
                    u16::from_be(sa.sin6_port),
                    u32::from_be(sa.sin6_flowinfo),
                    sa.sin6_scope_id,
                )
            }
            _ => (family, Vec::new(), 0, 0, 0),
        }
    }
}

fn addr_key(name: &libc::sockaddr_storage, len: u32) -> AddrKey {
    let mut k = [0u8; ADDR_KEY];
    let n = (len as usize).min(ADDR_KEY);
    // SAFETY: the storage is larger than ADDR_KEY bytes.
    let raw = unsafe { std::slice::from_raw_parts((name as *const libc::sockaddr_storage).cast::<u8>(), n) };
    k[..n].copy_from_slice(raw);
    k
}

// -- the socket --------------------------------------------------------------------------

/// `recvmmsg` buffers: `n` slots of [`SLOT_BYTES`] and their source addresses.
struct Slots {
    n: usize,
    buf: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iov` and `msgs` point into `buf` and `names`, which this
// struct owns; they are rewritten before every `recvmmsg`, and the struct is only used by
// the reader thread that owns it.
unsafe impl Send for Slots {}

impl Slots {
    fn new(n: usize) -> Self {
        let mut slots = Slots {
            n,
            buf: vec![0u8; n * SLOT_BYTES],
            // SAFETY: an all-zero sockaddr_storage is valid.
            names: vec![unsafe { zeroed() }; n],
            iov: Vec::with_capacity(n),
            msgs: Vec::with_capacity(n),
        };
        // The headers point into the buffers once and for all: the vectors never grow (their
        // heap blocks stay put when the struct moves).
        let base = slots.buf.as_mut_ptr();
        for i in 0..n {
            // SAFETY: slot i lies within `buf`.
            let p = unsafe { base.add(i * SLOT_BYTES) };
            slots.iov.push(libc::iovec { iov_base: p.cast(), iov_len: SLOT_BYTES });
        }
        for i in 0..n {
            // SAFETY: an all-zero mmsghdr is valid; the fields set point into our buffers.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_name = (&mut slots.names[i] as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_iov = &mut slots.iov[i];
            m.msg_hdr.msg_iovlen = 1;
            slots.msgs.push(m);
        }
        slots
    }

    /// Up to `want` datagrams, without blocking.
    fn recv(&mut self, fd: i32, want: usize) -> io::Result<usize> {
        let want = want.min(self.n);
        for m in &mut self.msgs[..want] {
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: `msgs` holds `want` headers whose buffers stay valid during the call.
        let r = unsafe {
            libc::recvmmsg(fd, self.msgs.as_mut_ptr(), want as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Datagram `i` of the last `recv`: its bytes (at most a slot) and source address.
    fn get(&self, i: usize) -> (&[u8], AddrKey) {
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(SLOT_BYTES);
        let start = i * SLOT_BYTES;
        (&self.buf[start..start + len], addr_key(&self.names[i], m.msg_hdr.msg_namelen))
    }
}

/// Leave `obj` to reference counting alone: the cyclic GC need not follow a tuple that
/// holds only bytes, str and such tuples (it would untrack it itself on its first pass,
/// see `_PyTuple_MaybeUntrack`); a queue of records then costs the collections nothing.
fn untrack(obj: &Bound<'_, PyAny>) {
    // SAFETY: obj is a live, GC-tracked object (a tuple) whose items cannot form a cycle.
    unsafe { ffi::PyObject_GC_UnTrack(obj.as_ptr().cast()) }
}

/// A `Record` (a tuple subclass without fields of its own) made of three objects: bytes,
/// bytes and a tuple of (str, bytes) tuples (untracked, see [`untrack`]).
fn make_record<'py>(
    py: Python<'py>,
    cls: &Bound<'py, PyType>,
    key: Bound<'py, PyAny>,
    value: Bound<'py, PyAny>,
    headers: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: what `tuple.__new__(cls, ...)` does for a tuple subclass: allocate with the
    // type's allocator (PyType_GenericAlloc, checked at construction) and set the items of
    // the new tuple, which nothing else references yet (PyTuple_SetItem steals them).
    unsafe {
        let obj = ffi::PyType_GenericAlloc(cls.as_type_ptr(), 3);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        let obj = Bound::from_owned_ptr(py, obj);
        for (i, item) in [key, value, headers].into_iter().enumerate() {
            if ffi::PyTuple_SetItem(obj.as_ptr(), i as ffi::Py_ssize_t, item.into_ptr()) != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        untrack(&obj);
        Ok(obj)
    }
}

/// Counts of one drain.
#[derive(Default)]
struct Drops {
    not_allowed: u64,
    rate_limited: u64,
    truncated: u64,
    empty: u64,
}

/// `protection.RateLimiter`: a token bucket per host.
struct Limiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<Box<[u8]>, (f64, f64), FnvBuild>,
}

impl Limiter {
    /// `RateLimiter.allow`.
    fn allow(&mut self, host: &[u8], now: f64) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if let Some(b) = self.buckets.get_mut(host) {
            let tokens = b.0 + (now - b.1) * self.rate;
            b.0 = if tokens < self.burst { tokens } else { self.burst };
            b.1 = now;
            if b.0 >= 1.0 {
                b.0 -= 1.0;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= self.max_sources {
            // RateLimiter._prune: forget the buckets full again, or all of them.
            let refill = self.burst / self.rate;
            self.buckets.retain(|_, b| now - b.1 < refill);
            if self.buckets.len() >= self.max_sources {
                self.buckets.clear();
            }
        }
        let mut b = (self.burst, now);
        let ok = b.0 >= 1.0;
        if ok {
            b.0 -= 1.0;
        }
        self.buckets.insert(host.into(), b);
        ok
    }
}

/// Everything but the socket buffers.
struct Inner {
    max_message: usize,
    max_sources: usize,
    limiter: Limiter,
    sources: HashMap<AddrKey, Source, FnvBuild>,
    keyer: Keyer,
    resolve: Py<PyAny>,
    record: Py<PyType>,
    received_at_name: Py<PyString>,
    source_name: Py<PyString>,
}

impl Inner {
    fn source(&mut self, py: Python<'_>, key: &AddrKey) -> PyResult<()> {
        if self.sources.contains_key(key) {
            return Ok(());
        }
        let (family, ip, port, flowinfo, scope) = addr_parts(key);
        let got = self.resolve.bind(py).call1((family, PyBytes::new(py, &ip), port, flowinfo, scope))?;
        let (host, source, allowed): (Bound<'_, PyString>, Bound<'_, PyBytes>, bool) = got.extract()?;
        let text = host.to_str()?.as_bytes().to_vec();
        let src = Source {
            fallback: PyBytes::new(py, &text).unbind(),
            host_key: text.into_boxed_slice(),
            host: host.unbind(),
            source: source.unbind(),
            allowed,
            headers: None,
        };
        if self.sources.len() >= self.max_sources {
            self.sources.clear();
        }
        self.sources.insert(*key, src);
        Ok(())
    }

    /// One datagram: a record appended to `records`, or a count in `drops`.
    #[allow(clippy::too_many_arguments)]
    fn datagram<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
        addr: &AddrKey,
        stamp: &Bound<'py, PyBytes>,
        now: f64,
        records: &Bound<'py, PyList>,
        slow: &mut Option<Bound<'py, PyList>>,
        size: &mut usize,
        drops: &mut Drops,
    ) -> PyResult<()> {
        self.source(py, addr)?;
        let Some(src) = self.sources.get_mut(addr) else {
            return Ok(());
        };
        if !src.allowed {
            drops.not_allowed += 1;
            return Ok(());
        }
        if self.limiter.rate > 0.0 && !self.limiter.allow(&src.host_key, now) {
            drops.rate_limited += 1;
            return Ok(());
        }
        let mut end = data.len();
        while end > 0 && matches!(data[end - 1], b'\n' | b'\r' | 0) {
            end -= 1;
        }
        if end > self.max_message {
            end = self.max_message;
            drops.truncated += 1;
        }
        if end == 0 {
            drops.empty += 1;
            return Ok(());
        }
        let value = &data[..end];
        let key = self.keyer.key(py, value)?;
        let headers = match &src.headers {
            Some((s, h)) if s.bind(py).is(stamp) => h.bind(py).clone(),
            _ => {
                let stamp_pair = PyTuple::new(py, [self.received_at_name.bind(py).as_any(), stamp.as_any()])?;
                let source_pair = PyTuple::new(py, [self.source_name.bind(py).as_any(), src.source.bind(py).as_any()])?;
                untrack(&stamp_pair);
                untrack(&source_pair);
                let h = PyTuple::new(py, [stamp_pair, source_pair])?;
                untrack(&h);
                src.headers = Some((stamp.clone().unbind(), h.clone().unbind()));
                h
            }
        };
        let key_obj: Bound<'py, PyAny> = match key {
            Key::Device(b) => {
                *size += b.as_bytes().len();
                b.into_any()
            }
            Key::Source => {
                let b = src.fallback.bind(py);
                *size += b.as_bytes().len();
                b.clone().into_any()
            }
            Key::Python => {
                let list = match slow {
                    Some(l) => l,
                    None => slow.insert(PyList::empty(py)),
                };
                list.append((records.len(), src.host.bind(py)))?;
                py.None().into_bound(py)
            }
        };
        *size += end + 64;
        let rec =
            make_record(py, self.record.bind(py), key_obj, PyBytes::new(py, value).into_any(), headers.into_any())?;
        records.append(rec)
    }
}

// -- the reader thread -------------------------------------------------------------------

/// Datagrams a segment holds at most: the reader hands them over segment by segment.
const SEGMENT_DATAGRAMS: usize = 1024;
/// Emptied segments kept for reuse.
const FREE_SEGMENTS: usize = 64;
/// After a read that found datagrams, the reader waits this long before it looks again, so
/// that the next read finds a batch rather than the one datagram that woke it.
const READ_PAUSE: Duration = Duration::from_micros(250);
/// The reader wakes the event loop at most this often, unless a segment's worth waits:
/// fewer, bigger drains (at most 1 ms of delay).
const WAKE_EVERY: Duration = Duration::from_micros(1000);
/// Bytes a buffered datagram costs besides its payload (for the buffer bound).
const DATAGRAM_OVERHEAD: usize = size_of::<Datagram>();

/// One datagram in a segment: where its bytes are, and its source address.
struct Datagram {
    start: u32,
    len: u32,
    addr: AddrKey,
}

/// Datagrams read together, their bytes back to back.
struct Segment {
    data: Vec<u8>,
    items: Vec<Datagram>,
}

impl Segment {
    fn new() -> Self {
        Segment { data: Vec::with_capacity(64 * 1024), items: Vec::with_capacity(256) }
    }

    fn cost(&self) -> usize {
        self.data.len() + self.items.len() * DATAGRAM_OVERHEAD
    }
}

/// What the reader thread and the event loop share.
struct Shared {
    segments: Mutex<VecDeque<Segment>>,
    /// Drained segments, emptied, for the reader to fill again (no allocation per read).
    free: Mutex<Vec<Segment>>,
    /// Bytes in `segments` (payloads and bookkeeping).
    buffered: AtomicUsize,
    /// Datagrams in `segments`.
    datagrams: AtomicUsize,
    /// `ready_fd` was written and not read since (at most one wake-up is pending).
    notified: AtomicBool,
    stop: AtomicBool,
    /// The last socket error the reader met (errno), 0 when none.
    error: AtomicI32,
    /// An eventfd, readable while segments wait: the event loop watches it.
    ready_fd: i32,
    /// An eventfd that wakes the reader to stop.
    wake_fd: i32,
}

impl Shared {
    fn segment(&self) -> Segment {
        lock(&self.free).pop().unwrap_or_else(Segment::new)
    }

    fn recycle(&self, segs: Vec<Segment>) {
        let mut free = lock(&self.free);
        for mut seg in segs {
            if free.len() >= FREE_SEGMENTS {
                break;
            }
            seg.data.clear();
            seg.items.clear();
            free.push(seg);
        }
    }

    /// Buffer a segment (the reader notifies the event loop when it sees fit).
    fn push(&self, seg: Segment) {
        self.buffered.fetch_add(seg.cost(), Ordering::SeqCst);
        self.datagrams.fetch_add(seg.items.len(), Ordering::SeqCst);
        lock(&self.segments).push_back(seg);
    }

    fn notify(&self) {
        if !self.notified.swap(true, Ordering::SeqCst) {
            write_event(self.ready_fd);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: both eventfds are ours and nothing uses them any more.
        unsafe {
            libc::close(self.ready_fd);
            libc::close(self.wake_fd);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn eventfd() -> io::Result<i32> {
    // SAFETY: plain system call.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

fn write_event(fd: i32) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 (an eventfd takes exactly that); a full
    // counter (EAGAIN) still leaves it readable, which is all that matters.
    unsafe {
        libc::write(fd, (&one as *const u64).cast(), size_of::<u64>());
    }
}

fn read_event(fd: i32) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64; EAGAIN (not signalled) is fine.
    unsafe {
        libc::read(fd, (&mut v as *mut u64).cast(), size_of::<u64>());
    }
}

/// Whether a socket error means the socket is gone (the reader stops).
fn fatal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT))
}

/// Read what the socket holds, in segments, while the buffer has room. Returns whether the
/// socket is still there, and how many datagrams were read.
fn read_available(fd: i32, slots: &mut Slots, shared: &Shared, max_buffer: usize) -> (bool, usize) {
    let mut seg = shared.segment();
    let mut total = 0usize;
    let mut alive = true;
    loop {
        if shared.buffered.load(Ordering::SeqCst) + seg.cost() >= max_buffer {
            break; // full: the kernel's buffer takes the rest (or drops and counts it)
        }
        let n = match slots.recv(fd, slots.n) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                shared.error.store(e.raw_os_error().unwrap_or(libc::EIO), Ordering::SeqCst);
                alive = !fatal(&e);
                break;
            }
        };
        for i in 0..n {
            let (data, addr) = slots.get(i);
            seg.items.push(Datagram { start: seg.data.len() as u32, len: data.len() as u32, addr });
            seg.data.extend_from_slice(data);
        }
        total += n;
        if seg.items.len() >= SEGMENT_DATAGRAMS {
            let next = shared.segment();
            shared.push(std::mem::replace(&mut seg, next));
        }
        if n < slots.n {
            break; // the socket ran dry
        }
    }
    if seg.items.is_empty() {
        shared.recycle(vec![seg]);
    } else {
        shared.push(seg);
    }
    (alive, total)
}

/// The nice value of the calling thread after asking for `nice` (None: leave it): a
/// thread that reads a socket the kernel drops from when it is full had better be first to
/// run when datagrams come and the machine is busy. Raising it needs CAP_SYS_NICE (or
/// RLIMIT_NICE); without, the thread keeps its priority.
fn set_nice(nice: Option<i32>) -> i32 {
    // SAFETY: plain system calls on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if let Some(n) = nice {
            libc::setpriority(libc::PRIO_PROCESS, tid, n);
        }
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    }
}

/// The reader thread: wait for datagrams, read them, hand them over; until told to stop,
/// then read what is left in the socket once more.
fn reader(fd: i32, shared: Arc<Shared>, batch: usize, max_buffer: usize) {
    let mut slots = Slots::new(batch);
    let mut woke = Instant::now();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            read_available(fd, &mut slots, &shared, max_buffer);
            shared.notify();
            return;
        }
        // Wake the event loop for what waits: at once when it is a segment's worth or
        // the last wake-up is WAKE_EVERY old, else when it will be.
        let waiting = shared.datagrams.load(Ordering::SeqCst);
        let mut timeout: Option<Duration> = None;
        if waiting > 0 && !shared.notified.load(Ordering::SeqCst) {
            let since = woke.elapsed();
            if waiting >= SEGMENT_DATAGRAMS || since >= WAKE_EVERY {
                shared.notify();
                woke = Instant::now();
            } else {
                timeout = Some(WAKE_EVERY - since);
            }
        }
        if shared.buffered.load(Ordering::SeqCst) >= max_buffer {
            std::thread::sleep(Duration::from_millis(1)); // the event loop is behind
            continue;
        }
        let mut fds = [
            libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: shared.wake_fd, events: libc::POLLIN, revents: 0 },
        ];
        let ts = timeout.map(|t| libc::timespec { tv_sec: 0, tv_nsec: t.as_nanos() as libc::c_long });
        let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: two live pollfd structs, a live timespec or null (wait forever).
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, tsp, std::ptr::null()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            shared.error.store(e.raw_os_error().unwrap_or(libc::EIO), Ordering::SeqCst);
            return;
        }
        if fds[0].revents & (libc::POLLNVAL) != 0 {
            shared.error.store(libc::EBADF, Ordering::SeqCst);
            return;
        }
        if fds[0].revents != 0 {
            let (alive, got) = read_available(fd, &mut slots, &shared, max_buffer);
            if !alive {
                return;
            }
            if got > 0 && got < SEGMENT_DATAGRAMS {
                std::thread::sleep(READ_PAUSE); // let a batch gather
            }
        }
    }
}

// -- the receiver ------------------------------------------------------------------------

/// The receiver's UDP socket on the native path; see the module documentation.
#[pyclass(module = "tunnelwatch_native")]
pub(crate) struct UdpReceiver {
    inner: Inner,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    reader_nice: i32,
}

impl UdpReceiver {
    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shared.stop.store(true, Ordering::SeqCst);
            write_event(self.shared.wake_fd);
            let _ = t.join();
        }
    }
}

impl Drop for UdpReceiver {
    fn drop(&mut self) {
        self.stop(); // never leave a thread reading a descriptor its owner may close
    }
}

type Drained<'py> = (Bound<'py, PyList>, Option<Bound<'py, PyList>>, usize, Option<(u64, u64, u64, u64)>, i32);

#[pymethods]
impl UdpReceiver {
    /// `fd`: a non-blocking UDP socket, which the caller keeps open until `close()`.
    /// A thread starts reading it at once (`recvmmsg`, up to `batch` datagrams a call,
    /// at the nice value `reader_nice` when given and allowed) and buffers up to
    /// `max_buffer_bytes`; `ready_fd` is readable while datagrams wait for `drain`. `resolve(family, address_bytes, port, flowinfo, scope_id)` gives
    /// `(host, source_header, allowed)` of a new source address. `record`: the `Record`
    /// class. `rate` 0 disables the rate limit.
    #[new]
    #[pyo3(signature = (fd, *, max_message_bytes, rate, burst, max_sources, resolve, record, header_names, fast, fast_bare, tz_offset_minutes, batch = 256, max_buffer_bytes = 256 << 20, reader_nice = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        fd: i32,
        max_message_bytes: usize,
        rate: f64,
        burst: f64,
        max_sources: usize,
        resolve: Py<PyAny>,
        record: Bound<'_, PyType>,
        header_names: (Bound<'_, PyString>, Bound<'_, PyString>),
        fast: &str,
        fast_bare: &str,
        tz_offset_minutes: Py<PyAny>,
        batch: usize,
        max_buffer_bytes: usize,
        reader_nice: Option<i32>,
    ) -> PyResult<Self> {
        if max_message_bytes == 0 || max_sources == 0 || !(1..=1024).contains(&batch) || max_buffer_bytes == 0 {
            return Err(PyValueError::new_err(
                "max_message_bytes, max_sources, max_buffer_bytes and batch (1..1024) must be positive",
            ));
        }
        if rate.is_nan() || rate < 0.0 || (rate > 0.0 && (burst.is_nan() || burst <= 0.0)) {
            return Err(PyValueError::new_err("rate must be >= 0 and burst > 0"));
        }
        // The record class must be a tuple subclass laid out as a tuple (a NamedTuple).
        let tuple = py.get_type::<PyTuple>();
        let attr = |t: &Bound<'_, PyType>, name: &str| -> PyResult<i64> { t.getattr(name)?.extract() };
        if !record.is_subclass(&tuple)?
            || attr(&record, "__basicsize__")? != attr(&tuple, "__basicsize__")?
            || attr(&record, "__itemsize__")? != attr(&tuple, "__itemsize__")?
            || attr(&record, "__dictoffset__")? != 0
            || attr(&record, "__weakrefoffset__")? != 0
        {
            return Err(PyTypeError::new_err("record must be a tuple subclass without fields of its own"));
        }
        let inner = Inner {
            max_message: max_message_bytes,
            max_sources,
            limiter: Limiter { rate, burst, max_sources, buckets: HashMap::default() },
            sources: HashMap::default(),
            keyer: Keyer::new(fast, fast_bare, tz_offset_minutes)?,
            resolve,
            record: record.unbind(),
            received_at_name: header_names.0.unbind(),
            source_name: header_names.1.unbind(),
        };
        let ready_fd = eventfd()?;
        let wake_fd = match eventfd() {
            Ok(fd) => fd,
            Err(e) => {
                // SAFETY: ours, unused.
                unsafe { libc::close(ready_fd) };
                return Err(e.into());
            }
        };
        let shared = Arc::new(Shared {
            segments: Mutex::new(VecDeque::new()),
            free: Mutex::new(Vec::new()),
            buffered: AtomicUsize::new(0),
            datagrams: AtomicUsize::new(0),
            notified: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            error: AtomicI32::new(0),
            ready_fd,
            wake_fd,
        });
        let for_thread = Arc::clone(&shared);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("tw-udp-reader".into()).spawn(move || {
            let _ = tx.send(set_nice(reader_nice));
            reader(fd, for_thread, batch, max_buffer_bytes);
        })?;
        let reader_nice = rx.recv().unwrap_or(0);
        Ok(UdpReceiver { inner, shared, thread: Some(thread), reader_nice })
    }

    /// Take up to about `budget` buffered datagrams (whole segments; the rest stays for
    /// the next call, and `ready_fd` stays readable), all received at `received_at` (the
    /// header value) and `now` (`time.monotonic()`, for the rate limit). Returns
    /// `(records, python_keys, size, drops, errno)`: the records in arrival order;
    /// `[(index, host), ...]` of those whose key (None) Python must find, or None; the
    /// sum of `Record.size` over the records keyed here; `(not_allowed, rate_limited,
    /// truncated, empty)` counts, or None when all are 0; the last socket error the
    /// reader met since the previous call (errno), or 0.
    fn drain<'py>(
        &mut self,
        py: Python<'py>,
        received_at: Bound<'py, PyBytes>,
        now: f64,
        budget: usize,
    ) -> PyResult<Drained<'py>> {
        let shared = &*self.shared;
        // Clear the eventfd first, then the flag: a segment pushed after the flag is
        // cleared writes the eventfd again; one pushed before is taken below.
        read_event(shared.ready_fd);
        shared.notified.store(false, Ordering::SeqCst);
        let mut taken: Vec<Segment> = Vec::new();
        let mut count = 0usize;
        let mut cost = 0usize;
        {
            let mut q = lock(&shared.segments);
            while count < budget {
                let Some(seg) = q.pop_front() else { break };
                count += seg.items.len();
                cost += seg.cost();
                taken.push(seg);
            }
            if !q.is_empty() {
                shared.notify(); // more for the next call
            }
        }
        shared.buffered.fetch_sub(cost, Ordering::SeqCst);
        shared.datagrams.fetch_sub(count, Ordering::SeqCst);
        let records = PyList::empty(py);
        let mut slow: Option<Bound<'py, PyList>> = None;
        let mut size = 0usize;
        let mut drops = Drops::default();
        for seg in &taken {
            for d in &seg.items {
                let data = &seg.data[d.start as usize..(d.start + d.len) as usize];
                self.inner.datagram(
                    py,
                    data,
                    &d.addr,
                    &received_at,
                    now,
                    &records,
                    &mut slow,
                    &mut size,
                    &mut drops,
                )?;
            }
        }
        shared.recycle(taken);
        let d = &drops;
        let counts = (d.not_allowed | d.rate_limited | d.truncated | d.empty != 0).then_some((
            d.not_allowed,
            d.rate_limited,
            d.truncated,
            d.empty,
        ));
        let errno = shared.error.swap(0, Ordering::SeqCst);
        Ok((records, slow, size, counts, errno))
    }

    /// The rate limit for a message from `host` over another transport (one bucket per
    /// host, whatever the transport).
    fn rate_allow(&mut self, host: &str, now: f64) -> bool {
        self.inner.limiter.allow(host.as_bytes(), now)
    }

    /// Stop the reader thread after it read what the socket holds; `drain` still gives
    /// what it buffered. The socket may be closed afterwards.
    fn close(&mut self, py: Python<'_>) {
        let this = &mut *self;
        py.detach(|| this.stop());
    }

    /// The eventfd that is readable while datagrams wait for `drain`.
    #[getter]
    fn ready_fd(&self) -> i32 {
        self.shared.ready_fd
    }

    /// Datagrams read from the socket and not drained yet.
    #[getter]
    fn buffered(&self) -> usize {
        self.shared.datagrams.load(Ordering::SeqCst)
    }

    /// Bytes the buffered datagrams take (payloads and bookkeeping).
    #[getter]
    fn buffered_bytes(&self) -> usize {
        self.shared.buffered.load(Ordering::SeqCst)
    }

    /// The reader thread's nice value (what `reader_nice` asked for when it was allowed).
    #[getter]
    fn reader_nice(&self) -> i32 {
        self.reader_nice
    }

    /// Whether the reader thread runs.
    #[getter]
    fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

#[cfg(test)]
#[path = "receiver_tests.rs"]
mod tests;
