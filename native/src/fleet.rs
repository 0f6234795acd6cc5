//! The fleet clock's hot state, for `tunnelwatch analyze`: lanes and the clocks of the
//! devices that only ever moved their clock.
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
//! Nothing here walks the fleet: a row costs one hash lookup and a few float operations
//! on one device record and one lane, all in memory a fleet of 100k devices keeps in the
//! CPU's last cache level (about 100 bytes a device).

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

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
}

impl FleetCore {
    fn lane_at(&mut self, number: i64) -> usize {
        if let Some(&i) = self.lane_index.get(&number) {
            return i;
        }
        // `FleetClock.lane`: a new lane starts where the others stand.
        let start = self.lanes.iter().map(|l| l.clock).fold(NEG_INF, f64::max);
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
        let i = self.devices.len() as u32;
        self.devices.push(Device::new(name, number));
        self.names.insert(h, i);
        Ok(i)
    }

    /// A clock row `(device, ts, time_source)` (`inferred`: the time did not come from a
    /// clock): applied here for a native device whose row is ordinary or its first (what
    /// `Correlator.clocks` does with it), else the device becomes Python's.
    pub(crate) fn row(&mut self, py: Python<'_>, name: &[u8], h: u64, ts: f64, inferred: bool) -> PyResult<Applied> {
        let i = self.index_hashed(py, name, h)?;
        self.rows += 1;
        let p = self.p;
        if self.devices[i as usize].python {
            return Ok(Applied::Python);
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
                    return Ok(Applied::Python);
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
        Ok(Applied::Done)
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

/// A device's fields as `promote` gives them: `(lane, offset, last, reading, seen, skew,
/// max_ts, late)`.
type Promoted = (i64, Option<f64>, f64, f64, u64, f64, f64, u64);

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
        })
    }

    /// Python takes a device: its fields if the core held it natively (it is Python's from
    /// now on), else None (a device new to both: it is registered as Python's).
    fn promote(&mut self, py: Python<'_>, name: &str) -> PyResult<Option<Promoted>> {
        let (i, known) = match self.find(name.as_bytes()) {
            Some(i) => (i, true),
            None => (self.index(py, name.as_bytes())?, false),
        };
        let d = &mut self.devices[i as usize];
        let was_native = known && !d.python;
        d.python = true;
        Ok(was_native.then(|| d.fields()))
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
        (self.devices.len(), native, self.lanes.len(), self.rows)
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
}
