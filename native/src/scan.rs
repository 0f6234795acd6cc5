//! `header.scan_prefix(s, end, tagged=True)`: the full header reader, for the tagged
//! records whose prefix `fast_prefix` does not read (relay lines with an RFC 5424 device
//! stamp, uptime stamps, structured data, IPv6 hosts, several stamps...).
//!
//! Token by token as the Python function, with its regexes: `_RFC5424`, `_ISO`, `_BSD`,
//! `_SPACED_TZ` and `_SD` come from Python (rewritten by `native.rust_pattern`); the ones
//! with a lookahead, which the `regex` crate does not have (`_GLUED_TZ`, `_UPTIME`,
//! `_IPV6_HOST`), and the trivial ones (`_PRI`, `_COUNTER`, `_HOST`, `_SEP_COLON`) are
//! written out here, trying the alternatives in the order a backtracking engine does.
//! `tests/test_native.py` compares this reader with `scan_prefix` on random prefixes.

use std::collections::HashMap;

use pyo3::prelude::*;
use regex::bytes::{CaptureLocations, Regex};

use crate::{compile, frac_of, int, is_alpha, is_space, month_of, FnvBuild, Hdr, HeaderCfg, HeaderMemo, Stamp};

/// The regexes of `scan_prefix` that the `regex` crate runs as they are.
pub(crate) struct ScanCfg {
    bare_tag: Regex,
    rfc5424: Regex,
    iso: Regex,
    bsd: Regex,
    spaced_tz: Regex,
    sd: Regex,
}

impl ScanCfg {
    /// The Python patterns as `native.rust_pattern(..., full=False)` writes them.
    pub(crate) fn new(
        bare_tag: &str,
        rfc5424: &str,
        iso: &str,
        bsd: &str,
        spaced_tz: &str,
        sd: &str,
    ) -> PyResult<Self> {
        Ok(ScanCfg {
            bare_tag: compile(bare_tag)?,
            rfc5424: compile(rfc5424)?,
            iso: compile(iso)?,
            bsd: compile(bsd)?,
            spaced_tz: compile(spaced_tz)?,
            sd: compile(sd)?,
        })
    }

    pub(crate) fn memo(&self) -> ScanMemo {
        ScanMemo {
            rfc5424: self.rfc5424.capture_locations(),
            iso: self.iso.capture_locations(),
            bsd: self.bsd.capture_locations(),
            tz: self.spaced_tz.capture_locations(),
            layouts: HashMap::default(),
            key: Vec::with_capacity(LAYOUT_KEY_MAX),
        }
    }
}

/// Scratch capture locations, and the layouts of the prefixes read (by skeleton).
pub(crate) struct ScanMemo {
    rfc5424: CaptureLocations,
    iso: CaptureLocations,
    bsd: CaptureLocations,
    tz: CaptureLocations,
    layouts: HashMap<Vec<u8>, Layout, FnvBuild>,
    key: Vec<u8>,
}

/// What `scan_prefix` reads that a clock row needs: the header, and whether it held an
/// uptime stamp (`Header.uptime`).
pub(crate) struct Full<'a> {
    pub(crate) hdr: Hdr<'a>,
    /// The text of the last uptime stamp, without its `*`/`.` flag (`Header.uptime_s`'s).
    pub(crate) uptime: Option<&'a [u8]>,
}

fn digits_at(s: &[u8], p: usize) -> usize {
    s.get(p..).map_or(0, |t| t.iter().take_while(|b| b.is_ascii_digit()).count())
}

fn at(s: &[u8], p: usize) -> Option<u8> {
    s.get(p).copied()
}

/// `(?=\s*:)` at `p`.
fn colon_ahead(s: &[u8], mut p: usize) -> bool {
    while p < s.len() && is_space(s[p]) {
        p += 1;
    }
    at(s, p) == Some(b':')
}

/// `_SEP_COLON.match(s, p)`: `\s*:\s*`, its end.
fn sep_colon(s: &[u8], mut p: usize) -> Option<usize> {
    while p < s.len() && is_space(s[p]) {
        p += 1;
    }
    if at(s, p) != Some(b':') {
        return None;
    }
    p += 1;
    while p < s.len() && is_space(s[p]) {
        p += 1;
    }
    Some(p)
}

/// `_GLUED_TZ.match(s, p)`: `([A-Za-z]{2,10}|(?:UTC|GMT)[+-]\d{1,2}(?::?\d{2})?)(?=\s*:)`,
/// the end of the label.
fn glued_tz(s: &[u8], p: usize) -> Option<usize> {
    let run = s[p.min(s.len())..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
    // A shorter run of letters leaves a letter where the lookahead wants space or ':'.
    if (2..=10).contains(&run) && colon_ahead(s, p + run) {
        return Some(p + run);
    }
    let word = s.get(p..p + 3)?;
    if !(word == b"UTC" || word == b"GMT") || !matches!(at(s, p + 3), Some(b'+' | b'-')) {
        return None;
    }
    let d0 = p + 4;
    let dr = digits_at(s, d0);
    for d in [2usize, 1] {
        if dr < d {
            continue;
        }
        let q = d0 + d;
        // (?::?\d{2})? — with the colon, without it, then without the group.
        let mut ends = [None, None, Some(q)];
        if at(s, q) == Some(b':') && digits_at(s, q + 1) >= 2 {
            ends[0] = Some(q + 3);
        }
        if digits_at(s, q) >= 2 {
            ends[1] = Some(q + 2);
        }
        for e in ends.into_iter().flatten() {
            if colon_ahead(s, e) {
                return Some(e);
            }
        }
    }
    None
}

/// `(?=\s*:|\s)` at `p`: the next character is white space or ':'.
fn uptime_ahead(s: &[u8], p: usize) -> bool {
    at(s, p).is_some_and(|b| is_space(b) || b == b':')
}

/// `_UPTIME.match(s, p)`:
/// `([*.])?(?:\d{1,2}:\d{2}:\d{2}(?:\.\d+)?|(?:\d+[ywdhms]){1,4})(?=\s*:|\s)`, as
/// `(end, flagged)`.
fn uptime(s: &[u8], p: usize) -> Option<(usize, bool)> {
    let flagged = matches!(at(s, p), Some(b'*' | b'.'));
    let p = if flagged { p + 1 } else { p };
    let dr = digits_at(s, p);
    if (1..=2).contains(&dr) {
        let q = p + dr;
        if at(s, q) == Some(b':') && digits_at(s, q + 1) >= 2 && at(s, q + 3) == Some(b':') && digits_at(s, q + 4) >= 2
        {
            let e = q + 6;
            let fr = if at(s, e) == Some(b'.') { digits_at(s, e + 1) } else { 0 };
            if fr > 0 && uptime_ahead(s, e + 1 + fr) {
                return Some((e + 1 + fr, flagged));
            }
            if fr == 0 && uptime_ahead(s, e) {
                return Some((e, flagged));
            }
        }
    }
    let mut q = p;
    let mut units = 0;
    while units < 4 {
        let d = digits_at(s, q);
        if d == 0 || !matches!(at(s, q + d), Some(b'y' | b'w' | b'd' | b'h' | b'm' | b's')) {
            break;
        }
        q += d + 1;
        units += 1;
    }
    (units > 0 && uptime_ahead(s, q)).then_some((q, flagged))
}

/// `_COUNTER.match(s, p)`: `(\d{1,12})\s*:`, its end.
fn counter(s: &[u8], p: usize) -> Option<usize> {
    let d = digits_at(s, p);
    if !(1..=12).contains(&d) {
        return None;
    }
    let mut q = p + d;
    while q < s.len() && is_space(s[q]) {
        q += 1;
    }
    (at(s, q) == Some(b':')).then_some(q + 1)
}

/// `_IPV6_HOST.match(s, p)`: `((?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})(?=:\s)`, its
/// end. A group of hex digits is always as long as its run (a shorter one leaves a hex
/// digit where ':' must follow), so the candidates are the colons ending the groups, most
/// groups first.
fn ipv6_host(s: &[u8], p: usize) -> Option<usize> {
    let mut colons: Vec<usize> = Vec::with_capacity(8);
    let mut q = p;
    while colons.len() < 8 {
        let run = s[q.min(s.len())..].iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if run > 4 || at(s, q + run) != Some(b':') {
            break;
        }
        colons.push(q + run);
        q += run + 1;
    }
    if colons.len() < 3 {
        return None;
    }
    let top = (colons.len() - 1).min(7);
    (2..=top).rev().map(|k| colons[k]).find(|&c| at(s, c + 1).is_some_and(is_space))
}

/// `_HOST.match(s, p)`: `[^\s:]+`, its end.
fn host_end(s: &[u8], p: usize) -> Option<usize> {
    let n = s[p..].iter().take_while(|&&b| !is_space(b) && b != b':').count();
    (n > 0).then_some(p + n)
}

/// A byte range of the record; `NONE` for a group that did not take part.
type Span = (u32, u32);
const NONE: Span = (u32::MAX, u32::MAX);

/// Where a stamp's parts are: `_ISO`'s groups 1-9, or `_BSD`'s groups 1-8 and the
/// timezone label `_read_tz` found.
#[derive(Clone, Copy)]
struct StampLoc {
    iso: bool,
    g: [Span; 10],
    tz: Span,
}

impl StampLoc {
    fn of(iso: bool, locs: &CaptureLocations, base: usize) -> Self {
        let mut g = [NONE; 10];
        for (i, slot) in g.iter_mut().enumerate().skip(1) {
            if let Some((a, b)) = locs.get(i) {
                *slot = ((base + a) as u32, (base + b) as u32);
            }
        }
        StampLoc { iso, g, tz: NONE }
    }

    fn has(&self, i: usize) -> bool {
        self.g[i] != NONE
    }

    /// `_iso_stamp` / `_bsd_stamp` (and the label `_read_tz` set) of the record `s`.
    fn stamp<'a>(&self, s: &'a [u8]) -> Stamp<'a> {
        let g = |i: usize| {
            let (a, b) = self.g[i];
            (a != u32::MAX).then(|| &s[a as usize..b as usize])
        };
        if self.iso {
            let off = g(9);
            let offset = off.map(|o| {
                if o == b"Z" {
                    return 0;
                }
                let digits: Vec<u8> = o[1..].iter().copied().filter(|&b| b != b':').collect();
                let mins = int(&digits[..2]) * 60 + int(&digits[2..]);
                if o[0] == b'-' {
                    -mins
                } else {
                    mins
                }
            });
            return Stamp {
                year: g(2).map(int),
                month: g(3).map_or(0, int),
                day: g(4).map_or(0, int),
                hh: g(5).map_or(0, int),
                mm: g(6).map_or(0, int),
                ss: g(7).map_or(0, int),
                frac: g(8).map_or(0.0, |f| frac_of(&f[..f.len().min(6)])),
                tz: off,
                synced: g(1).is_none(),
                offset_min: offset,
            };
        }
        Stamp {
            year: g(4).map(int),
            month: g(2).map_or(0, month_of),
            day: g(3).map_or(0, int),
            hh: g(5).map_or(0, int),
            mm: g(6).map_or(0, int),
            ss: g(7).map_or(0, int),
            frac: g(8).map_or(0.0, frac_of),
            tz: (self.tz != NONE).then(|| &s[self.tz.0 as usize..self.tz.1 as usize]),
            synced: g(1).is_none(),
            offset_min: None,
        }
    }
}

/// What `scan_prefix` found, as positions: the same for every record whose prefix has the
/// same skeleton (every digit read as '0'), so it is memoized by that skeleton.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    host: Span,
    origin: Span,
    /// The first stamp, when there are several (the relay's), and the last (the device's).
    relay: Option<StampLoc>,
    device: Option<StampLoc>,
    /// The last uptime stamp, without its flag (NONE: none).
    uptime: Span,
    /// `Header.clock_synced` before the device stamp's own flag is applied.
    synced: bool,
    /// `Header.body_start`, and whether a PRI was read.
    body: u32,
    pri: bool,
}

impl Layout {
    fn full<'a>(&self, s: &'a [u8]) -> Full<'a> {
        let span = |(a, b): Span| (a != u32::MAX).then(|| &s[a as usize..b as usize]);
        let device = self.device.map(|d| d.stamp(s));
        Full {
            hdr: Hdr {
                host: span(self.host),
                origin: span(self.origin),
                relay: self.relay.map(|r| r.stamp(s)),
                device,
                clock_synced: self.synced && device.is_none_or(|d| d.synced),
            },
            uptime: span(self.uptime),
        }
    }
}

const LAYOUT_KEY_MAX: usize = 192;
const LAYOUT_CACHE_MAX: usize = 65_536;

/// `regex.match(s, p)` (the pattern is anchored with `^`): the match's end, its groups in
/// `locs` offset by `p`.
fn match_at(re: &Regex, locs: &mut CaptureLocations, s: &[u8], p: usize) -> Option<usize> {
    re.captures_read(locs, &s[p..]).map(|m| p + m.end())
}

/// `scan_prefix(s, end, tagged=True)`, the parts a clock row needs. `s` is the whole
/// record (the lookaheads read past `end`, as Python's do; `s[end]` is the tag's '%').
///
/// Memoized by the prefix's skeleton. Every test the reader makes treats all digits
/// alike but one (an RFC 5424 version `1 ` as the first token), and only two of its
/// regexes can read past `end` into the message (`_RFC5424`'s `\S+` and `_SD`'s
/// brackets), where a different message could change the answer: prefixes where these
/// apply (the first token `1 `, a '[' anywhere) or whose last token runs into the tag are
/// read afresh every time.
pub(crate) fn scan_prefix<'a>(
    py: Python<'_>,
    cfg: &ScanCfg,
    hcfg: &HeaderCfg,
    memo: &mut ScanMemo,
    hmemo: &mut HeaderMemo,
    s: &'a [u8],
    end: usize,
) -> PyResult<Full<'a>> {
    let p = &s[..end];
    let mut first = 0;
    if p.first() == Some(&b'<') {
        let d = digits_at(p, 1);
        if (1..=3).contains(&d) && at(p, 1 + d) == Some(b'>') {
            first = 2 + d;
        }
    }
    while first < end && matches!(p[first], b' ' | b'\t') {
        first += 1;
    }
    let rfc = p.get(first..first + 2) == Some(b"1 ".as_slice()) && first + 1 < end;
    let cacheable = !rfc && end <= LAYOUT_KEY_MAX && memchr::memchr(b'[', p).is_none();
    if cacheable {
        memo.key.clear();
        memo.key.extend(p.iter().map(|&b| if b.is_ascii_digit() { b'0' } else { b }));
        if let Some(l) = memo.layouts.get(memo.key.as_slice()) {
            return Ok(l.full(s));
        }
    }
    let (layout, crossed) = layout(py, cfg, hcfg, memo, hmemo, s, end, true)?;
    if cacheable && !crossed && memo.layouts.len() < LAYOUT_CACHE_MAX {
        memo.layouts.insert(memo.key.clone(), layout);
    }
    Ok(layout.full(s))
}

/// `scan_prefix(s, len(s), tagged=False)` of a record without a '%' tag: the header, where
/// its body starts (`Header.body_start`) and whether it had a PRI (not memoized: the
/// whole record is the key).
pub(crate) fn scan_untagged<'a>(
    py: Python<'_>,
    cfg: &ScanCfg,
    hcfg: &HeaderCfg,
    memo: &mut ScanMemo,
    hmemo: &mut HeaderMemo,
    s: &'a [u8],
) -> PyResult<(Full<'a>, usize, bool)> {
    let (layout, _) = layout(py, cfg, hcfg, memo, hmemo, s, s.len(), false)?;
    Ok((layout.full(s), layout.body as usize, layout.pri))
}

/// `_DEBUG_MODULE.match(s, p)`: `(?:ISAKMP|IPSEC|IPSec|IKEv[12]|[A-Za-z_]+\([A-Za-z_]+\))`
/// followed by white space, ':' or '('.
fn debug_module(s: &[u8], p: usize) -> bool {
    let ahead = |e: usize| at(s, e).is_some_and(|b| is_space(b) || b == b':' || b == b'(');
    let t = &s[p..];
    for word in [b"ISAKMP".as_slice(), b"IPSEC", b"IPSec", b"IKEv1", b"IKEv2"] {
        if t.starts_with(word) && ahead(p + word.len()) {
            return true;
        }
    }
    let name = |q: usize| s[q.min(s.len())..].iter().take_while(|b| b.is_ascii_alphabetic() || **b == b'_').count();
    let a = name(p);
    if a == 0 || at(s, p + a) != Some(b'(') {
        return false;
    }
    let b = name(p + a + 1);
    b > 0 && at(s, p + a + 1 + b) == Some(b')') && ahead(p + a + b + 2)
}

/// The reading itself; also says whether a token ran into the message (past `end`).
#[allow(clippy::too_many_arguments)]
fn layout(
    py: Python<'_>,
    cfg: &ScanCfg,
    hcfg: &HeaderCfg,
    memo: &mut ScanMemo,
    hmemo: &mut HeaderMemo,
    s: &[u8],
    end: usize,
    tagged: bool,
) -> PyResult<(Layout, bool)> {
    let span = |a: usize, b: usize| (a as u32, b as u32);
    let mut pos = 0usize;
    // _PRI
    if at(s, 0) == Some(b'<') {
        let d = digits_at(s, 1);
        if (1..=3).contains(&d) && at(s, 1 + d) == Some(b'>') && 2 + d <= end {
            pos = 2 + d;
        }
    }
    let pri = pos > 0;
    let mut host = NONE;
    let mut origin = NONE;
    let mut has_counter = false;
    let mut has_seq = false;
    let mut tokens = 0usize;
    let mut uptime_seen = NONE;
    let mut clock_synced = true;
    let mut crossed = false;
    // (stamp, followed by a space and a host); only the first and the last are read.
    let mut first: Option<(StampLoc, bool)> = None;
    let mut last: Option<StampLoc> = None;
    let mut nstamps = 0usize;
    let mut after_first_stamp = false;
    let mut counter_slot_closed = false;
    while pos < end {
        while pos < end && matches!(s[pos], b' ' | b'\t') {
            pos += 1;
        }
        if pos >= end {
            break;
        }
        let c = s[pos];
        if c == b'1' && pos + 1 < end && s[pos + 1] == b' ' && tokens == 0 {
            if let Some(e5) = match_at(&cfg.rfc5424, &mut memo.rfc5424, s, pos) {
                let host5 = memo.rfc5424.get(2).map(|(a, b)| (pos + a, pos + b));
                if e5 <= end && match_at(&cfg.iso, &mut memo.iso, s, pos + 2).is_some() {
                    let st = StampLoc::of(true, &memo.iso, pos + 2);
                    if first.is_none() {
                        first = Some((st, true));
                    }
                    last = Some(st);
                    nstamps += 1;
                    if let Some((a, b)) = host5 {
                        if &s[a..b] != b"-" {
                            host = span(a, b);
                        }
                    }
                    pos = e5;
                    tokens += 1;
                    continue;
                }
            }
        }
        let mut stamp_at: Option<(StampLoc, usize)> = None;
        if matches!(c, b'*' | b'.') || c.is_ascii_uppercase() {
            if let Some(eb) = match_at(&cfg.bsd, &mut memo.bsd, s, pos) {
                if eb <= end {
                    let mut st = StampLoc::of(false, &memo.bsd, pos);
                    let strong = st.has(8) || st.has(1) || has_counter;
                    let mut np = eb;
                    // _read_tz
                    if let Some(te) = glued_tz(s, eb) {
                        st.tz = span(eb, te);
                        np = te;
                    } else if let Some(me) = match_at(&cfg.spaced_tz, &mut memo.tz, s, eb) {
                        if let Some((a, b)) = memo.tz.get(1) {
                            let label = &s[eb + a..eb + b];
                            let known = hmemo.tz_known(py, hcfg, label)?;
                            if known || (strong && is_alpha(label)) {
                                st.tz = span(eb + a, eb + b);
                                np = me - 1;
                            }
                        }
                    }
                    stamp_at = Some((st, np));
                }
            }
        }
        if stamp_at.is_none() && (c.is_ascii_digit() || matches!(c, b'*' | b'.')) {
            if let Some(ei) = match_at(&cfg.iso, &mut memo.iso, s, pos) {
                if ei <= end {
                    stamp_at = Some((StampLoc::of(true, &memo.iso, pos), ei));
                }
            }
        }
        if let Some((st, np)) = stamp_at {
            pos = np;
            let sep = sep_colon(s, pos);
            let followed_by_host = sep.is_none();
            if let Some(e) = sep {
                pos = e;
            }
            if first.is_none() {
                first = Some((st, followed_by_host));
            }
            last = Some(st);
            nstamps += 1;
            tokens += 1;
            if nstamps == 1 {
                after_first_stamp = followed_by_host;
            }
            continue;
        }
        if c.is_ascii_digit() || matches!(c, b'*' | b'.') {
            if let Some((eu, flagged)) = uptime(s, pos) {
                if eu <= end {
                    uptime_seen = span(pos + usize::from(flagged), eu);
                    if flagged {
                        clock_synced = false;
                    }
                    pos = sep_colon(s, eu).unwrap_or(eu);
                    tokens += 1;
                    continue;
                }
            }
            if let Some(ec) = counter(s, pos) {
                if ec <= end {
                    let relay_only = nstamps == 1 && first.is_some_and(|f| f.1) && host != NONE;
                    if !has_counter && !counter_slot_closed && origin == NONE && (nstamps == 0 || relay_only) {
                        has_counter = true;
                    } else if !has_seq {
                        has_seq = true;
                    }
                    pos = ec;
                    tokens += 1;
                    continue;
                }
            }
        }
        if c == b':' {
            if tokens == 0 {
                counter_slot_closed = true;
            }
            pos += 1;
            tokens += 1;
            continue;
        }
        if c == b'[' {
            if let Some(m) = cfg.sd.find(&s[pos..]) {
                if pos + m.end() <= end {
                    pos += m.end();
                    tokens += 1;
                    continue;
                }
            }
        }
        if !tagged && (cfg.bare_tag.is_match(&s[pos..]) || debug_module(s, pos)) {
            break;
        }
        let Some(ne) = ipv6_host(s, pos).or_else(|| host_end(s, pos)) else {
            break;
        };
        if ne > end {
            crossed = true;
            break;
        }
        let name = &s[pos..ne];
        if nstamps == 0 && is_alpha(name) && hmemo.tz_known(py, hcfg, name)? {
            // A bare timezone label left over from a truncated stamp ("UTC: %CRYPTO-...").
            pos = sep_colon(s, ne).unwrap_or(ne);
            tokens += 1;
            continue;
        }
        let sep = sep_colon(s, ne);
        if after_first_stamp && host == NONE {
            host = span(pos, ne);
            after_first_stamp = false;
        } else if sep.is_some() || tagged {
            if origin == NONE && !matches!(name[0], b'*' | b'(') {
                origin = span(pos, ne);
            }
        } else {
            break;
        }
        pos = sep.unwrap_or(ne);
        tokens += 1;
    }
    let layout = Layout {
        host,
        origin,
        relay: if nstamps > 1 { first.map(|f| f.0) } else { None },
        device: last,
        uptime: uptime_seen,
        synced: clock_synced,
        body: pos as u32,
        pri,
    };
    Ok((layout, crossed))
}
