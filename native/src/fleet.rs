//! The fleet clock's hot state, for `tunnelwatch analyze` and the stream worker: lanes
//! and the clocks of the devices that only ever moved their clock.
//!
//! `streams/core/fleet.py` is the model and the reference; this is the same arithmetic
//! on plain numbers, for the part of it that a large fleet runs on every line:
//!
//! - every *lane* (`Lane` there): its clock, the readings of its recent speakers and
//!   their median, its read count and device count. The Python `FleetClock` reads and
//!   moves a lane of this core through [`CoreLane`], so a lane is one object whichever
//!   side reads it, and its reads happen in the order of the lines;
//! - the clock of every device that is *native*: it never held a line, its correction
//!   is 0, and it has no engine state but its newest time and its late count (no catalog
//!   message the rules read ever reached it). A clock row of a native device that is
//!   ordinary (`FleetClock.ordinary`) or its first (`FleetClock.first`) is applied here,
//!   engine part included (`engine.clock` of a blank state: its newest time, or a late
//!   line counted). Any other row makes the device *Python's*: [`FleetCore::promote`]
//!   hands its fields to a `DeviceClock` and a `DeviceState`, and from then on its rows
//!   go to Python (`on_rows`), which reads and moves its lane here.
//!
//! The worker (`Shard`, `ParseStage.handle_batch_core`) adds its bookkeeping to a native
//! device: the offset of its last record applied (`row_at` skips a record read again)
//! and whether it changed since it was stored. The core writes the stored form of its
//! changed devices (`stored_forms`, `mark_stored`), forgets the lanes and devices of
//! partitions handed over (`drop`), and takes a stored device back (`adopt`).
//!
//! Nothing here walks the fleet: a row costs one hash lookup and a few float operations
//! on one device record and one lane, all in memory a fleet of 100k devices keeps in the
//! CPU's last cache level (at most 128 bytes a device).

use std::collections::{HashMap, HashSet};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::FnvBuild;

const NEG_INF: f64 = f64::NEG_INFINITY;
const INF: f64 = f64::INFINITY;
const NO_LANE: u32 = u32::MAX;

/// A device's name, kept in its record: up to [`INLINE`] bytes inline, so that checking
/// a lookup's hit reads the record it is about to use anyway; longer names boxed.
enum Key {
    Inline(u8, [u8; INLINE]),
    Boxed(Box<[u8]>),
}

const INLINE: usize = 30;

impl Key {
    fn new(name: &[u8]) -> Self {
        if name.len() <= INLINE {
            let mut b = [0u8; INLINE];
            b[..name.len()].copy_from_slice(name);
            Key::Inline(name.len() as u8, b)
        } else {
            Key::Boxed(name.into())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline(n, b) => &b[..*n as usize],
            Key::Boxed(b) => b,
        }
    }
}

/// FNV-1a over a device's name, then murmur3's finalizer (the probe's start and the
/// slot's tag both need good bits).
pub(crate) fn name_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The devices by name: open addressing over one array of 8-byte slots, each the upper
/// half of the name's hash (its tag) and the device's index + 1 (0: empty), at most half
/// full. A lookup reads one slot, then the device's record (which holds its name); both
/// can be fetched ahead ([`FleetCore::prefetch`]), which a scan does for a batch of rows
/// before it applies them: with 100k devices neither stays in the CPU's nearest caches.
struct Index {
    slots: Vec<u64>,
    len: usize,
}

impl Index {
    fn new() -> Self {
        Index { slots: vec![0; 64], len: 0 }
    }

    /// Where the probe of a tag starts (a slot keeps only the tag of a hash, so that
    /// growing the array needs no name).
    fn start(&self, tag: u64) -> usize {
        (tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) as usize & (self.slots.len() - 1)
    }

    fn find(&self, h: u64, name: &[u8], devices: &[Device]) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let tag = h >> 32;
        let mut at = self.start(tag);
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag {
                let i = (slot as u32) - 1;
                if devices[i as usize].key.bytes() == name {
                    return Some(i);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Add a name known to be absent.
    fn insert(&mut self, h: u64, i: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            let size = self.slots.len() * 2;
            let old = std::mem::replace(&mut self.slots, vec![0; size]);
            for slot in old.into_iter().filter(|&s| s != 0) {
                self.place(slot);
            }
        }
        self.place((h >> 32) << 32 | (i as u64 + 1));
        self.len += 1;
    }

    fn place(&mut self, slot: u64) {
        let mask = self.slots.len() - 1;
        let mut at = self.start(slot >> 32);
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = slot;
    }
}

/// Ask the CPU to bring `p`'s cache line in (a hint; nothing elsewhere than x86-64).
#[inline(always)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and faults on nothing; `p` is a valid reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const T as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The constants of `fleet.py`, given by Python (one place for them).
#[derive(Clone, Copy)]
struct Params {
    jump: f64,
    far: f64,
    window: usize,
    step: f64,
    recompute: u64,
    expire: i64,
    lateness: f64,
}

/// `fleet.Lane` but for its heap and holding set (Python's, in [`CoreLane`]).
struct Lane {
    clock: f64,
    devices: i64,
    /// `(device, reading, read count)`, oldest first: `Lane.recent`.
    recent: Vec<(u32, f64, u64)>,
    reads: u64,
    pending: u64,
}

impl Lane {
    fn patience(&self, p: &Params) -> i64 {
        p.expire * self.devices.max(4)
    }

    /// `Lane.read`.
    fn read(&mut self, p: &Params, device: u32, n: f64) {
        self.reads += 1;
        if let Some(i) = self.recent.iter().position(|e| e.0 == device) {
            self.recent.remove(i);
        } else if self.recent.len() >= p.window {
            self.recent.remove(0);
        }
        self.recent.push((device, n, self.reads));
        self.pending += 1;
        if n > self.clock + p.step || self.pending >= p.recompute {
            self.recompute(p);
        }
    }

    /// `Lane._recompute`.
    fn recompute(&mut self, p: &Params) {
        self.pending = 0;
        let stale = self.reads as i64 - self.patience(p);
        let keep = self.recent.iter().position(|e| e.2 as i64 >= stale).unwrap_or(self.recent.len());
        // The newest entry is always kept (its read count is `reads`): never empty.
        self.recent.drain(..keep.min(self.recent.len().saturating_sub(1)));
        let mut values: Vec<f64> = self.recent.iter().map(|e| e.1).collect();
        values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let median = values[(values.len() - 1) / 2];
        if median > self.clock {
            self.clock = median;
        }
    }

    fn unvote(&mut self, device: u32) {
        if let Some(i) = self.recent.iter().position(|e| e.0 == device) {
            self.recent.remove(i);
        }
    }
}

/// One device: `DeviceClock`'s numbers, and `DeviceState`'s for a native device.
struct Device {
    key: Key,
    /// Its lane's number, and the lane's index here once it has one (`NO_LANE` before:
    /// as in `FleetClock`, a lane is made at its first timed line, where the others stand
    /// then).
    lane_number: i64,
    lane: u32,
    /// `DeviceClock.offset` (None until `has_offset`).
    offset: f64,
    has_offset: bool,
    last: f64,
    reading: f64,
    seen: u64,
    skew: f64,
    /// `DeviceState.max_ts` and `.late` (native devices only).
    max_ts: f64,
    late: u64,
    /// The worker's bookkeeping: the offset of the device's last record applied (-1:
    /// none), and whether its state changed since it was last stored (`stored_forms`, `mark_stored`).
    koffset: i64,
    dirty: bool,
    /// Python holds this device's clock and state (see `promote`).
    python: bool,
}

impl Device {
    /// A device new to the core: native, no lane yet, no line.
    fn new(name: &[u8], lane_number: i64) -> Self {
        Device {
            key: Key::new(name),
            lane_number,
            lane: NO_LANE,
            offset: 0.0,
            has_offset: false,
            last: NEG_INF,
            reading: NEG_INF,
            seen: 0,
            skew: INF,
            max_ts: NEG_INF,
            late: 0,
            koffset: -1,
            dirty: false,
            python: false,
        }
    }

    /// Its fields as `promote` gives them.
    fn fields(&self) -> Promoted {
        let offset = self.has_offset.then_some(self.offset);
        (self.lane_number, offset, self.last, self.reading, self.seen, self.skew, self.max_ts, self.late)
    }
}

/// What [`FleetCore::row`] did with a clock row.
#[derive(PartialEq, Eq, Debug)]
pub(crate) enum Applied {
    Done,
    /// The device is Python's: the row is Python's to apply.
    Python,
    /// The worker read this record of the device before (`row_at`): skipped.
    Duplicate,
    /// The device is another partition's (`row_at`): nothing applied, nothing made.
    Elsewhere,
}

/// The hot state of a fleet clock; see the module documentation.
#[pyclass(module = "tunnelwatch_native")]
pub(crate) struct FleetCore {
    p: Params,
    lane_of: Option<Py<PyAny>>,
    /// `lane_of` is Kafka's default partitioner over this many partitions (murmur2).
    partitions: Option<u32>,
    lanes: Vec<Lane>,
    lane_index: HashMap<i64, usize, FnvBuild>,
    names: Index,
    devices: Vec<Device>,
    rows: u64,
    /// The native devices whose state changed since `mark_stored` (the worker's).
    dirty: Vec<u32>,
}

impl FleetCore {
    fn lane_at(&mut self, number: i64) -> usize {
        if let Some(&i) = self.lane_index.get(&number) {
            return i;
        }
        // `FleetClock.lane`: a new lane starts where the others stand (the lanes it has:
        // a lane the worker dropped stays in `lanes`, out of `lane_index`).
        let start = self.lane_index.values().map(|&i| self.lanes[i].clock).fold(NEG_INF, f64::max);
        self.lanes.push(Lane { clock: start, devices: 0, recent: Vec::new(), reads: 0, pending: 0 });
        self.lane_index.insert(number, self.lanes.len() - 1);
        self.lanes.len() - 1
    }

    fn lane_number(&self, py: Python<'_>, name: &[u8]) -> PyResult<i64> {
        if let Some(n) = self.partitions {
            // topics.partition_of, on the same murmur2.
            return Ok(((crate::kafka::murmur2(name) & 0x7fff_ffff) % n) as i64);
        }
        match &self.lane_of {
            None => Ok(0),
            Some(f) => f.bind(py).call1((String::from_utf8_lossy(name).as_ref(),))?.extract(),
        }
    }

    /// The index of a device, if the core knows it.
    fn find(&self, name: &[u8]) -> Option<u32> {
        self.names.find(name_hash(name), name, &self.devices)
    }

    /// Fetch ahead what a row of the device whose name hashes to `h` reads: its slot
    /// (`device` false), or, once that is in, its record (`device` true).
    pub(crate) fn prefetch(&self, h: u64, name: &[u8], device: bool) {
        if !device {
            prefetch(&self.names.slots[self.names.start(h >> 32)]);
        } else if let Some(i) = self.names.find(h, name, &self.devices) {
            prefetch(&self.devices[i as usize]);
        }
    }

    fn index(&mut self, py: Python<'_>, name: &[u8]) -> PyResult<u32> {
        self.index_hashed(py, name, name_hash(name))
    }

    /// The index of a device whose name hashes to `h`, made (native, lane from
    /// `lane_of`) when new.
    fn index_hashed(&mut self, py: Python<'_>, name: &[u8], h: u64) -> PyResult<u32> {
        if let Some(i) = self.names.find(h, name, &self.devices) {
            return Ok(i);
        }
        let number = self.lane_number(py, name)?;
        Ok(self.insert(name, h, number))
    }

    /// A device new to the core, of lane `number`: its index.
    fn insert(&mut self, name: &[u8], h: u64, number: i64) -> u32 {
        let i = self.devices.len() as u32;
        self.devices.push(Device::new(name, number));
        self.names.insert(h, i);
        i
    }

    /// A clock row `(device, ts, time_source)` (`inferred`: the time did not come from a
    /// clock): applied here for a native device whose row is ordinary or its first (what
    /// `Correlator.clocks` does with it), else the device becomes Python's.
    pub(crate) fn row(&mut self, py: Python<'_>, name: &[u8], h: u64, ts: f64, inferred: bool) -> PyResult<Applied> {
        let i = self.index_hashed(py, name, h)?;
        Ok(self.row_ix(i, ts, inferred))
    }

    /// `row` of the device at index `i`.
    fn row_ix(&mut self, i: u32, ts: f64, inferred: bool) -> Applied {
        self.rows += 1;
        let p = self.p;
        if self.devices[i as usize].python {
            return Applied::Python;
        }
        if !inferred && self.devices[i as usize].lane == NO_LANE {
            let number = self.devices[i as usize].lane_number;
            self.devices[i as usize].lane = self.lane_at(number) as u32;
        }
        let d = &mut self.devices[i as usize];
        let eng = ts; // a native device's correction is 0
        if !inferred {
            let lane = &mut self.lanes[d.lane as usize];
            if !d.has_offset {
                // FleetClock._first
                if lane.clock == NEG_INF {
                    lane.clock = eng;
                }
                d.offset = eng - lane.clock;
                d.has_offset = true;
                d.last = eng;
                d.reading = lane.clock;
                lane.devices += 1;
                let c = lane.clock;
                lane.read(&p, i, c);
            } else {
                // FleetClock.ordinary
                let last = d.last;
                if eng < last - p.jump || (eng > last + p.far && eng > lane.clock + d.offset + p.far) {
                    // Python's now: its on_rows takes the device (promote) and holds the line.
                    return Applied::Python;
                }
                let n = eng - d.offset;
                if n > d.reading {
                    d.reading = n;
                    lane.read(&p, i, n);
                }
                d.seen = lane.reads;
                if eng > last {
                    d.last = eng;
                }
                if eng - lane.clock < d.skew {
                    d.skew = eng - lane.clock;
                }
            }
        }
        // engine.clock of a blank state: its due time is infinite, nothing resolves.
        if eng < d.max_ts - p.lateness {
            d.late += 1;
        } else if eng > d.max_ts {
            d.max_ts = eng;
        }
        Applied::Done
    }

    /// The worker's `row`: a clock row of the record at `offset` of `partition`, for a
    /// device of that partition (else `Elsewhere`: the record is rerouted). A native
    /// device's record at or before the last one applied is a duplicate; one applied here
    /// notes its offset and marks the device changed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn row_at(
        &mut self,
        py: Python<'_>,
        name: &[u8],
        h: u64,
        ts: f64,
        inferred: bool,
        offset: i64,
        partition: i64,
    ) -> PyResult<Applied> {
        let i = match self.names.find(h, name, &self.devices) {
            Some(i) if self.devices[i as usize].lane_number != partition => return Ok(Applied::Elsewhere),
            Some(i) => i,
            None => {
                let number = self.lane_number(py, name)?;
                if number != partition {
                    return Ok(Applied::Elsewhere);
                }
                self.insert(name, h, number)
            }
        };
        let d = &self.devices[i as usize];
        if !d.python && offset <= d.koffset {
            return Ok(Applied::Duplicate);
        }
        let applied = self.row_ix(i, ts, inferred);
        if applied == Applied::Done {
            let d = &mut self.devices[i as usize];
            d.koffset = offset;
            if !d.dirty {
                d.dirty = true;
                self.dirty.push(i);
            }
        }
        Ok(applied)
    }

    /// The lane (partition) of a device: the one it has, else the one it would get.
    pub(crate) fn lane_of_name(&self, py: Python<'_>, name: &[u8], h: u64) -> PyResult<i64> {
        match self.names.find(h, name, &self.devices) {
            Some(i) => Ok(self.devices[i as usize].lane_number),
            None => self.lane_number(py, name),
        }
    }

    /// The device is Python's (a device the core does not know is not).
    pub(crate) fn is_python(&self, name: &[u8], h: u64) -> bool {
        self.names.find(h, name, &self.devices).is_some_and(|i| self.devices[i as usize].python)
    }

    /// Each native device with an offset, and its offset for the skew report: its skew
    /// (or its offset) less its correction, which is 0 (`FleetClock.skews`).
    fn native_offsets(&self) -> impl Iterator<Item = (&Device, f64)> + '_ {
        self.devices
            .iter()
            .filter(|d| !d.python && d.has_offset)
            .map(|d| (d, if d.skew != INF { d.skew } else { d.offset }))
    }
}

/// A device's clock and state fields: `(lane, offset, last, reading, seen, skew, max_ts,
/// late)`.
type Promoted = (i64, Option<f64>, f64, f64, u64, f64, f64, u64);

/// What `promote` gives: [`Promoted`], then the worker's `(koffset, changed)`.
type Taken = (i64, Option<f64>, f64, f64, u64, f64, f64, u64, i64, bool);

/// A float as orjson writes it: the shortest text that reads back the same, null when
/// infinite (or NaN).
fn json_f64(out: &mut Vec<u8>, x: f64) {
    use std::io::Write;
    if x.is_finite() {
        let _ = write!(out, "{x:?}");
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A JSON string of (UTF-8) bytes.
fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    use std::io::Write;
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// The short stored form of a native device (`Slot._dump`'s, fields in its order, and
/// the late count when there is one).
fn stored_form(out: &mut Vec<u8>, d: &Device, format: i64, frame: Option<&[u8]>, lane_clock: f64) {
    use std::io::Write;
    let _ = write!(out, "{{\"format\":{format},\"partition\":{},\"offset\":{},\"reroute_offset\":-1,\"frame\":", d.lane_number, d.koffset);
    match frame {
        Some(f) => json_str(out, f),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"lane_clock\":");
    json_f64(out, lane_clock);
    let _ = write!(out, ",\"clock\":{{\"lane\":{},\"offset\":", d.lane_number);
    if d.has_offset {
        json_f64(out, d.offset);
    } else {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b",\"correction\":0.0,\"last\":");
    json_f64(out, d.last);
    out.extend_from_slice(b",\"reading\":");
    json_f64(out, d.reading);
    out.extend_from_slice(b",\"skew\":");
    json_f64(out, d.skew);
    out.extend_from_slice(b"},\"state\":{\"device\":");
    json_str(out, d.key.bytes());
    out.extend_from_slice(b",\"max_ts\":");
    json_f64(out, d.max_ts);
    if d.late > 0 {
        let _ = write!(out, ",\"late\":{}", d.late);
    }
    out.extend_from_slice(b"}}");
}

#[pymethods]
impl FleetCore {
    #[new]
    #[pyo3(signature = (lateness, lane_of, *, partitions = None, jump, far, window, step, recompute, expire))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        lateness: f64,
        lane_of: Option<Py<PyAny>>,
        partitions: Option<u32>,
        jump: f64,
        far: f64,
        window: usize,
        step: f64,
        recompute: u64,
        expire: i64,
    ) -> PyResult<Self> {
        if window == 0 || recompute == 0 || partitions == Some(0) {
            return Err(PyValueError::new_err("window, recompute and partitions must be positive"));
        }
        Ok(FleetCore {
            p: Params { jump, far, window, step, recompute, expire, lateness },
            lane_of,
            partitions,
            lanes: Vec::new(),
            lane_index: HashMap::default(),
            names: Index::new(),
            devices: Vec::new(),
            rows: 0,
            dirty: Vec::new(),
        })
    }

    /// Python takes a device: its fields if the core held it natively (it is Python's from
    /// now on), else None (a device new to both: it is registered as Python's).
    ///
    /// The fields: `(lane, offset, last, reading, seen, skew, max_ts, late, koffset,
    /// changed)`, the last two the worker's (`row_at`): the offset of its last record
    /// applied, and whether its state changed since `mark_stored` (Python stores it now).
    fn promote(&mut self, py: Python<'_>, name: &str) -> PyResult<Option<Taken>> {
        let (i, known) = match self.find(name.as_bytes()) {
            Some(i) => (i, true),
            None => (self.index(py, name.as_bytes())?, false),
        };
        let d = &mut self.devices[i as usize];
        let was_native = known && !d.python;
        d.python = true;
        let changed = std::mem::replace(&mut d.dirty, false);
        Ok(was_native.then(|| {
            let (lane, offset, last, reading, seen, skew, max_ts, late) = d.fields();
            (lane, offset, last, reading, seen, skew, max_ts, late, d.koffset, changed)
        }))
    }

    /// The stored form of each native device whose state changed since `mark_stored`,
    /// as the worker's `Slot.dump` writes a device that only moved its clock:
    /// `[(partition, key, value)]`. `frames`: each lane's frame id (`Shard.frames`). The
    /// devices stay changed until `mark_stored` (the worker calls it once Kafka has
    /// them: a store that fails leaves them to the next).
    fn stored_forms<'py>(
        &self,
        py: Python<'py>,
        format: i64,
        frames: HashMap<i64, String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut buf: Vec<u8> = Vec::with_capacity(320);
        for &i in &self.dirty {
            let d = &self.devices[i as usize];
            if !d.dirty {
                continue; // promoted since: Python's to store
            }
            let lane_clock = self.lane_index.get(&d.lane_number).map_or(NEG_INF, |&ix| self.lanes[ix].clock);
            buf.clear();
            stored_form(&mut buf, d, format, frames.get(&d.lane_number).map(String::as_bytes), lane_clock);
            let key = PyBytes::new(py, d.key.bytes());
            let value = PyBytes::new(py, &buf);
            out.append((d.lane_number, key, value))?;
        }
        Ok(out)
    }

    /// What `stored_forms` gave is stored: no native device is changed any more.
    fn mark_stored(&mut self) {
        for i in std::mem::take(&mut self.dirty) {
            self.devices[i as usize].dirty = false;
        }
    }

    /// The worker handed `lanes` (partitions) over: their native devices, and Python's
    /// devices `names`, are forgotten here; so are the lanes (a lane of the same number
    /// made later starts anew). The count of native devices forgotten.
    fn drop(&mut self, lanes: Vec<i64>, names: Vec<String>) -> usize {
        let gone: HashSet<i64> = lanes.into_iter().collect();
        let names: HashSet<Vec<u8>> = names.into_iter().map(String::into_bytes).collect();
        let mut map = vec![u32::MAX; self.devices.len()];
        let mut kept: Vec<Device> = Vec::with_capacity(self.devices.len());
        let mut count = 0;
        for (old, d) in std::mem::take(&mut self.devices).into_iter().enumerate() {
            let leaves = if d.python { names.contains(d.key.bytes()) } else { gone.contains(&d.lane_number) };
            if leaves {
                count += usize::from(!d.python);
                continue;
            }
            map[old] = kept.len() as u32;
            kept.push(d);
        }
        self.devices = kept;
        self.names = Index::new();
        for (i, d) in self.devices.iter().enumerate() {
            self.names.insert(name_hash(d.key.bytes()), i as u32);
        }
        for lane in &mut self.lanes {
            lane.recent.retain_mut(|e| {
                e.0 = map[e.0 as usize];
                e.0 != u32::MAX
            });
        }
        self.dirty = self.dirty.iter().map(|&i| map[i as usize]).filter(|&i| i != u32::MAX).collect();
        for number in gone {
            if let Some(ix) = self.lane_index.remove(&number) {
                self.lanes[ix].recent = Vec::new();
            }
        }
        count
    }

    /// The lane numbered `number` (made where the others stand when new), as Python reads it.
    fn lane(slf: &Bound<'_, Self>, number: i64) -> PyResult<CoreLane> {
        let py = slf.py();
        let ix = slf.borrow_mut().lane_at(number);
        Ok(CoreLane {
            core: slf.clone().unbind(),
            ix,
            holding: PyDict::new(py).unbind(),
            heap: PyList::empty(py).unbind(),
        })
    }

    /// The (upper) median of the offsets of the native devices and `others` (Python's
    /// devices'), as `FleetClock.skews` takes it; None when there is none.
    fn median_offset(&self, others: Vec<f64>) -> Option<f64> {
        let mut values = others;
        values.extend(self.native_offsets().map(|(_, o)| o));
        if values.is_empty() {
            return None;
        }
        let mid = values.len() / 2;
        let (_, m, _) = values.select_nth_unstable_by(mid, |a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Some(*m)
    }

    /// `{device: offset - median}` of the native devices whose offset is more than
    /// `minimum` seconds from `median` (`FleetClock.skews` for Python's devices).
    fn skews_from<'py>(&self, py: Python<'py>, median: f64, minimum: f64) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (d, o) in self.native_offsets() {
            if (o - median).abs() > minimum {
                out.set_item(String::from_utf8_lossy(d.key.bytes()).as_ref(), o - median)?;
            }
        }
        Ok(out)
    }

    /// Counts: `(devices, native devices, lanes, rows)`.
    fn counts(&self) -> (usize, usize, usize, u64) {
        let native = self.devices.iter().filter(|d| !d.python).count();
        (self.devices.len(), native, self.lane_index.len(), self.rows)
    }

    /// The worker restores a device from its stored state (`Shard.restore_stored`): a
    /// device that only moved its clock, of lane `lane`, becomes native here with these
    /// numbers ("adopted"). "held": the core holds it natively already (its numbers are
    /// newer than any stored ones); "refused": its name is not of that lane.
    #[allow(clippy::too_many_arguments)]
    fn adopt(
        &mut self,
        py: Python<'_>,
        name: &str,
        lane: i64,
        offset: Option<f64>,
        last: f64,
        reading: f64,
        skew: f64,
        max_ts: f64,
        late: u64,
        koffset: i64,
    ) -> PyResult<&'static str> {
        let n = name.as_bytes();
        let h = name_hash(n);
        let i = match self.names.find(h, n, &self.devices) {
            Some(i) if !self.devices[i as usize].python => return Ok("held"),
            Some(i) => i, // Python's name, without a slot there: taken back
            None => {
                if self.lane_number(py, n)? != lane {
                    return Ok("refused");
                }
                self.index_hashed(py, n, h)?
            }
        };
        if self.devices[i as usize].lane_number != lane {
            return Ok("refused");
        }
        // `FleetClock.adopt`: the lane is made, and counts the device if it has an offset.
        let ix = self.lane_at(lane);
        if offset.is_some() {
            self.lanes[ix].devices += 1;
        }
        let d = &mut self.devices[i as usize];
        d.lane = ix as u32;
        d.offset = offset.unwrap_or(0.0);
        d.has_offset = offset.is_some();
        d.last = last;
        d.reading = reading;
        d.seen = 0;
        d.skew = skew;
        d.max_ts = max_ts;
        d.late = late;
        d.koffset = koffset;
        d.dirty = false;
        d.python = false;
        Ok("adopted")
    }

    /// How many native devices changed since `mark_stored` (at most).
    fn changed(&self) -> usize {
        self.dirty.len()
    }

    /// Test hook: `row_at` of one clock row of the device's own partition: "done",
    /// "python" or "duplicate".
    fn apply_record(&mut self, py: Python<'_>, name: &str, ts: f64, inferred: bool, offset: i64) -> PyResult<&'static str> {
        let n = name.as_bytes();
        let h = name_hash(n);
        let partition = self.lane_of_name(py, n, h)?;
        Ok(match self.row_at(py, n, h, ts, inferred, offset, partition)? {
            Applied::Done => "done",
            Applied::Python => "python",
            Applied::Duplicate => "duplicate",
            Applied::Elsewhere => "elsewhere",
        })
    }

    /// Test hook: apply one clock row as the scanner does; True when the device is Python's.
    fn apply_row(&mut self, py: Python<'_>, name: &str, ts: f64, inferred: bool) -> PyResult<bool> {
        Ok(self.row(py, name.as_bytes(), name_hash(name.as_bytes()), ts, inferred)? == Applied::Python)
    }

    /// Test hook: `(lane, offset, last, reading, seen, skew, max_ts, late, python)` of a
    /// device, without promoting it; None when unknown.
    #[allow(clippy::type_complexity)]
    fn peek(&self, name: &str) -> Option<(i64, Option<f64>, f64, f64, u64, f64, f64, u64, bool)> {
        let d = &self.devices[self.find(name.as_bytes())? as usize];
        let (lane, offset, last, reading, seen, skew, max_ts, late) = d.fields();
        Some((lane, offset, last, reading, seen, skew, max_ts, late, d.python))
    }
}

/// A lane of a [`FleetCore`] as the Python `FleetClock` reads it (`fleet.Lane`'s
/// interface): the numbers are the core's, the heap and the set of devices holding a
/// jump are Python's (only Python's devices hold or have work scheduled).
#[pyclass(module = "tunnelwatch_native")]
pub(crate) struct CoreLane {
    core: Py<FleetCore>,
    /// The lane's index in the core (lanes are never removed from a core).
    ix: usize,
    #[pyo3(get)]
    holding: Py<PyDict>,
    #[pyo3(get)]
    heap: Py<PyList>,
}

#[pymethods]
impl CoreLane {
    #[getter]
    fn clock(&self, py: Python<'_>) -> f64 {
        self.core.borrow(py).lanes[self.ix].clock
    }

    #[setter]
    fn set_clock(&self, py: Python<'_>, value: f64) {
        self.core.borrow_mut(py).lanes[self.ix].clock = value;
    }

    #[getter]
    fn devices(&self, py: Python<'_>) -> i64 {
        self.core.borrow(py).lanes[self.ix].devices
    }

    #[setter]
    fn set_devices(&self, py: Python<'_>, value: i64) {
        self.core.borrow_mut(py).lanes[self.ix].devices = value;
    }

    #[getter]
    fn reads(&self, py: Python<'_>) -> u64 {
        self.core.borrow(py).lanes[self.ix].reads
    }

    fn patience(&self, py: Python<'_>) -> i64 {
        let core = self.core.borrow(py);
        core.lanes[self.ix].patience(&core.p)
    }

    /// `Lane.read`: a device's reading of the lane moved to `n`.
    fn read(&self, py: Python<'_>, name: &str, n: f64) -> PyResult<()> {
        let mut core = self.core.borrow_mut(py);
        let i = core.index(py, name.as_bytes())?;
        // Only Python's devices are read from Python (a device new here is Python's).
        core.devices[i as usize].python = true;
        let p = core.p;
        core.lanes[self.ix].read(&p, i, n);
        Ok(())
    }

    /// The device no longer votes in this lane (it left it).
    fn unvote(&self, py: Python<'_>, name: &str) {
        let mut core = self.core.borrow_mut(py);
        if let Some(i) = core.find(name.as_bytes()) {
            core.lanes[self.ix].unvote(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_finds_every_name_it_was_given_through_its_growth_and_no_other() {
        let mut index = Index::new();
        let mut devices = Vec::new();
        let names: Vec<Vec<u8>> = (0..20_000)
            .map(|i| match i % 3 {
                0 => format!("fw-{i}").into_bytes(),
                1 => format!("a-device-name-longer-than-thirty-bytes-{i}").into_bytes(),
                _ => vec![b'x'; i % 40],
            })
            .collect();
        for name in &names {
            let h = name_hash(name);
            if index.find(h, name, &devices).is_none() {
                index.insert(h, devices.len() as u32);
                devices.push(Device::new(name, 0));
            }
        }
        // 40 distinct names of x's (0 to 39 long), the others all distinct.
        assert_eq!(devices.len(), 20_000 - 6_666 + 40);
        assert_eq!(index.len, devices.len());
        assert!(index.len * 2 <= index.slots.len());
        for name in &names {
            let i = index.find(name_hash(name), name, &devices).expect("found");
            assert_eq!(devices[i as usize].key.bytes(), name.as_slice());
        }
        for absent in [&b"fw-20000"[..], b"fw-", b"y", b"a-device-name-longer-than-thirty-bytes-"] {
            assert_eq!(index.find(name_hash(absent), absent, &devices), None);
        }
    }

    #[test]
    fn a_device_record_fits_in_two_cache_lines() {
        // The README's bound of a native device (its index slots aside).
        assert!(std::mem::size_of::<Device>() <= 128, "{}", std::mem::size_of::<Device>());
    }
}
