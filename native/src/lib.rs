//! The per-line hot loop of `tunnelwatch analyze`, as a Python extension.
//!
//! A [`Scanner`] takes the bytes of an archive chunk by chunk and does, for each line,
//! what the pure Python path does with `framing.iter_records` and `Parser.parse`, but
//! only where it is sure to give the same answer:
//!
//! - framing: universal newlines (`\r\n`, `\r`, `\n`), continuation lines and relay
//!   header lines joined to the next one, exactly as `iter_records`;
//! - a single-line, pure ASCII record with a message tag gives a *clock row*
//!   `(device, ts, time_source, clock_synced, tz_known)` when the tag is not in the
//!   catalog, or the first catalog entry that matches is *inert* (a kind no rule reads,
//!   nothing learned; see `Lookup`), or none matches: the whole effect of such a line on
//!   the engine is moving its device's clock. Its header is read by `fast_prefix` (the
//!   common shapes, one regex) or else by `scan::scan_prefix` (every other shape the
//!   Python parser reads);
//! - a single-line ASCII record without a '%' tag is read as `Parser._parse` reads it
//!   (`untagged`): a tag without its '%' is looked up as above; otherwise a line that no
//!   untagged catalog text matches and that has a PRI, a stamp or an uptime is a clock row;
//! - every other record (catalog messages the rules read, catalog debug texts, lines that
//!   are not syslog, continuation or non-ASCII records) is handed back to Python as text,
//!   and the Python parser parses it.
//!
//! The parser's state stays in the Python `Parser`: year inference reads and, when a
//! device's month changes, calls its `YearTracker`; the last event time and the last relay
//! stamp (the time of a line without a stamp) are read from the parser when a scan starts
//! and written back when it returns, so a record handed back is parsed with the state the
//! pure Python path would have. The parse counters are added to `parser.stats`.
//!
//! The header regexes are the Python ones (`_FAST`, `_FAST_BARE`, `_HEADER_ONLY`,
//! `_TAIL_STARTS`), rewritten by `streams/core/native.py` for ASCII bytes.
//!
//! `analyze` scans with [`Scanner::scan_fleet`]: the clock rows go to a
//! [`fleet::FleetCore`], which keeps the fleet clock's lanes and the clocks of the devices
//! that only ever moved their clock, and applies their rows itself; the rows of the other
//! devices go to Python in order (`on_rows`). A row of a device the core keeps never
//! becomes a Python object, not even its device's name.

mod fleet;
mod kafka;
// recvmmsg, eventfd and ppoll: Linux only (elsewhere the receiver keeps its Python UDP path).
#[cfg(target_os = "linux")]
mod receiver;
mod scan;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use memchr::{memchr, memchr2};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use regex::bytes::{CaptureLocations, Regex};

/// `parse.MAX_LINE`: longer records go to Python (which truncates them).
const MAX_LINE: usize = 65536;
/// `framing.MAX_RECORD`.
const MAX_RECORD: usize = 65536;
/// `framing`: a relay header standing alone is shorter than this.
const HEADER_ONLY_MAX: usize = 120;
const DEVICE_CACHE_MAX: usize = 100_000;
const TZ_CACHE_MAX: usize = 4096;

const SRC_DEVICE: u8 = 0;
const SRC_RELAY: u8 = 1;
const SRC_INFERRED: u8 = 2;

// -- small helpers -----------------------------------------------------------------------

#[derive(Default, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub(crate) type FnvBuild = BuildHasherDefault<Fnv>;

/// Python's `\s` (and `str.isspace`) on ASCII.
#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | 0x1c..=0x1f | b' ')
}

/// Python's `str.isspace` for one character.
#[inline]
fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\x1c'..='\x1f'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// `not line or line.isspace()`.
fn is_blank(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().all(is_space)
    } else {
        s.chars().all(is_py_space)
    }
}

#[inline]
fn is_upper(b: u8) -> bool {
    b.is_ascii_uppercase()
}

#[inline]
fn is_tag_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
}

/// `str.isalpha()` on ASCII.
fn is_alpha(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_alphabetic)
}

/// `str.isdigit()` on ASCII.
fn is_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// An integer of ASCII digits (the regex guarantees digits; at most 12 of them).
fn int(s: &[u8]) -> i64 {
    s.iter().fold(0i64, |n, b| n * 10 + i64::from(b - b'0'))
}

/// `float("0." + digits)`: n / 10^k is correctly rounded, as is Python's parse.
fn frac_of(digits: &[u8]) -> f64 {
    if digits.is_empty() {
        return 0.0;
    }
    int(digits) as f64 / 10f64.powi(digits.len() as i32)
}

fn month_of(m: &[u8]) -> i64 {
    match m {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => 0,
    }
}

/// `h:mm:ss` or `hh:mm:ss`.
fn hms(s: &[u8]) -> (i64, i64, i64) {
    let n = s.len();
    (int(&s[..n - 6]), int(&s[n - 5..n - 3]), int(&s[n - 2..]))
}

fn is_leap(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `clock.epoch_of`: `Ok(None)` when the date does not exist; `Err(())` where Python's
/// `calendar.timegm` raises (a year outside 1..=9999): that record goes to Python.
fn epoch_of(year: i64, month: i64, day: i64, hh: i64, mm: i64, ss: i64) -> Result<Option<f64>, ()> {
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Ok(None);
    }
    if !(1..=9999).contains(&year) {
        return Err(());
    }
    if hh > 23 || mm > 59 || ss > 60 {
        return Ok(None);
    }
    Ok(Some((days_from_civil(year, month, day) * 86_400 + hh * 3600 + mm * 60 + ss) as f64))
}

// -- the message tag ---------------------------------------------------------------------

/// A match of `header.TAG_RE`.
#[derive(Clone, Debug)]
struct Tag {
    start: usize,
    fac: (usize, usize),
    sev: u8,
    mnem: (usize, usize),
}

/// `TAG_RE` at a '%': `%FAC(-SUB)*?-SEV-MNEMONIC\s*:`. The facility's lazy repetition is
/// deterministic here: a segment is always maximal (a shorter one leaves a tag character
/// where '-' must follow), and after a '-' either a severity digit or a new segment's
/// capital follows, never both.
fn tag_at(s: &[u8], at: usize) -> Option<Tag> {
    let n = s.len();
    let fac_start = at + 1;
    if fac_start >= n || !is_upper(s[fac_start]) {
        return None;
    }
    let mut p = fac_start + 1;
    loop {
        while p < n && is_tag_char(s[p]) {
            p += 1;
        }
        if p >= n || s[p] != b'-' {
            return None;
        }
        if p + 2 < n && (b'0'..=b'7').contains(&s[p + 1]) && s[p + 2] == b'-' {
            let mstart = p + 3;
            let mut q = mstart;
            while q < n && is_tag_char(s[q]) {
                q += 1;
            }
            if q > mstart {
                let mend = q;
                while q < n && is_space(s[q]) {
                    q += 1;
                }
                if q < n && s[q] == b':' {
                    return Some(Tag { start: at, fac: (fac_start, p), sev: s[p + 1] - b'0', mnem: (mstart, mend) });
                }
            }
            return None;
        }
        if p + 1 < n && is_upper(s[p + 1]) {
            p += 2;
            continue;
        }
        return None;
    }
}

/// `TAG_RE.search(line)` on ASCII bytes.
fn find_tag(s: &[u8]) -> Option<Tag> {
    let mut from = 0;
    while let Some(i) = memchr(b'%', &s[from..]) {
        let at = from + i;
        if let Some(t) = tag_at(s, at) {
            return Some(t);
        }
        from = at + 1;
    }
    None
}

// -- stamps and headers ------------------------------------------------------------------

/// `header.Stamp`, borrowing its timezone label.
#[derive(Clone, Copy, Debug)]
struct Stamp<'a> {
    year: Option<i64>,
    month: i64,
    day: i64,
    hh: i64,
    mm: i64,
    ss: i64,
    frac: f64,
    tz: Option<&'a [u8]>,
    synced: bool,
    offset_min: Option<i64>,
}

/// A `Stamp` kept across lines: the last relay stamp.
#[derive(Clone, Debug)]
struct OwnedStamp {
    year: Option<i64>,
    month: i64,
    day: i64,
    hh: i64,
    mm: i64,
    ss: i64,
    frac: f64,
    tz: Option<Vec<u8>>,
    synced: bool,
    offset_min: Option<i64>,
}

impl OwnedStamp {
    fn of(st: &Stamp<'_>) -> Self {
        OwnedStamp {
            year: st.year,
            month: st.month,
            day: st.day,
            hh: st.hh,
            mm: st.mm,
            ss: st.ss,
            frac: st.frac,
            tz: st.tz.map(<[u8]>::to_vec),
            synced: st.synced,
            offset_min: st.offset_min,
        }
    }

    fn view(&self) -> Stamp<'_> {
        Stamp {
            year: self.year,
            month: self.month,
            day: self.day,
            hh: self.hh,
            mm: self.mm,
            ss: self.ss,
            frac: self.frac,
            tz: self.tz.as_deref(),
            synced: self.synced,
            offset_min: self.offset_min,
        }
    }

    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        let tz: Option<String> = obj.getattr(intern!(py, "tz"))?.extract()?;
        Ok(OwnedStamp {
            year: obj.getattr(intern!(py, "year"))?.extract()?,
            month: obj.getattr(intern!(py, "month"))?.extract()?,
            day: obj.getattr(intern!(py, "day"))?.extract()?,
            hh: obj.getattr(intern!(py, "hh"))?.extract()?,
            mm: obj.getattr(intern!(py, "mm"))?.extract()?,
            ss: obj.getattr(intern!(py, "ss"))?.extract()?,
            frac: obj.getattr(intern!(py, "frac"))?.extract()?,
            tz: tz.map(String::into_bytes),
            synced: obj.getattr(intern!(py, "synced"))?.extract()?,
            offset_min: obj.getattr(intern!(py, "offset_min"))?.extract()?,
        })
    }
}

fn stamp_tuple<'py>(py: Python<'py>, st: &Stamp<'_>) -> PyResult<Bound<'py, PyTuple>> {
    let tz = st.tz.map(|t| String::from_utf8_lossy(t).into_owned());
    (st.year, st.month, st.day, st.hh, st.mm, st.ss, st.frac, tz, st.synced, st.offset_min).into_pyobject(py)
}

/// What `fast_prefix` reads of a header (the parts the event needs).
#[derive(Debug)]
struct Hdr<'a> {
    host: Option<&'a [u8]>,
    origin: Option<&'a [u8]>,
    relay: Option<Stamp<'a>>,
    device: Option<Stamp<'a>>,
    clock_synced: bool,
}

/// Capture positions of one header prefix: `_FAST`'s groups (in `FastGroups` order), or
/// `_FAST_BARE`'s name, or neither regex matches.
#[derive(Clone, Copy)]
enum Shape {
    NoMatch,
    Fast([(u32, u32); NG]),
    Bare(u32, u32),
}

const NG: usize = 17;
const UNSET: (u32, u32) = (u32::MAX, u32::MAX);
/// Prefixes up to this long have their shape memoized.
const SHAPE_KEY_MAX: usize = 192;
const SHAPE_CACHE_MAX: usize = 65_536;

/// Capture group numbers of `_FAST`.
struct FastGroups {
    rmon: usize,
    rday: usize,
    ryear: usize,
    rhms: usize,
    riso: usize,
    host: usize,
    counter: usize,
    origin: usize,
    seq: usize,
    flag: usize,
    mon: usize,
    day: usize,
    year: usize,
    hms: usize,
    frac: usize,
    tz: usize,
    dhost: usize,
}

impl FastGroups {
    fn all(&self) -> [usize; NG] {
        [
            self.rmon,
            self.rday,
            self.ryear,
            self.rhms,
            self.riso,
            self.host,
            self.counter,
            self.origin,
            self.seq,
            self.flag,
            self.mon,
            self.day,
            self.year,
            self.hms,
            self.frac,
            self.tz,
            self.dhost,
        ]
    }
}

/// Where `_FAST` / `_FAST_BARE` match `p`, straight from the regexes.
fn shape_of(cfg: &HeaderCfg, cache: &mut HeaderMemo, p: &[u8]) -> Shape {
    if cfg.fast.captures_read(&mut cache.fast_locs, p).is_some() {
        let mut g = [UNSET; NG];
        for (slot, idx) in g.iter_mut().zip(cfg.fg.all()) {
            if let Some((a, b)) = cache.fast_locs.get(idx) {
                *slot = (a as u32, b as u32);
            }
        }
        return Shape::Fast(g);
    }
    if cfg.bare.captures_read(&mut cache.bare_locs, p).is_some() {
        if let Some((a, b)) = cache.bare_locs.get(cfg.bare_name) {
            return Shape::Bare(a as u32, b as u32);
        }
    }
    Shape::NoMatch
}

/// `shape_of`, memoized by the prefix's skeleton (every digit read as '0'). Both regexes
/// treat all ASCII digits alike (no digit literal, and every class holds all ten or
/// none: checked when the scanner is built), so a prefix and its skeleton match with the
/// same positions. A few skeletons per device cover an archive.
fn shape(cfg: &HeaderCfg, cache: &mut HeaderMemo, p: &[u8]) -> Shape {
    if p.len() > SHAPE_KEY_MAX {
        return shape_of(cfg, cache, p);
    }
    cache.skel.clear();
    cache.skel.extend(p.iter().map(|&b| if b.is_ascii_digit() { b'0' } else { b }));
    if let Some(sh) = cache.shapes.get(cache.skel.as_slice()) {
        return *sh;
    }
    let sh = shape_of(cfg, cache, p);
    if cache.shapes.len() < SHAPE_CACHE_MAX {
        cache.shapes.insert(cache.skel.clone(), sh);
    }
    sh
}

/// Whether a regex (as `rust_pattern` writes it) treats every ASCII digit alike: every
/// digit in it stands in a `0-9` range, a `{m,n}` repetition or a `\xNN` escape.
fn digit_blind(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if b.get(i + 1) == Some(&b'x') => i += 4,
            b'\\' => i += 2,
            b'{' => {
                while i < b.len() && b[i] != b'}' {
                    i += 1;
                }
                i += 1;
            }
            b'0' if b.get(i + 1) == Some(&b'-') && b.get(i + 2) == Some(&b'9') => i += 3,
            c if c.is_ascii_digit() => return false,
            _ => i += 1,
        }
    }
    true
}

fn group(re: &Regex, name: &str) -> PyResult<usize> {
    re.capture_names()
        .position(|n| n == Some(name))
        .ok_or_else(|| PyValueError::new_err(format!("pattern has no group {name:?}")))
}

fn compile(pattern: &str) -> PyResult<Regex> {
    Regex::new(pattern).map_err(|e| PyValueError::new_err(format!("bad pattern: {e}")))
}

/// `_iso_stamp(_ISO.match(riso))` for the relay ISO stamp `_FAST` accepts:
/// `YYYY-MM-DDTHH:MM:SS(.f{1,6})?(Z|[+-]HH:MM)`.
fn iso_stamp(t: &[u8]) -> Stamp<'_> {
    let mut p = 19;
    let mut frac = 0.0;
    if t.get(p) == Some(&b'.') {
        let start = p + 1;
        p = start;
        while p < t.len() && t[p].is_ascii_digit() {
            p += 1;
        }
        frac = frac_of(&t[start..p.min(start + 6)]);
    }
    let off = &t[p..];
    let offset = if off == b"Z" {
        0
    } else {
        let m = int(&off[1..3]) * 60 + int(&off[4..6]);
        if off[0] == b'-' {
            -m
        } else {
            m
        }
    };
    Stamp {
        year: Some(int(&t[0..4])),
        month: int(&t[5..7]),
        day: int(&t[8..10]),
        hh: int(&t[11..13]),
        mm: int(&t[14..16]),
        ss: int(&t[17..19]),
        frac,
        tz: Some(off),
        synced: true,
        offset_min: Some(offset),
    }
}

// -- the scanner -------------------------------------------------------------------------

/// What `fast_prefix` needs: the two header regexes and `clock.tz_offset_minutes`.
pub(crate) struct HeaderCfg {
    tz_fn: Py<PyAny>,
    fast: Regex,
    fg: FastGroups,
    bare: Regex,
    bare_name: usize,
}

impl HeaderCfg {
    /// `fast` and `fast_bare` as `native.rust_pattern` writes `_FAST` and `_FAST_BARE`.
    pub(crate) fn new(fast: &str, fast_bare: &str, tz_offset_minutes: Py<PyAny>) -> PyResult<Self> {
        if !digit_blind(fast) || !digit_blind(fast_bare) {
            return Err(PyValueError::new_err("the header patterns must treat all digits alike"));
        }
        let fast = compile(fast)?;
        let bare = compile(fast_bare)?;
        let fg = FastGroups {
            rmon: group(&fast, "rmon")?,
            rday: group(&fast, "rday")?,
            ryear: group(&fast, "ryear")?,
            rhms: group(&fast, "rhms")?,
            riso: group(&fast, "riso")?,
            host: group(&fast, "host")?,
            counter: group(&fast, "counter")?,
            origin: group(&fast, "origin")?,
            seq: group(&fast, "seq")?,
            flag: group(&fast, "flag")?,
            mon: group(&fast, "mon")?,
            day: group(&fast, "day")?,
            year: group(&fast, "year")?,
            hms: group(&fast, "hms")?,
            frac: group(&fast, "frac")?,
            tz: group(&fast, "tz")?,
            dhost: group(&fast, "dhost")?,
        };
        let bare_name = group(&bare, "name")?;
        Ok(HeaderCfg { tz_fn: tz_offset_minutes, fast, fg, bare, bare_name })
    }

    pub(crate) fn memo(&self) -> HeaderMemo {
        HeaderMemo {
            tz: HashMap::default(),
            fast_locs: self.fast.capture_locations(),
            bare_locs: self.bare.capture_locations(),
            shapes: HashMap::default(),
            skel: Vec::with_capacity(SHAPE_KEY_MAX),
        }
    }
}

/// `fast_prefix`'s memo tables and scratch space.
pub(crate) struct HeaderMemo {
    tz: HashMap<Vec<u8>, (i64, bool), FnvBuild>,
    fast_locs: CaptureLocations,
    bare_locs: CaptureLocations,
    shapes: HashMap<Vec<u8>, Shape, FnvBuild>,
    skel: Vec<u8>,
}

/// Settings, fixed at construction.
struct Config {
    parser: Py<PyAny>,
    header_only_fn: Py<PyAny>,
    stamp_cls: Py<PyAny>,
    tags: HashSet<Vec<u8>, FnvBuild>,
    asa: Vec<Vec<u8>>,
    wrappers: Vec<Vec<u8>>,
    hdr: HeaderCfg,
    header_only: Regex,
    tail_starts: Regex,
    scan: scan::ScanCfg,
    /// `Catalog.lookup` of the catalog tags, where an entry may be inert (see `Lookup`).
    lookup: HashMap<Vec<u8>, Lookup, FnvBuild>,
    /// `catalog.ASA_IKE_PREFIX`, anchored.
    asa_prefix: Regex,
    /// `header.BARE_TAG_RE`, anchored.
    bare_tag: Regex,
    /// The catalog's untagged text patterns (`Catalog.lookup_text`), for `search`; None:
    /// untagged records go to the parser.
    text_entries: Option<Vec<Regex>>,
    with_text: bool,
    src: [Py<PyString>; 3],
    empty: Py<PyString>,
}

/// One entry of a catalog tag: its regex (None: it matches any text), whether it is
/// *inert* and whether it has `optional_regex`. An inert entry gives a kind that no rule,
/// resolver, corroboration or `unless` reads, and learns nothing (no `local`, no
/// `conn_id`): `engine.step` does with its event what `engine.clock` does with an event
/// without a kind, so the record is a clock row (the parser counts it as classified).
struct LookupEntry {
    regex: Option<Regex>,
    inert: bool,
    optional: bool,
}

/// An entry as `native.catalog_lookup` gives it: `(pattern, inert, optional)`.
type LookupArg = (Option<String>, bool, bool);

/// `Catalog.lookup` for one tag: the entries in file order.
struct Lookup {
    entries: Vec<LookupEntry>,
}

impl Lookup {
    /// `None`: the first entry that matches is not inert (the Python parser reads the
    /// record); `Some(classified)`: a clock row, classified by an inert entry or by none.
    fn row(&self, text: &[u8]) -> Option<bool> {
        let hit = self
            .entries
            .iter()
            .find(|e| e.regex.as_ref().is_none_or(|re| re.is_match(text)))
            .or_else(|| self.entries.iter().find(|e| e.optional));
        match hit {
            None => Some(false),
            Some(e) if e.inert => Some(true),
            Some(_) => None,
        }
    }
}

/// `Catalog.lookup`'s text of a tagged body: after the ASA "Group = .., IP = ..," prefix
/// for ASA facilities, at most `parse.MAX_MATCH` characters.
const MAX_MATCH: usize = 2048;

/// Memo tables and scratch space.
struct Cache {
    devices: HashMap<Vec<u8>, Py<PyString>, FnvBuild>,
    hdr: HeaderMemo,
    scan: scan::ScanMemo,
    bare_locs: CaptureLocations,
    key: Vec<u8>,
}

impl Cache {
    fn device<'py>(&mut self, py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
        if let Some(s) = self.devices.get(name) {
            return s.bind(py).clone();
        }
        // The record is ASCII, so any slice of it is UTF-8.
        let s = PyString::new(py, std::str::from_utf8(name).unwrap_or(""));
        if self.devices.len() < DEVICE_CACHE_MAX {
            self.devices.insert(name.to_vec(), s.clone().unbind());
        }
        s
    }
}

impl HeaderMemo {
    /// `clock.tz_offset_minutes(label)`, asked of Python once per label.
    fn tz(&mut self, py: Python<'_>, cfg: &HeaderCfg, label: Option<&[u8]>) -> PyResult<(i64, bool)> {
        let label = match label {
            None | Some(b"") => return Ok((0, true)),
            Some(l) => l,
        };
        if let Some(v) = self.tz.get(label) {
            return Ok(*v);
        }
        let text = String::from_utf8_lossy(label);
        let v: (i64, bool) = cfg.tz_fn.bind(py).call1((text.as_ref(),))?.extract()?;
        if self.tz.len() < TZ_CACHE_MAX {
            self.tz.insert(label.to_vec(), v);
        }
        Ok(v)
    }

    fn tz_known(&mut self, py: Python<'_>, cfg: &HeaderCfg, label: &[u8]) -> PyResult<bool> {
        Ok(self.tz(py, cfg, Some(label))?.1)
    }
}

/// The parser state that outlives a record, mirrored from the Python `Parser`.
struct ParseState {
    last_ts: Option<f64>,
    relay: Option<(OwnedStamp, Option<Py<PyString>>)>,
    /// The `_last_relay` tuple the parser held when we last looked or wrote.
    relay_obj: Option<Py<PyAny>>,
    ts_dirty: bool,
    relay_dirty: bool,
}

/// What one scan reads from the parser when it starts.
struct Session<'py> {
    tracker: Bound<'py, PyAny>,
    last: Bound<'py, PyDict>,
    device: Option<Bound<'py, PyString>>,
    reference: f64,
    /// The worker's batch path (`Scanner.records`): the record's transport source, the
    /// device of a line that names none when the parser has no `device`.
    source: Option<Bound<'py, PyString>>,
    /// The worker's batch path: the receive time, the time of a line without a stamp.
    received: Option<f64>,
    rows: i64,
    unknown_tz: i64,
    classified: i64,
}

enum Line {
    Ascii(usize, usize),
    Text(String),
}

enum Pending {
    Ascii(usize, usize),
    /// A record that is not one ASCII line of the buffer; its length in characters.
    Text(String, usize),
}

struct Input {
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    pending: Option<Pending>,
    pending_header_only: bool,
}

impl Input {
    /// The next physical line (universal newlines); None when more input is needed or
    /// the input is exhausted.
    fn next_line(&mut self) -> Option<Line> {
        let n = self.buf.len();
        if self.pos >= n {
            return None;
        }
        let start = self.pos;
        match memchr2(b'\n', b'\r', &self.buf[start..]) {
            Some(i) => {
                let end = start + i;
                let mut next = end + 1;
                if self.buf[end] == b'\r' {
                    if end + 1 < n {
                        if self.buf[end + 1] == b'\n' {
                            next = end + 2;
                        }
                    } else if !self.eof {
                        return None; // is the '\r' followed by '\n'? wait for the next chunk
                    }
                }
                self.pos = next;
                Some(self.line(start, end))
            }
            None => {
                if !self.eof {
                    return None;
                }
                self.pos = n;
                Some(self.line(start, n))
            }
        }
    }

    fn line(&self, start: usize, end: usize) -> Line {
        let b = &self.buf[start..end];
        if b.is_ascii() {
            Line::Ascii(start, end)
        } else {
            Line::Text(String::from_utf8_lossy(b).into_owned())
        }
    }

    fn text<'a>(&'a self, line: &'a Line) -> &'a str {
        match line {
            // SAFETY: `line()` made an Ascii line only of ASCII bytes, which are UTF-8.
            Line::Ascii(a, b) => unsafe { std::str::from_utf8_unchecked(&self.buf[*a..*b]) },
            Line::Text(s) => s,
        }
    }

    fn pending_text(&self) -> (String, usize) {
        match self.pending.as_ref() {
            Some(Pending::Ascii(a, b)) => (String::from_utf8_lossy(&self.buf[*a..*b]).into_owned(), b - a),
            Some(Pending::Text(s, n)) => (s.clone(), *n),
            None => (String::new(), 0),
        }
    }

    fn pending_chars(&self) -> usize {
        match self.pending.as_ref() {
            Some(Pending::Ascii(a, b)) => b - a,
            Some(Pending::Text(_, n)) => *n,
            None => 0,
        }
    }
}

struct Row<'py> {
    device: Option<Bound<'py, PyString>>,
    /// Where the device's name is in the record, when `device` was left out (a fleet
    /// scan reads the name, and Python's string is made only if Python needs it).
    name: Option<(usize, usize)>,
    ts: f64,
    source: u8,
    synced: bool,
    tz_known: bool,
    /// An inert catalog message the parser would classify.
    classified: bool,
}

/// How the time of a stamp came out.
enum Ts {
    At(f64, bool),
    NoDate,
}

/// Scans archive bytes; see the module documentation.
#[pyclass(module = "tunnelwatch_native")]
struct Scanner {
    cfg: Config,
    cache: Cache,
    state: ParseState,
    input: Input,
}

fn year_for(
    py: Python<'_>,
    cfg: &Config,
    sess: &Session<'_>,
    device: Option<&Bound<'_, PyString>>,
    month: i64,
    day: i64,
) -> PyResult<i64> {
    // YearTracker.year_for keeps last[device or ""] = (year, month); while a device stays
    // in one month the answer is that year and nothing changes, so only a month change
    // needs the tracker itself.
    let key = match device {
        Some(d) => d.as_any().clone(),
        None => cfg.empty.bind(py).clone().into_any(),
    };
    if let Some(v) = sess.last.get_item(&key)? {
        if let Ok(t) = v.cast::<PyTuple>() {
            if t.len() == 2 {
                let m: i64 = t.get_item(1)?.extract()?;
                if m == month {
                    return t.get_item(0)?.extract();
                }
            }
        }
    }
    sess.tracker.call_method1(intern!(py, "year_for"), (device, month, day))?.extract()
}

/// `Parser._stamp_ts`; `Ok(None)`: hand the record to Python.
fn stamp_ts(
    py: Python<'_>,
    cfg: &Config,
    cache: &mut Cache,
    sess: &Session<'_>,
    st: &Stamp<'_>,
    device: Option<&Bound<'_, PyString>>,
) -> PyResult<Option<Ts>> {
    let year = match st.year {
        Some(y) => y,
        None => year_for(py, cfg, sess, device, st.month, st.day)?,
    };
    let base = match epoch_of(year, st.month, st.day, st.hh, st.mm, st.ss) {
        Err(()) => return Ok(None),
        Ok(None) => return Ok(Some(Ts::NoDate)),
        Ok(Some(b)) => b,
    };
    if let Some(off) = st.offset_min {
        return Ok(Some(Ts::At(base - (off * 60) as f64 + st.frac, true)));
    }
    let (off, known) = cache.hdr.tz(py, &cfg.hdr, st.tz)?;
    Ok(Some(Ts::At(base - (off * 60) as f64 + st.frac, known)))
}

/// `header.fast_prefix(s, len(s))`; `Ok(None)` where it returns None.
pub(crate) fn fast_prefix<'a>(
    py: Python<'_>,
    cfg: &HeaderCfg,
    cache: &mut HeaderMemo,
    p: &'a [u8],
) -> PyResult<Option<Hdr<'a>>> {
    let g = match shape(cfg, cache, p) {
        Shape::NoMatch => return Ok(None),
        Shape::Bare(a, b) => {
            let name = &p[a as usize..b as usize];
            if is_alpha(name) && cache.tz_known(py, cfg, name)? {
                return Ok(None);
            }
            return Ok(Some(Hdr { host: None, origin: Some(name), relay: None, device: None, clock_synced: true }));
        }
        Shape::Fast(g) => g,
    };
    let get = |i: usize| {
        let (a, b) = g[i];
        if a == u32::MAX {
            None
        } else {
            Some(&p[a as usize..b as usize])
        }
    };
    let [rmon, rday, ryear, rhms, riso, host, counter, origin, seq, flag, mon, day, year, hmsg, frac, tz, dhost] =
        std::array::from_fn(get);
    if let Some(h) = host {
        if (is_alpha(h) && cache.tz_known(py, cfg, h)?) || is_digits(h) {
            return Ok(None);
        }
    }
    if mon.is_none() && rmon.is_none() && riso.is_none() {
        return Ok(None);
    }
    let mut hdr = Hdr { host: None, origin: None, relay: None, device: None, clock_synced: true };
    let mut relay: Option<Stamp<'a>> = None;
    if let Some(rm) = rmon {
        let (hh, mm, ss) = hms(rhms.unwrap_or(b"0:00:00"));
        relay = Some(Stamp {
            year: ryear.map(int),
            month: month_of(rm),
            day: int(rday.unwrap_or(b"0")),
            hh,
            mm,
            ss,
            frac: 0.0,
            tz: None,
            synced: true,
            offset_min: None,
        });
        hdr.host = host;
    } else if let Some(ri) = riso {
        relay = Some(iso_stamp(ri));
        hdr.host = host;
    }
    if counter.is_some() && relay.is_some() && origin.is_none() && seq.is_none() && mon.is_none() {
        return Ok(None);
    }
    if let Some(o) = origin {
        if is_alpha(o) && cache.tz_known(py, cfg, o)? {
            return Ok(None);
        }
        hdr.origin = Some(o);
    }
    if let Some(m) = mon {
        if let Some(t) = tz {
            if frac.is_none() && flag.is_none() && counter.is_none() && !cache.tz_known(py, cfg, t)? {
                return Ok(None);
            }
        }
        if let Some(d) = dhost {
            if hdr.origin.is_some() || (tz.is_none() && is_alpha(d)) {
                return Ok(None);
            }
            hdr.origin = Some(d);
        }
        let (hh, mm, ss) = hms(hmsg.unwrap_or(b"0:00:00"));
        hdr.device = Some(Stamp {
            year: year.map(int),
            month: month_of(m),
            day: int(day.unwrap_or(b"0")),
            hh,
            mm,
            ss,
            frac: frac.map_or(0.0, frac_of),
            tz,
            synced: flag.is_none(),
            offset_min: None,
        });
        hdr.relay = relay;
    } else {
        hdr.device = relay;
    }
    hdr.clock_synced = hdr.device.is_some_and(|d| d.synced);
    Ok(Some(hdr))
}

/// Where `TAG_RE`'s match ends: after `\s*:[ \t]*` after the mnemonic.
fn tag_end(s: &[u8], tag: &Tag) -> usize {
    let mut p = tag.mnem.1;
    while p < s.len() && is_space(s[p]) {
        p += 1;
    }
    p += 1; // the ':' (find_tag found it)
    while p < s.len() && matches!(s[p], b' ' | b'\t') {
        p += 1;
    }
    p.min(s.len())
}

/// The text `Parser._parse` hands `Catalog.lookup` for a message body: after
/// `ASA_IKE_PREFIX` for an ASA facility, cut at `MAX_MATCH` characters.
fn lookup_text<'a>(cfg: &Config, mut body: &'a [u8], asa: bool) -> &'a [u8] {
    if asa {
        if let Some(m) = cfg.asa_prefix.find(body) {
            body = &body[m.end()..];
        }
    }
    &body[..body.len().min(MAX_MATCH)]
}

/// `Parser.parse` of one single-line ASCII record, when it is a clock row; `Ok(None)`
/// hands the record to Python. Nothing of the parser's state changes before the record
/// is known to be a row, but for `YearTracker.year_for`, which gives the same answer
/// and state when Python asks again.
fn clock_row<'py>(
    py: Python<'py>,
    cfg: &Config,
    cache: &mut Cache,
    state: &mut ParseState,
    sess: &Session<'py>,
    s: &[u8],
    lazy: bool,
) -> PyResult<Option<Row<'py>>> {
    let base = if lazy { Some(s) } else { None };
    if s.len() > MAX_LINE {
        return Ok(None);
    }
    let Some(tag) = find_tag(s) else {
        return match untagged(py, cfg, cache, s)? {
            None => Ok(None),
            Some((full, classified)) => {
                event_row(py, cfg, cache, state, sess, full.hdr, full.uptime, classified, base)
            }
        };
    };
    let fac = &s[tag.fac.0..tag.fac.1];
    let mnem = &s[tag.mnem.0..tag.mnem.1];
    if cfg.wrappers.iter().any(|w| w.as_slice() == mnem) {
        return Ok(None);
    }
    let Some(classified) = catalog_row(cfg, cache, fac, mnem, &s[tag_end(s, &tag)..]) else {
        return Ok(None); // a catalog message the engine reads
    };
    let (h, uptime) = match fast_prefix(py, &cfg.hdr, &mut cache.hdr, &s[..tag.start])? {
        Some(h) => (h, None),
        None => {
            let full = scan::scan_prefix(py, &cfg.scan, &cfg.hdr, &mut cache.scan, &mut cache.hdr, s, tag.start)?;
            (full.hdr, full.uptime)
        }
    };
    event_row(py, cfg, cache, state, sess, h, uptime, classified, base)
}

/// `Catalog.lookup` of a message with this facility and mnemonic and `body` (the text
/// after the tag), as the scanner decides it: `Some(classified)` for a clock row (a tag
/// outside the catalog, an inert entry, or no entry matching), None for the parser.
fn catalog_row(cfg: &Config, cache: &mut Cache, fac: &[u8], mnem: &[u8], body: &[u8]) -> Option<bool> {
    cache.key.clear();
    let asa = cfg.asa.iter().any(|a| a.as_slice() == fac);
    if asa {
        cache.key.extend_from_slice(b"ASA-");
    } else {
        cache.key.extend_from_slice(fac);
        cache.key.push(b'-');
    }
    cache.key.extend_from_slice(mnem);
    if let Some(lookup) = cfg.lookup.get(cache.key.as_slice()) {
        return lookup.row(lookup_text(cfg, body, asa));
    }
    if cfg.tags.contains(cache.key.as_slice()) {
        return None;
    }
    Some(false)
}

/// A record without a `%` tag, as `Parser._parse` reads it: the header up to the first
/// token that is no header part (`scan_prefix(..., tagged=False)`), then a tag without
/// its '%' (`BARE_TAG_RE`) read as a tagged message, or else the catalog's untagged
/// text patterns: a match goes to the parser, and so does a line with neither PRI, stamp
/// nor uptime (not syslog); what is left is an event without a kind. `Some((header,
/// classified))` for a clock row.
fn untagged<'a>(
    py: Python<'_>,
    cfg: &Config,
    cache: &mut Cache,
    s: &'a [u8],
) -> PyResult<Option<(scan::Full<'a>, bool)>> {
    let Some(texts) = cfg.text_entries.as_ref() else {
        return Ok(None);
    };
    let (full, body_start, pri) = scan::scan_untagged(py, &cfg.scan, &cfg.hdr, &mut cache.scan, &mut cache.hdr, s)?;
    let rest = &s[body_start..];
    if let Some(m) = cfg.bare_tag.captures_read(&mut cache.bare_locs, rest) {
        let (Some((f0, f1)), Some((m0, m1))) = (cache.bare_locs.get(1), cache.bare_locs.get(3)) else {
            return Ok(None);
        };
        let end = m.end();
        return Ok(catalog_row(cfg, cache, &rest[f0..f1], &rest[m0..m1], &rest[end..]).map(|c| (full, c)));
    }
    if texts.iter().any(|re| re.is_match(&s[..s.len().min(MAX_MATCH)])) {
        return Ok(None); // a catalog text pattern: the parser reads it
    }
    if !pri && full.hdr.device.is_none() && full.uptime.is_none() {
        return Ok(None); // not syslog: the parser says so
    }
    Ok(Some((full, false)))
}

/// `header.uptime_seconds`: `00:01:01` (may carry msec), `1d02h`, `42w2d`, `2y10w`; None
/// for what it does not read exactly (more digits than an i64 holds).
fn uptime_seconds(text: &[u8]) -> Option<f64> {
    let int = |d: &[u8]| -> Option<i64> {
        if d.is_empty() || d.len() > 12 || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(d).ok()?.parse().ok()
    };
    if text.contains(&b':') {
        let mut parts = text.split(|&b| b == b':');
        let (hh, mm, ss) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let ss: f64 = std::str::from_utf8(ss).ok()?.parse().ok()?;
        return Some((int(hh)? * 3600 + int(mm)? * 60) as f64 + ss);
    }
    let mut total: i64 = 0;
    let mut i = 0;
    while i < text.len() {
        let d = text[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let unit = match text.get(i + d)? {
            b'y' => 365 * 86400,
            b'w' => 7 * 86400,
            b'd' => 86400,
            b'h' => 3600,
            b'm' => 60,
            b's' => 1,
            _ => return None,
        };
        total = total.checked_add(int(&text[i..i + d])?.checked_mul(unit)?)?;
        i += d + 1;
    }
    Some(total as f64)
}

/// `Parser._event` of a record read as a clock row; `Ok(None)` hands it to Python.
#[allow(clippy::too_many_arguments)]
fn event_row<'py>(
    py: Python<'py>,
    cfg: &Config,
    cache: &mut Cache,
    state: &mut ParseState,
    sess: &Session<'py>,
    h: Hdr<'_>,
    uptime: Option<&[u8]>,
    classified: bool,
    base: Option<&[u8]>,
) -> PyResult<Option<Row<'py>>> {
    // Parser._event
    let mut name_at: Option<(usize, usize)> = None;
    let device: Option<Bound<'py, PyString>> = match h.host.or(h.origin) {
        Some(name) => {
            // A fleet scan (`base`: the record) of a line whose time is its own stamp with
            // a year: the device's name is not needed as a Python string to read it.
            let simple = h.relay.is_none() && uptime.is_none() && h.device.is_some_and(|d| d.year.is_some());
            let at = (name.as_ptr() as usize).wrapping_sub(base.map_or(0, |b| b.as_ptr() as usize));
            match base {
                Some(b) if simple && at + name.len() <= b.len() => {
                    name_at = Some((at, at + name.len()));
                    None
                }
                _ => Some(cache.device(py, name)),
            }
        }
        None => sess.device.clone().or_else(|| sess.source.clone()),
    };
    let mut stamp = h.device;
    let mut source = SRC_DEVICE;
    if let (Some(r), Some(d)) = (h.relay, h.device) {
        if !d.synced {
            stamp = Some(r);
            source = SRC_RELAY;
        }
    } else if h.device.is_some() && h.relay.is_none() && h.host.is_some() && uptime.is_some() {
        // A relay's stamp and host before a device's uptime: the stamp is the relay's.
        source = SRC_RELAY;
    }
    let mut ts: Option<f64> = None;
    let mut tz_known = true;
    if let Some(st) = stamp {
        match stamp_ts(py, cfg, cache, sess, &st, device.as_ref())? {
            None => return Ok(None),
            Some(Ts::At(t, known)) => {
                ts = Some(t);
                tz_known = known;
            }
            Some(Ts::NoDate) => {}
        }
    }
    let ts = match (ts, sess.received) {
        (Some(t), _) => t,
        (None, Some(r)) => {
            // Parser._inferred_ts: the receive time comes first.
            source = SRC_INFERRED;
            r
        }
        (None, None) if uptime.is_some() && h.relay.is_none() && state.relay.is_none() => {
            // An uptime stamp with no clock to read it by: Parser._uptime_ts keeps its
            // distance from the device's first one (its anchors are the parser's), from
            // Parser._inferred_ts without a relay stamp.
            source = SRC_INFERRED;
            let Some(secs) = uptime.and_then(uptime_seconds) else {
                return Ok(None);
            };
            let base = state.last_ts.unwrap_or(sess.reference);
            cfg.parser
                .bind(py)
                .call_method1(intern!(py, "_uptime_ts"), (device.as_ref(), secs, base))?
                .extract()?
        }
        (None, None) => {
            // Parser._inferred_ts, with this record's relay stamp already the last one.
            source = SRC_INFERRED;
            let mut found: Option<f64> = None;
            let relay_ts = match (h.relay.as_ref(), state.relay.as_ref()) {
                (Some(r), _) => stamp_ts(py, cfg, cache, sess, r, device.as_ref())?,
                (None, Some((r, rdev))) => {
                    let rdev = rdev.as_ref().map(|d| d.bind(py).clone());
                    stamp_ts(py, cfg, cache, sess, &r.view(), rdev.as_ref())?
                }
                (None, None) => Some(Ts::NoDate),
            };
            match relay_ts {
                None => return Ok(None),
                Some(Ts::At(t, _)) => found = Some(t),
                Some(Ts::NoDate) => {}
            }
            found.or(state.last_ts).unwrap_or(sess.reference)
        }
    };
    if let Some(r) = h.relay.as_ref() {
        state.relay = Some((OwnedStamp::of(r), device.as_ref().map(|d| d.clone().unbind())));
        state.relay_dirty = true;
    }
    if source != SRC_INFERRED {
        state.last_ts = Some(ts);
        state.ts_dirty = true;
    }
    Ok(Some(Row { device, name: name_at, ts, source, synced: h.clock_synced, tz_known, classified }))
}

/// A clock row counted in the session's statistics.
fn count_row(sess: &mut Session<'_>, row: &Row<'_>) {
    sess.rows += 1;
    if !row.tz_known {
        sess.unknown_tz += 1;
    }
    if row.classified {
        sess.classified += 1;
    }
}

/// Where the clock rows of a scan go: a list for Python, or a fleet core that applies
/// those of its native devices and gives the others to `on_rows`, in order: the rows
/// Python is to apply wait in `pending` until a row the core applies comes (they are
/// handed over first), or the scan returns.
enum Sink<'a, 'py> {
    Rows(&'a Bound<'py, PyList>),
    Fleet {
        core: &'a Bound<'py, fleet::FleetCore>,
        on_rows: &'a Bound<'py, PyAny>,
        pending: &'a Bound<'py, PyList>,
        staged: &'a RefCell<Vec<Staged>>,
    },
}

/// A clock row of a fleet scan, read and not applied yet: a scan reads up to [`STAGE`]
/// rows, has the CPU fetch what the core will read for them, then applies them in order
/// (`Scanner::apply_staged`), so that with a large fleet the memory round trips of one
/// row overlap those of the others instead of following one another.
struct Staged {
    line: (usize, usize),
    /// The device's name in the input buffer; else its Python string, if any.
    name: Option<(usize, usize)>,
    device: Option<Py<PyString>>,
    ts: f64,
    source: u8,
    synced: bool,
    tz_known: bool,
    classified: bool,
}

const STAGE: usize = 64;

impl Sink<'_, '_> {
    /// Hand the waiting rows to Python (`on_rows`).
    fn flush(&self) -> PyResult<()> {
        if let Sink::Fleet { on_rows, pending, .. } = self {
            if !pending.is_empty() {
                on_rows.call1((pending,))?;
                pending.del_slice(0, pending.len())?;
            }
        }
        Ok(())
    }
}

/// A clock row as Python sees it (and counted in the session's statistics).
fn row_tuple<'py>(
    py: Python<'py>,
    cfg: &Config,
    sess: &mut Session<'py>,
    row: Row<'py>,
    s: &[u8],
    with_text: bool,
) -> PyResult<Bound<'py, PyAny>> {
    count_row(sess, &row);
    let device = match row.device {
        Some(d) => d.into_any(),
        None => py.None().into_bound(py),
    };
    let src = cfg.src[row.source as usize].bind(py).clone();
    Ok(if with_text {
        let text = PyString::new(py, std::str::from_utf8(s).unwrap_or(""));
        (device, row.ts, src, row.synced, row.tz_known, text).into_pyobject(py)?.into_any()
    } else {
        (device, row.ts, src, row.synced, row.tz_known).into_pyobject(py)?.into_any()
    })
}

/// One Kafka record's value as `Parser._parse` reads it, if the scanner can: its bytes
/// without the trailing CR/LF, when that is one ASCII line that is not blank.
fn record_line(value: &[u8]) -> Option<&[u8]> {
    let mut end = value.len();
    while end > 0 && matches!(value[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    let s = &value[..end];
    if s.is_empty() || !s.is_ascii() || memchr2(b'\n', b'\r', s).is_some() || is_blank_bytes(s) {
        return None;
    }
    Some(s)
}

/// The record at `i` of a batch (`Scanner.records`), if the scanner can read it: its
/// value and the length of its line (`record_line`), its source set in `sess`.
fn record_at<'py>(
    values: &Bound<'py, PyList>,
    sources: &Bound<'py, PyList>,
    i: usize,
    sess: &mut Session<'py>,
) -> PyResult<Option<(Bound<'py, PyBytes>, usize)>> {
    let Ok(value) = values.get_item(i)?.cast_into::<PyBytes>() else { return Ok(None) };
    let Some(end) = record_line(value.as_bytes()).map(<[u8]>::len) else { return Ok(None) };
    let src = sources.get_item(i)?;
    sess.source = if src.is_none() { None } else { Some(src.cast_into::<PyString>()?) };
    Ok(Some((value, end)))
}

/// `str.isspace()` of an ASCII line.
fn is_blank_bytes(s: &[u8]) -> bool {
    s.iter().all(|&b| is_space(b))
}

impl Scanner {
    fn begin<'py>(&mut self, py: Python<'py>) -> PyResult<Session<'py>> {
        let parser = self.cfg.parser.bind(py);
        let tracker = parser.getattr(intern!(py, "_years"))?;
        let last = tracker.getattr(intern!(py, "last"))?.cast_into::<PyDict>()?;
        let device: Option<Bound<'py, PyString>> = {
            let d = parser.getattr(intern!(py, "device"))?;
            if d.is_none() {
                None
            } else {
                Some(d.cast_into::<PyString>()?)
            }
        };
        let reference: Option<f64> = parser.getattr(intern!(py, "reference_ts"))?.extract()?;
        // Parser._inferred_ts ends with the capture's time, else the reference time.
        let context: Option<f64> = parser.getattr(intern!(py, "context_ts"))?.extract()?;
        self.state.last_ts = parser.getattr(intern!(py, "_last_ts"))?.extract()?;
        let relay = parser.getattr(intern!(py, "_last_relay"))?;
        if relay.is_none() {
            self.state.relay = None;
            self.state.relay_obj = None;
        } else if !self.state.relay_obj.as_ref().is_some_and(|o| relay.is(o)) {
            let t = relay.cast::<PyTuple>()?;
            let st = OwnedStamp::from_py(&t.get_item(0)?)?;
            let dev = t.get_item(1)?;
            let dev = if dev.is_none() { None } else { Some(dev.cast_into::<PyString>()?.unbind()) };
            self.state.relay = Some((st, dev));
            self.state.relay_obj = Some(relay.unbind());
        }
        self.state.ts_dirty = false;
        self.state.relay_dirty = false;
        Ok(Session {
            tracker,
            last,
            device,
            // `self.context_ts`, else `self.reference_ts or 0.0`: None, 0.0 and -0.0 all give 0.0.
            reference: context.unwrap_or_else(|| reference.filter(|r| *r != 0.0).unwrap_or(0.0)),
            source: None,
            received: None,
            rows: 0,
            unknown_tz: 0,
            classified: 0,
        })
    }

    fn end<'py>(&mut self, py: Python<'py>, sess: &Session<'py>) -> PyResult<()> {
        let parser = self.cfg.parser.bind(py);
        if sess.rows > 0 {
            let stats = parser.getattr(intern!(py, "stats"))?;
            for (name, add) in [
                (intern!(py, "records"), sess.rows),
                (intern!(py, "events"), sess.rows),
                (intern!(py, "unknown_tz"), sess.unknown_tz),
                (intern!(py, "classified"), sess.classified),
            ] {
                if add > 0 {
                    let v: i64 = stats.getattr(name)?.extract()?;
                    stats.setattr(name, v + add)?;
                }
            }
        }
        if self.state.ts_dirty {
            parser.setattr(intern!(py, "_last_ts"), self.state.last_ts)?;
            self.state.ts_dirty = false;
        }
        if self.state.relay_dirty {
            let obj: Option<Bound<'py, PyAny>> = match self.state.relay.as_ref() {
                None => None,
                Some((st, dev)) => {
                    let v = st.view();
                    let tz = v.tz.map(|t| String::from_utf8_lossy(t).into_owned());
                    let stamp = self.cfg.stamp_cls.bind(py).call1((
                        v.year,
                        v.month,
                        v.day,
                        v.hh,
                        v.mm,
                        v.ss,
                        v.frac,
                        tz,
                        v.synced,
                        v.offset_min,
                    ))?;
                    let dev = dev.as_ref().map(|d| d.bind(py).clone());
                    Some((stamp, dev).into_pyobject(py)?.into_any())
                }
            };
            parser.setattr(intern!(py, "_last_relay"), obj.as_ref())?;
            self.state.relay_obj = obj.map(Bound::unbind);
            self.state.relay_dirty = false;
        }
        Ok(())
    }

    /// A record out of framing: a row appended to `rows`, or the text for Python.
    fn emit<'py>(
        &mut self,
        py: Python<'py>,
        sess: &mut Session<'py>,
        sink: &Sink<'_, 'py>,
        rec: Pending,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        let (a, b) = match rec {
            Pending::Text(s, _) => return Ok(Some(PyString::new(py, &s))),
            Pending::Ascii(a, b) => (a, b),
        };
        let s = &self.input.buf[a..b];
        let lazy = matches!(sink, Sink::Fleet { .. });
        match clock_row(py, &self.cfg, &mut self.cache, &mut self.state, sess, s, lazy)? {
            None => Ok(Some(PyString::new(py, std::str::from_utf8(s).unwrap_or("")))),
            Some(mut row) => {
                match sink {
                    Sink::Rows(rows) => rows.append(row_tuple(py, &self.cfg, sess, row, s, self.cfg.with_text)?)?,
                    Sink::Fleet { staged, .. } => {
                        let name = row.name.map(|(x, y)| (a + x, a + y));
                        let full = {
                            let mut st = staged.borrow_mut();
                            st.push(Staged {
                                line: (a, b),
                                name,
                                device: if name.is_none() { row.device.take().map(Bound::unbind) } else { None },
                                ts: row.ts,
                                source: row.source,
                                synced: row.synced,
                                tz_known: row.tz_known,
                                classified: row.classified,
                            });
                            st.len() >= STAGE
                        };
                        if full {
                            self.apply_staged(py, sess, sink)?;
                        }
                    }
                }
                Ok(None)
            }
        }
    }

    /// Apply the staged rows of a fleet scan, in order: those of the core's native
    /// devices there, the others to Python (`pending`, handed over before the next row the
    /// core applies).
    fn apply_staged<'py>(&mut self, py: Python<'py>, sess: &mut Session<'py>, sink: &Sink<'_, 'py>) -> PyResult<()> {
        let Sink::Fleet { core, pending, staged, .. } = sink else {
            return Ok(());
        };
        let rows = std::mem::take(&mut *staged.borrow_mut());
        if rows.is_empty() {
            return Ok(());
        }
        let buf = &self.input.buf;
        // No name (or an empty one, which Python reads as none): the correlator's unknown
        // device, Python's.
        let mut names: Vec<Option<(&[u8], u64)>> = Vec::with_capacity(rows.len());
        for r in &rows {
            let name: Option<&[u8]> = match (r.name, r.device.as_ref()) {
                (Some((x, y)), _) => Some(&buf[x..y]),
                (None, Some(d)) => Some(d.bind(py).to_str()?.as_bytes()),
                (None, None) => None,
            };
            names.push(name.filter(|n| !n.is_empty()).map(|n| (n, fleet::name_hash(n))));
        }
        {
            let c = core.borrow();
            for &(n, h) in names.iter().flatten() {
                c.prefetch(h, n, false);
            }
            for &(n, h) in names.iter().flatten() {
                c.prefetch(h, n, true);
            }
        }
        for (r, name) in rows.iter().zip(names) {
            let (a, b) = r.line;
            let s = &self.input.buf[a..b];
            // Rows Python is to apply come before any row the core applies.
            if !pending.is_empty() && name.is_some_and(|(n, h)| !core.borrow().is_python(n, h)) {
                sink.flush()?;
            }
            let applied = match name {
                Some((n, h)) => core.borrow_mut().row(py, n, h, r.ts, r.source == SRC_INFERRED)?,
                None => fleet::Applied::Python,
            };
            let done = applied == fleet::Applied::Done;
            // Python's string of the device's name, for a row Python applies.
            let device = match (done, r.name, r.device.as_ref()) {
                (true, _, _) => None,
                (false, _, Some(d)) => Some(d.bind(py).clone()),
                (false, Some((x, y)), None) => Some(self.cache.device(py, &self.input.buf[x..y])),
                (false, None, None) => None,
            };
            let row = Row {
                device,
                name: None,
                ts: r.ts,
                source: r.source,
                synced: r.synced,
                tz_known: r.tz_known,
                classified: r.classified,
            };
            if done {
                count_row(sess, &row);
            } else {
                // With its text: a line Python holds (a clock jump) is reported with it,
                // as the Python path reports it.
                pending.append(row_tuple(py, &self.cfg, sess, row, s, true)?)?;
            }
        }
        Ok(())
    }

    fn header_only(&self, py: Python<'_>, line: &Line) -> PyResult<bool> {
        match line {
            Line::Ascii(a, b) => {
                let s = &self.input.buf[*a..*b];
                Ok(s.len() < HEADER_ONLY_MAX && memchr(b'%', s).is_none() && self.cfg.header_only.is_match(s))
            }
            Line::Text(s) => {
                if s.contains('%') || s.chars().count() >= HEADER_ONLY_MAX {
                    return Ok(false);
                }
                self.cfg.header_only_fn.bind(py).call1((s.as_str(),))?.is_truthy()
            }
        }
    }

    fn run<'py>(
        &mut self,
        py: Python<'py>,
        sess: &mut Session<'py>,
        sink: &Sink<'_, 'py>,
        limit: usize,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        let mut count = 0usize;
        let mut handed: Option<Bound<'py, PyString>> = None;
        while count < limit && handed.is_none() {
            let Some(line) = self.input.next_line() else {
                if self.input.eof {
                    if let Some(p) = self.input.pending.take() {
                        handed = self.emit(py, sess, sink, p)?;
                    }
                }
                break;
            };
            let text = self.input.text(&line);
            let blank = is_blank(text);
            if self.input.pending.is_some() {
                if self.input.pending_header_only && !blank {
                    let (mut joined, n) = self.input.pending_text();
                    let tail = text.trim_start_matches(is_py_space);
                    joined.push(' ');
                    joined.push_str(tail);
                    let chars = n + 1 + tail.chars().count();
                    self.input.pending = Some(Pending::Text(joined, chars));
                    self.input.pending_header_only = false;
                    continue;
                }
                let first = text.as_bytes().first().copied();
                let continues = (matches!(first, Some(b' ' | b'\t')) && !blank)
                    || (matches!(first, Some(b'c' | b'P' | b's')) && self.cfg.tail_starts.is_match(text.as_bytes()));
                if continues {
                    if self.input.pending_chars() < MAX_RECORD {
                        let (mut joined, n) = self.input.pending_text();
                        joined.push('\n');
                        joined.push_str(text);
                        let chars = n + 1 + text.chars().count();
                        self.input.pending = Some(Pending::Text(joined, chars));
                    }
                    continue;
                }
                if let Some(p) = self.input.pending.take() {
                    count += 1;
                    handed = self.emit(py, sess, sink, p)?;
                }
            }
            if blank {
                continue;
            }
            self.input.pending_header_only = self.header_only(py, &line)?;
            self.input.pending = Some(match line {
                Line::Ascii(a, b) => Pending::Ascii(a, b),
                Line::Text(s) => {
                    let n = s.chars().count();
                    Pending::Text(s, n)
                }
            });
        }
        Ok(handed)
    }
}

#[pymethods]
impl Scanner {
    #[new]
    #[pyo3(signature = (parser, *, tags, asa_facilities, wrapper_mnemonics, fast, fast_bare, header_only, tail_starts, tz_offset_minutes, header_only_match, stamp, scan, lookup, asa_prefix, bare_tag, text_entries, with_text = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        parser: Py<PyAny>,
        tags: Vec<String>,
        asa_facilities: Vec<String>,
        wrapper_mnemonics: Vec<String>,
        fast: &str,
        fast_bare: &str,
        header_only: &str,
        tail_starts: &str,
        tz_offset_minutes: Py<PyAny>,
        header_only_match: Py<PyAny>,
        stamp: Py<PyAny>,
        scan: (String, String, String, String, String),
        lookup: Vec<(String, Vec<LookupArg>)>,
        asa_prefix: &str,
        bare_tag: &str,
        text_entries: Option<Vec<String>>,
        with_text: bool,
    ) -> PyResult<Self> {
        let hdr = HeaderCfg::new(fast, fast_bare, tz_offset_minutes)?;
        let scan = scan::ScanCfg::new(bare_tag, &scan.0, &scan.1, &scan.2, &scan.3, &scan.4)?;
        // A tag with a regex this crate cannot compile stays with the Python parser.
        let lookup = lookup
            .into_iter()
            .filter_map(|(tag, entries)| {
                let entries: Result<Vec<LookupEntry>, regex::Error> = entries
                    .into_iter()
                    .map(|(p, inert, optional)| {
                        Ok(LookupEntry { regex: p.as_deref().map(Regex::new).transpose()?, inert, optional })
                    })
                    .collect();
                entries.ok().map(|entries| (tag.into_bytes(), Lookup { entries }))
            })
            .collect();
        let bare_tag = compile(bare_tag)?;
        // Untagged records stay with the parser unless every text pattern compiles here.
        let text_entries = text_entries.and_then(|ps| ps.iter().map(|p| Regex::new(p).ok()).collect());
        let cache = Cache {
            devices: HashMap::default(),
            hdr: hdr.memo(),
            scan: scan.memo(),
            bare_locs: bare_tag.capture_locations(),
            key: Vec::with_capacity(64),
        };
        let cfg = Config {
            parser,
            header_only_fn: header_only_match,
            stamp_cls: stamp,
            tags: tags.into_iter().map(String::into_bytes).collect(),
            asa: asa_facilities.into_iter().map(String::into_bytes).collect(),
            wrappers: wrapper_mnemonics.into_iter().map(String::into_bytes).collect(),
            hdr,
            header_only: compile(header_only)?,
            tail_starts: compile(tail_starts)?,
            scan,
            lookup,
            asa_prefix: compile(asa_prefix)?,
            bare_tag,
            text_entries,
            with_text,
            src: [
                PyString::intern(py, "device").unbind(),
                PyString::intern(py, "relay").unbind(),
                PyString::intern(py, "inferred").unbind(),
            ],
            empty: PyString::intern(py, "").unbind(),
        };
        Ok(Scanner {
            cfg,
            cache,
            state: ParseState { last_ts: None, relay: None, relay_obj: None, ts_dirty: false, relay_dirty: false },
            input: Input { buf: Vec::new(), pos: 0, eof: false, pending: None, pending_header_only: false },
        })
    }

    /// Start a new input (a file): framing starts afresh, as `iter_records` does per file.
    fn reset(&mut self) {
        self.input = Input { buf: Vec::new(), pos: 0, eof: false, pending: None, pending_header_only: false };
    }

    /// Append bytes of the current input.
    fn feed(&mut self, data: &[u8]) {
        let inp = &mut self.input;
        let keep = match inp.pending {
            Some(Pending::Ascii(a, _)) => a.min(inp.pos),
            _ => inp.pos,
        };
        if keep > 0 {
            inp.buf.drain(..keep);
            inp.pos -= keep;
            if let Some(Pending::Ascii(a, b)) = inp.pending.as_mut() {
                *a -= keep;
                *b -= keep;
            }
        }
        inp.buf.extend_from_slice(data);
    }

    /// The current input has no more bytes: its last line and record can be read.
    fn close(&mut self) {
        self.input.eof = true;
    }

    /// Read at most `limit` records. Returns `(rows, record)`: the clock rows read, in
    /// order, and the text of a record Python must parse (it comes after the rows and
    /// counts in `limit`), or None. Fewer than `limit` records and no text: the input
    /// is exhausted (feed more, or it is closed and done).
    fn scan<'py>(
        &mut self,
        py: Python<'py>,
        limit: usize,
    ) -> PyResult<(Bound<'py, PyList>, Option<Bound<'py, PyString>>)> {
        let rows = PyList::empty(py);
        let mut sess = self.begin(py)?;
        let out = self.run(py, &mut sess, &Sink::Rows(&rows), limit);
        let stored = self.end(py, &sess);
        let handed = out?;
        stored?;
        Ok((rows, handed))
    }

    /// `scan`, with the clock rows applied to `core` (a `FleetCore`) instead of returned:
    /// those of its native devices there, the others given to `on_rows(rows)` in order (a
    /// list of rows as `scan` returns them, each with its text as a sixth item, valid
    /// during the call only), before the next row the core applies and before this
    /// returns. Returns `(rows, record)`: how many clock rows were read, and the text of
    /// a record Python must parse, or None, as `scan`.
    fn scan_fleet<'py>(
        &mut self,
        py: Python<'py>,
        limit: usize,
        core: &Bound<'py, fleet::FleetCore>,
        on_rows: &Bound<'py, PyAny>,
    ) -> PyResult<(i64, Option<Bound<'py, PyString>>)> {
        let mut sess = self.begin(py)?;
        let pending = PyList::empty(py);
        let staged = RefCell::new(Vec::with_capacity(STAGE));
        let sink = Sink::Fleet { core, on_rows, pending: &pending, staged: &staged };
        let out = self
            .run(py, &mut sess, &sink, limit)
            .and_then(|h| self.apply_staged(py, &mut sess, &sink).map(|()| h))
            .and_then(|h| sink.flush().map(|()| h));
        let stored = self.end(py, &sess);
        let handed = out?;
        stored?;
        Ok((sess.rows, handed))
    }

    /// The worker's batch path: `values[start:]`, each one whole record (a Kafka record's
    /// value, no framing), read as `Parser.parse(value, source=sources[i],
    /// received=received)` would read it. Returns `(rows, next)`: the clock rows of
    /// `values[start:next]`, in order, and the index of the first record Python must
    /// parse (`len(values)` when there is none). A value that is not `bytes`, not one
    /// ASCII line, or blank, goes to Python too.
    #[pyo3(signature = (values, sources, received, start = 0))]
    fn records<'py>(
        &mut self,
        py: Python<'py>,
        values: &Bound<'py, PyList>,
        sources: &Bound<'py, PyList>,
        received: Option<f64>,
        start: usize,
    ) -> PyResult<(Bound<'py, PyList>, usize)> {
        let rows = PyList::empty(py);
        let n = values.len();
        if sources.len() != n {
            return Err(PyValueError::new_err("values and sources differ in length"));
        }
        let mut sess = self.begin(py)?;
        sess.received = received;
        let mut i = start;
        let out: PyResult<()> = (|| {
            while i < n {
                let Some((value, end)) = record_at(values, sources, i, &mut sess)? else { break };
                let s = &value.as_bytes()[..end];
                // An error reading a record (a defect) hands it to Python like any record
                // the scanner does not read: nothing of the parser's state moved for it
                // (the year tracker's answer is the same when asked again).
                let Ok(Some(row)) = clock_row(py, &self.cfg, &mut self.cache, &mut self.state, &sess, s, false) else {
                    break;
                };
                rows.append(row_tuple(py, &self.cfg, &mut sess, row, s, self.cfg.with_text)?)?;
                i += 1;
            }
            Ok(())
        })();
        sess.source = None;
        let stored = self.end(py, &sess);
        out?;
        stored?;
        Ok((rows, i.min(n)))
    }

    /// `records` with the clock rows applied to `core` (a `FleetCore`, the worker's
    /// shard), as `analyze` applies an archive's (`scan_fleet`): `values[start:]` are
    /// records of `partition`, `offsets` their offsets. A row of a native device of the
    /// core is applied there (`FleetCore.row_at`: a record read before is skipped); a
    /// row of Python's device goes to `on_rows(rows)`, a list of `(row, offset)` (rows
    /// as `scan_fleet` gives them, with their text), before the next row the core
    /// applies and before this returns. Until `on_rows` returns true (the shard has a
    /// frame for the partition; `framed` says whether it has one now), every row goes
    /// there, each in its own call.
    ///
    /// Returns `(next, row, rows, applied, duplicates)`: `values[start:next]` were read,
    /// `rows` of them clock rows, `applied` and `duplicates` in the core; the record
    /// at `next`, if any, is Python's: to parse when `row` is None, else a clock row
    /// `row` that the core does not apply (no device name, or a device of another
    /// partition: the record is rerouted).
    #[pyo3(signature = (values, sources, offsets, received, start, core, partition, framed, on_rows))]
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::type_complexity)]
    fn records_core<'py>(
        &mut self,
        py: Python<'py>,
        values: &Bound<'py, PyList>,
        sources: &Bound<'py, PyList>,
        offsets: &Bound<'py, PyList>,
        received: Option<f64>,
        start: usize,
        core: &Bound<'py, fleet::FleetCore>,
        partition: i64,
        framed: bool,
        on_rows: &Bound<'py, PyAny>,
    ) -> PyResult<(usize, Option<Bound<'py, PyAny>>, i64, u64, u64)> {
        let n = values.len();
        if sources.len() != n || offsets.len() != n {
            return Err(PyValueError::new_err("values, sources and offsets differ in length"));
        }
        let mut sess = self.begin(py)?;
        sess.received = received;
        let pending = PyList::empty(py);
        let mut framed = framed;
        let (mut applied, mut duplicates) = (0u64, 0u64);
        let mut handed: Option<Bound<'py, PyAny>> = None;
        let mut i = start;
        let flush = |framed: &mut bool| -> PyResult<()> {
            if !pending.is_empty() {
                *framed = on_rows.call1((&pending,))?.is_truthy()?;
                pending.del_slice(0, pending.len())?;
            }
            Ok(())
        };
        let out: PyResult<()> = (|| {
            while i < n {
                let Some((value, end)) = record_at(values, sources, i, &mut sess)? else { break };
                let s = &value.as_bytes()[..end];
                let Ok(Some(mut row)) = clock_row(py, &self.cfg, &mut self.cache, &mut self.state, &sess, s, true) else {
                    break;
                };
                let offset: i64 = offsets.get_item(i)?.extract()?;
                let device = row.device.clone();
                let name: Option<&[u8]> = match (row.name, device.as_ref()) {
                    (Some((x, y)), _) => Some(&s[x..y]),
                    (None, Some(d)) => Some(d.to_str()?.as_bytes()),
                    (None, None) => None,
                };
                let name = name.filter(|n| !n.is_empty()).map(|n| (n, fleet::name_hash(n)));
                let outcome = match name {
                    None => fleet::Applied::Elsewhere, // the unknown device: Python's to route
                    Some((nm, h)) if !framed => {
                        if core.borrow().lane_of_name(py, nm, h)? == partition {
                            fleet::Applied::Python
                        } else {
                            fleet::Applied::Elsewhere
                        }
                    }
                    Some((nm, h)) => {
                        if !pending.is_empty() && !core.borrow().is_python(nm, h) {
                            flush(&mut framed)?;
                        }
                        let inferred = row.source == SRC_INFERRED;
                        core.borrow_mut().row_at(py, nm, h, row.ts, inferred, offset, partition)?
                    }
                };
                if outcome == fleet::Applied::Elsewhere {
                    // Python's to route (the unknown device, or another partition's).
                    flush(&mut framed)?;
                    if row.device.is_none() {
                        row.device = row.name.map(|(x, y)| self.cache.device(py, &s[x..y]));
                    }
                    row.name = None;
                    handed = Some(row_tuple(py, &self.cfg, &mut sess, row, s, self.cfg.with_text)?);
                    break;
                }
                match outcome {
                    fleet::Applied::Done => {
                        applied += 1;
                        count_row(&mut sess, &row);
                    }
                    fleet::Applied::Duplicate => {
                        duplicates += 1;
                        count_row(&mut sess, &row);
                    }
                    fleet::Applied::Elsewhere => unreachable!("handed to Python above"),
                    fleet::Applied::Python => {
                        if row.device.is_none() {
                            let (nm, _) = name.expect("a row of this partition names its device");
                            row.device = Some(self.cache.device(py, nm));
                        }
                        row.name = None;
                        let t = row_tuple(py, &self.cfg, &mut sess, row, s, true)?;
                        pending.append((t, offset))?;
                        if !framed {
                            flush(&mut framed)?;
                        }
                    }
                }
                i += 1;
            }
            flush(&mut framed)
        })();
        sess.source = None;
        let rows = sess.rows;
        let stored = self.end(py, &sess);
        out?;
        stored?;
        Ok((i.min(n), handed, rows, applied, duplicates))
    }

    /// Test hook: what the fast header path reads of `line[:end]` (ASCII), as
    /// `(host, origin, relay_stamp, device_stamp, clock_synced)` with stamps as tuples of
    /// `Stamp`'s fields; None where `fast_prefix` returns None.
    fn header<'py>(&mut self, py: Python<'py>, line: &str, end: usize) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let s = line.as_bytes();
        if !s.is_ascii() || end > s.len() {
            return Err(PyValueError::new_err("header() takes an ASCII line and an end within it"));
        }
        let Some(h) = fast_prefix(py, &self.cfg.hdr, &mut self.cache.hdr, &s[..end])? else {
            return Ok(None);
        };
        let host = h.host.map(|b| String::from_utf8_lossy(b).into_owned());
        let origin = h.origin.map(|b| String::from_utf8_lossy(b).into_owned());
        let relay = h.relay.as_ref().map(|st| stamp_tuple(py, st)).transpose()?;
        let device = h.device.as_ref().map(|st| stamp_tuple(py, st)).transpose()?;
        Ok(Some((host, origin, relay, device, h.clock_synced).into_pyobject(py)?))
    }

    /// Test hook: what the full header reader reads of `line[:end]` (ASCII, `line` the
    /// whole record), as `scan_prefix(line, end, tagged=True)` would:
    /// `(host, origin, relay_stamp, device_stamp, clock_synced, uptime)`.
    fn full_header<'py>(&mut self, py: Python<'py>, line: &str, end: usize) -> PyResult<Bound<'py, PyTuple>> {
        let s = line.as_bytes();
        if !s.is_ascii() || end > s.len() {
            return Err(PyValueError::new_err("full_header() takes an ASCII line and an end within it"));
        }
        let full =
            scan::scan_prefix(py, &self.cfg.scan, &self.cfg.hdr, &mut self.cache.scan, &mut self.cache.hdr, s, end)?;
        let h = full.hdr;
        let host = h.host.map(|b| String::from_utf8_lossy(b).into_owned());
        let origin = h.origin.map(|b| String::from_utf8_lossy(b).into_owned());
        let relay = h.relay.as_ref().map(|st| stamp_tuple(py, st)).transpose()?;
        let device = h.device.as_ref().map(|st| stamp_tuple(py, st)).transpose()?;
        (host, origin, relay, device, h.clock_synced, full.uptime.is_some()).into_pyobject(py)
    }
}

/// Test hook: `TAG_RE.search(line)` on an ASCII line, as `(start, facility, severity,
/// mnemonic)`, or None.
#[pyfunction]
fn find_message_tag(line: &str) -> PyResult<Option<(usize, String, u8, String)>> {
    let s = line.as_bytes();
    if !s.is_ascii() {
        return Err(PyValueError::new_err("find_message_tag() takes an ASCII line"));
    }
    Ok(find_tag(s).map(|t| {
        (
            t.start,
            String::from_utf8_lossy(&s[t.fac.0..t.fac.1]).into_owned(),
            t.sev,
            String::from_utf8_lossy(&s[t.mnem.0..t.mnem.1]).into_owned(),
        )
    }))
}

#[pymodule]
fn tunnelwatch_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Scanner>()?;
    m.add_class::<fleet::FleetCore>()?;
    m.add_class::<fleet::CoreLane>()?;
    m.add_function(wrap_pyfunction!(find_message_tag, m)?)?;
    // `tunnelwatch receive`: the UDP hot loop and Kafka record batches.
    #[cfg(target_os = "linux")]
    {
        m.add_class::<receiver::UdpReceiver>()?;
        m.add_class::<receiver::DeviceKeys>()?;
    }
    m.add_class::<kafka::RecordBatch>()?;
    m.add_function(wrap_pyfunction!(kafka::group_by_partition, m)?)?;
    m.add_function(wrap_pyfunction!(kafka::kafka_murmur2, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The interface `streams/core/native.py` expects; bump both together.
    // 2: the receiver's UdpReceiver, DeviceKeys, RecordBatch and group_by_partition.
    // 3: Scanner reads every tagged header (`scan`) and inert catalog messages (`lookup`).
    // 5: FleetCore and CoreLane, Scanner.scan_fleet.
    m.add("ABI", 6)?;
    Ok(())
}
