//! Kafka record batches (message format v2) for the receiver's producer.
//!
//! aiokafka's `BatchBuilder.append` costs about a microsecond a record in Python, and its
//! lz4 is level 9 (HC): about 3 µs a record more. Here one call encodes a whole batch of
//! records (`(key, value, headers)` tuples) and compresses it with fast LZ4 (the frame
//! format Kafka reads: independent 64 KiB blocks, no checksums), and
//! [`group_by_partition`] splits a chunk of records by the partition Kafka's default
//! partitioner gives their keys (Java's murmur2, as `aiokafka.partitioner`).
//!
//! A [`RecordBatch`] stands in for aiokafka's `BatchBuilder` in `producer.send_batch`: the
//! producer asks it for `record_count()`, sets the idempotent producer state with
//! `_set_producer_state()` and takes the bytes with `_build()` (the header and its CRC-32C
//! are written then, once; a retry sends the same bytes).

use std::io::Write;

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

/// `DefaultRecordBase.HEADER_STRUCT.size`.
const HEADER_LEN: usize = 61;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const MAGIC: u8 = 2;
/// `NO_PARTITION_LEADER_EPOCH`.
const NO_LEADER_EPOCH: i32 = -1;
pub(crate) const CODEC_NONE: u8 = 0;
pub(crate) const CODEC_LZ4: u8 = 3;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Kafka's varint: zigzag, then 7 bits a byte, least significant first.
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn varint_len(v: i64) -> usize {
    let mut z = zigzag(v);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// `murmur2` of Kafka's Java client (`Utils.murmur2`), as `aiokafka.partitioner.murmur2`.
pub(crate) fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The index in a partition list of the partition Kafka's default partitioner gives `key`.
pub(crate) fn partition_index(key: &[u8], n: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % n
}

/// Test hook: `aiokafka.partitioner.murmur2(data)`.
#[pyfunction]
pub(crate) fn kafka_murmur2(data: &[u8]) -> u32 {
    murmur2(data)
}

/// `[(partition, [record, ...]), ...]`: the records (tuples whose first item is the key,
/// bytes) by the partition of their key among `partitions` (sorted, as aiokafka's
/// `DefaultPartitioner` takes them), in the order each partition first occurs; the order
/// of the records is kept within each.
#[pyfunction]
pub(crate) fn group_by_partition<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyList>,
    partitions: Vec<i64>,
) -> PyResult<Bound<'py, PyList>> {
    let n = partitions.len();
    if n == 0 {
        return Err(PyValueError::new_err("no partitions"));
    }
    let mut groups: Vec<Option<Bound<'py, PyList>>> = vec![None; n];
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for item in records.iter() {
        let t = item.cast::<PyTuple>()?;
        let key = t.get_item(0)?;
        let key = key.cast::<PyBytes>().map_err(|_| PyTypeError::new_err("a record key must be bytes"))?;
        let idx = partition_index(key.as_bytes(), n);
        match &groups[idx] {
            Some(list) => list.append(&item)?,
            None => {
                let list = PyList::new(py, [&item])?;
                groups[idx] = Some(list);
                order.push(idx);
            }
        }
    }
    let out = PyList::empty(py);
    for idx in order {
        if let Some(list) = groups[idx].take() {
            out.append((partitions[idx], list))?;
        }
    }
    Ok(out)
}

/// `(len, bytes)` of an optional bytes item.
fn opt_bytes<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Option<&'a [u8]>> {
    if obj.is_none() {
        return Ok(None);
    }
    match obj.cast::<PyBytes>() {
        Ok(b) => Ok(Some(b.as_bytes())),
        Err(_) => Err(PyTypeError::new_err(format!("a record {what} must be bytes or None"))),
    }
}

fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// The headers part of a record: count, then (name, value) pairs.
fn encode_headers(out: &mut Vec<u8>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
    out.clear();
    let n = headers.len()?;
    put_varint(out, n as i64);
    for h in headers.try_iter()? {
        let h = h?;
        let pair = h.cast::<PyTuple>().map_err(|_| PyTypeError::new_err("a header must be a (name, value) tuple"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err("a header must be a (name, value) tuple"));
        }
        let name = pair.get_item(0)?;
        let name = name.cast::<PyString>().map_err(|_| PyTypeError::new_err("a header name must be str"))?;
        let name = name.to_str()?;
        put_varint(out, name.len() as i64);
        out.extend_from_slice(name.as_bytes());
        let value = pair.get_item(1)?;
        put_opt_bytes(out, opt_bytes(&value, "header value")?);
    }
    Ok(())
}

fn lz4(raw: &[u8]) -> PyResult<Vec<u8>> {
    let info = FrameInfo::new().block_size(BlockSize::Max64KB).block_mode(BlockMode::Independent);
    let mut out = Vec::with_capacity(HEADER_LEN + raw.len() / 2 + 64);
    out.resize(HEADER_LEN, 0);
    let mut enc = FrameEncoder::with_frame_info(info, out);
    enc.write_all(raw).map_err(|e| PyRuntimeError::new_err(format!("lz4: {e}")))?;
    enc.finish().map_err(|e| PyRuntimeError::new_err(format!("lz4: {e}")))
}

/// One batch of records for one partition, encoded; see the module documentation.
#[pyclass(module = "tunnelwatch_native")]
pub(crate) struct RecordBatch {
    count: usize,
    /// The header's room (zeros until `_build`) and the records, compressed or not.
    data: Vec<u8>,
    attributes: i16,
    timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    built: Option<Py<PyBytes>>,
}

#[pymethods]
impl RecordBatch {
    /// Encode records from the start of `records` while the batch stays within
    /// `max_bytes` uncompressed (the first record always goes in, as in aiokafka's
    /// builder); `record_count()` tells how many went in. Every record gets the
    /// timestamp `timestamp_ms`. `compression`: 0 (none) or 3 (lz4); compressed data not
    /// smaller than the records goes uncompressed.
    #[new]
    #[pyo3(signature = (records, *, max_bytes, timestamp_ms, compression))]
    fn new(records: &Bound<'_, PyList>, max_bytes: usize, timestamp_ms: i64, compression: u8) -> PyResult<Self> {
        if compression != CODEC_NONE && compression != CODEC_LZ4 {
            return Err(PyValueError::new_err(format!("compression {compression}: only 0 (none) and 3 (lz4)")));
        }
        let mut buf: Vec<u8> = Vec::with_capacity(max_bytes.min(HEADER_LEN + records.len() * 256));
        buf.resize(HEADER_LEN, 0);
        let mut hdr: Vec<u8> = Vec::with_capacity(128);
        let mut hdr_of: Option<Bound<'_, PyAny>> = None;
        let mut count = 0usize;
        for (i, item) in records.iter().enumerate() {
            let t = item.cast::<PyTuple>().map_err(|_| PyTypeError::new_err("a record must be a tuple"))?;
            if t.len() != 3 {
                return Err(PyTypeError::new_err("a record is (key, value, headers)"));
            }
            let key_obj = t.get_item(0)?;
            let value_obj = t.get_item(1)?;
            let headers = t.get_item(2)?;
            // Records of one source and receive batch share their headers tuple.
            if !hdr_of.as_ref().is_some_and(|h| h.is(&headers)) {
                encode_headers(&mut hdr, &headers)?;
                hdr_of = Some(headers);
            }
            let key = opt_bytes(&key_obj, "key")?;
            let value = opt_bytes(&value_obj, "value")?;
            let klen = key.map_or(-1, |k| k.len() as i64);
            let vlen = value.map_or(-1, |v| v.len() as i64);
            let body = 1 // attributes
                + varint_len(0) // timestamp delta
                + varint_len(i as i64) // offset delta
                + varint_len(klen)
                + key.map_or(0, <[u8]>::len)
                + varint_len(vlen)
                + value.map_or(0, <[u8]>::len)
                + hdr.len();
            let need = body + varint_len(body as i64);
            if i > 0 && buf.len() + need > max_bytes {
                break;
            }
            put_varint(&mut buf, body as i64);
            buf.push(0);
            put_varint(&mut buf, 0);
            put_varint(&mut buf, i as i64);
            put_opt_bytes(&mut buf, key);
            put_opt_bytes(&mut buf, value);
            buf.extend_from_slice(&hdr);
            count += 1;
        }
        if count == 0 {
            return Err(PyValueError::new_err("no records to batch"));
        }
        let mut attributes = 0i16;
        if compression == CODEC_LZ4 {
            let packed = lz4(&buf[HEADER_LEN..])?;
            if packed.len() < buf.len() {
                buf = packed;
                attributes = i16::from(CODEC_LZ4);
            }
        }
        Ok(RecordBatch {
            count,
            data: buf,
            attributes,
            timestamp: timestamp_ms,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: 0,
            built: None,
        })
    }

    fn record_count(&self) -> usize {
        self.count
    }

    /// Bytes of the batch as sent.
    fn size(&self, py: Python<'_>) -> usize {
        match &self.built {
            Some(b) => b.bind(py).as_bytes().len(),
            None => self.data.len(),
        }
    }

    /// Always closed: nothing can be appended.
    fn closed(&self) -> bool {
        true
    }

    fn close(&self) {}

    /// The idempotent producer's id, epoch and first sequence number (before `_build`).
    fn _set_producer_state(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> PyResult<()> {
        if self.built.is_some() {
            return Err(PyRuntimeError::new_err("the batch is already built"));
        }
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        Ok(())
    }

    /// The batch as sent: header, CRC-32C and records (the same bytes every time).
    fn _build<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(b) = &self.built {
            return Ok(b.bind(py).clone());
        }
        let d = &mut self.data;
        let total = d.len();
        let last_offset = (self.count - 1) as i32;
        d[0..8].copy_from_slice(&0i64.to_be_bytes());
        d[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
        d[12..16].copy_from_slice(&NO_LEADER_EPOCH.to_be_bytes());
        d[16] = MAGIC;
        d[21..23].copy_from_slice(&self.attributes.to_be_bytes());
        d[23..27].copy_from_slice(&last_offset.to_be_bytes());
        d[27..35].copy_from_slice(&self.timestamp.to_be_bytes());
        d[35..43].copy_from_slice(&self.timestamp.to_be_bytes());
        d[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        d[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        d[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        d[57..61].copy_from_slice(&(self.count as i32).to_be_bytes());
        let crc = crc32c::crc32c(&d[ATTRIBUTES_OFFSET..]);
        d[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let out = PyBytes::new(py, d);
        self.data = Vec::new();
        self.built = Some(out.clone().unbind());
        Ok(out)
    }
}

#[cfg(test)]
#[path = "kafka_tests.rs"]
mod tests;
