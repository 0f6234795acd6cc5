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

use pyo3::prelude::*;
use regex::bytes::{CaptureLocations, Regex};

use crate::{compile, frac_of, int, is_alpha, is_space, month_of, Hdr, HeaderCfg, HeaderMemo, Stamp};

/// The regexes of `scan_prefix` that the `regex` crate runs as they are.
pub(crate) struct ScanCfg {
    rfc5424: Regex,
    iso: Regex,
    bsd: Regex,
    spaced_tz: Regex,
    sd: Regex,
}

impl ScanCfg {
    /// The Python patterns as `native.rust_pattern(..., full=False)` writes them.
    pub(crate) fn new(rfc5424: &str, iso: &str, bsd: &str, spaced_tz: &str, sd: &str) -> PyResult<Self> {
        Ok(ScanCfg {
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
        }
    }
}

/// Scratch capture locations.
pub(crate) struct ScanMemo {
    rfc5424: CaptureLocations,
    iso: CaptureLocations,
    bsd: CaptureLocations,
    tz: CaptureLocations,
}

/// What `scan_prefix` reads that a clock row needs: the header, and whether it held an
/// uptime stamp (`Header.uptime`).
pub(crate) struct Full<'a> {
    pub(crate) hdr: Hdr<'a>,
    pub(crate) uptime: bool,
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

fn group(locs: &CaptureLocations, base: usize, i: usize) -> Option<(usize, usize)> {
    locs.get(i).map(|(a, b)| (base + a, base + b))
}

/// `_iso_stamp` of an `_ISO` match at `base`.
fn iso_of<'a>(s: &'a [u8], base: usize, m: &CaptureLocations) -> Stamp<'a> {
    let g = |i: usize| group(m, base, i).map(|(a, b)| &s[a..b]);
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
    Stamp {
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
    }
}

/// `_bsd_stamp` of a `_BSD` match at `base`.
fn bsd_of<'a>(s: &'a [u8], base: usize, m: &CaptureLocations) -> Stamp<'a> {
    let g = |i: usize| group(m, base, i).map(|(a, b)| &s[a..b]);
    Stamp {
        year: g(4).map(int),
        month: g(2).map_or(0, month_of),
        day: g(3).map_or(0, int),
        hh: g(5).map_or(0, int),
        mm: g(6).map_or(0, int),
        ss: g(7).map_or(0, int),
        frac: g(8).map_or(0.0, frac_of),
        tz: None,
        synced: g(1).is_none(),
        offset_min: None,
    }
}

/// `regex.match(s, p)` (the pattern is anchored with `^`): the match's end, its groups in
/// `locs` offset by `p`.
fn match_at(re: &Regex, locs: &mut CaptureLocations, s: &[u8], p: usize) -> Option<usize> {
    re.captures_read(locs, &s[p..]).map(|m| p + m.end())
}

/// `scan_prefix(s, end, tagged=True)`, the parts a clock row needs. `s` is the whole
/// record (the lookaheads read past `end`, as Python's do).
pub(crate) fn scan_prefix<'a>(
    py: Python<'_>,
    cfg: &ScanCfg,
    hcfg: &HeaderCfg,
    memo: &mut ScanMemo,
    hmemo: &mut HeaderMemo,
    s: &'a [u8],
    end: usize,
) -> PyResult<Full<'a>> {
    let mut pos = 0usize;
    // _PRI
    if at(s, 0) == Some(b'<') {
        let d = digits_at(s, 1);
        if (1..=3).contains(&d) && at(s, 1 + d) == Some(b'>') && 2 + d <= end {
            pos = 2 + d;
        }
    }
    let mut host: Option<&'a [u8]> = None;
    let mut origin: Option<&'a [u8]> = None;
    let mut has_counter = false;
    let mut has_seq = false;
    let mut tokens = 0usize;
    let mut uptime_seen = false;
    let mut clock_synced = true;
    // (stamp, followed by a space and a host); only the first and the last are read.
    let mut first: Option<(Stamp<'a>, bool)> = None;
    let mut last: Option<Stamp<'a>> = None;
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
                let host5 = group(&memo.rfc5424, pos, 2);
                if e5 <= end && match_at(&cfg.iso, &mut memo.iso, s, pos + 2).is_some() {
                    let st = iso_of(s, pos + 2, &memo.iso);
                    if first.is_none() {
                        first = Some((st, true));
                    }
                    last = Some(st);
                    nstamps += 1;
                    if let Some((a, b)) = host5 {
                        if &s[a..b] != b"-" {
                            host = Some(&s[a..b]);
                        }
                    }
                    pos = e5;
                    tokens += 1;
                    continue;
                }
            }
        }
        let mut stamp_at: Option<(Stamp<'a>, usize)> = None;
        if matches!(c, b'*' | b'.') || c.is_ascii_uppercase() {
            if let Some(eb) = match_at(&cfg.bsd, &mut memo.bsd, s, pos) {
                if eb <= end {
                    let mut st = bsd_of(s, pos, &memo.bsd);
                    let strong = memo.bsd.get(8).is_some() || !st.synced || has_counter;
                    let mut np = eb;
                    // _read_tz
                    if let Some(te) = glued_tz(s, eb) {
                        st.tz = Some(&s[eb..te]);
                        np = te;
                    } else if let Some(me) = match_at(&cfg.spaced_tz, &mut memo.tz, s, eb) {
                        if let Some((a, b)) = group(&memo.tz, eb, 1) {
                            let label = &s[a..b];
                            let known = hmemo.tz_known(py, hcfg, label)?;
                            if known || (strong && is_alpha(label)) {
                                st.tz = Some(label);
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
                    stamp_at = Some((iso_of(s, pos, &memo.iso), ei));
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
                    uptime_seen = true;
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
                    let relay_only = nstamps == 1 && first.is_some_and(|f| f.1) && host.is_some();
                    if !has_counter && !counter_slot_closed && origin.is_none() && (nstamps == 0 || relay_only) {
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
        let Some(ne) = ipv6_host(s, pos).or_else(|| host_end(s, pos)) else {
            break;
        };
        if ne > end {
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
        if after_first_stamp && host.is_none() {
            host = Some(name);
            after_first_stamp = false;
        } else if origin.is_none() && !matches!(name[0], b'*' | b'(') {
            origin = Some(name);
        }
        pos = sep.unwrap_or(ne);
        tokens += 1;
    }
    let mut hdr = Hdr { host, origin, relay: None, device: None, clock_synced };
    if let Some(dev) = last {
        hdr.device = Some(dev);
        if nstamps > 1 {
            hdr.relay = first.map(|f| f.0);
        }
        hdr.clock_synced = clock_synced && dev.synced;
    }
    Ok(Full { hdr, uptime: uptime_seen })
}
