//! Unit tests of the Kafka encoding helpers of `kafka.rs` (no Python needed).

use std::io::Read;

use lz4_flex::frame::FrameDecoder;

use super::*;

fn varint(v: i64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, v);
    out
}

#[test]
fn murmur2_gives_what_kafkas_java_client_and_aiokafka_give() {
    // Checked against aiokafka.partitioner.murmur2, which follows Utils.murmur2.
    let cases: [(&[u8], u32); 8] = [
        (b"", 275_646_681),
        (b"21", 3_321_034_988),
        (b"abc", 479_470_107),
        (b"foobar", 3_504_634_814),
        (b"a-little-bit-long-string", 3_308_985_760),
        (b"a-little-bit-longer-string", 2_808_662_467),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 4_236_069_325),
        (b"rtr-1", 4_015_089_195),
    ];
    for (data, want) in cases {
        assert_eq!(murmur2(data), want, "murmur2({:?})", String::from_utf8_lossy(data));
    }
}

#[test]
fn partition_index_is_the_positive_hash_modulo_the_partition_count() {
    assert_eq!(partition_index(b"rtr-1", 4), 3);
    assert_eq!(partition_index(b"foobar", 4), 2);
    assert_eq!(partition_index(b"21", 4), 0);
    // 4_236_069_325 has its top bit set: it is masked, not taken as negative.
    assert_eq!(partition_index(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 4), 1);
    for n in 1..9 {
        for i in 0..500 {
            let key = format!("device-{i}");
            let idx = partition_index(key.as_bytes(), n);
            assert!(idx < n);
            assert_eq!(idx, (murmur2(key.as_bytes()) & 0x7fff_ffff) as usize % n);
        }
    }
}

#[test]
fn varints_are_zigzag_encoded_seven_bits_a_byte_low_bits_first() {
    assert_eq!(varint(0), [0x00]);
    assert_eq!(varint(-1), [0x01]);
    assert_eq!(varint(1), [0x02]);
    assert_eq!(varint(63), [0x7e]);
    assert_eq!(varint(-64), [0x7f]);
    assert_eq!(varint(64), [0x80, 0x01]);
    assert_eq!(varint(300), [0xd8, 0x04]);
    assert_eq!(varint(i64::MAX).len(), 10);
    assert_eq!(varint(i64::MIN).len(), 10);
    for v in [-100_000i64, -129, -65, -1, 0, 1, 64, 8191, 8192, 1 << 40, i64::MAX, i64::MIN] {
        assert_eq!(varint_len(v), varint(v).len(), "varint_len({v})");
    }
}

#[test]
fn varints_decode_back_to_the_value() {
    fn decode(bytes: &[u8]) -> i64 {
        let mut z: u64 = 0;
        for (i, b) in bytes.iter().enumerate() {
            z |= u64::from(b & 0x7f) << (7 * i);
        }
        ((z >> 1) as i64) ^ -((z & 1) as i64)
    }
    for v in [-1_000_000i64, -300, -1, 0, 1, 127, 128, 300, 1_000_000, i64::MAX, i64::MIN] {
        let bytes = varint(v);
        assert!(bytes[..bytes.len() - 1].iter().all(|b| b & 0x80 != 0));
        assert_eq!(bytes.last().map(|b| b & 0x80), Some(0));
        assert_eq!(decode(&bytes), v);
    }
}

#[test]
fn an_absent_key_is_length_minus_one_and_a_present_one_is_length_prefixed() {
    let mut out = Vec::new();
    put_opt_bytes(&mut out, None);
    assert_eq!(out, [0x01]);
    out.clear();
    put_opt_bytes(&mut out, Some(b"ab"));
    assert_eq!(out, [0x04, b'a', b'b']);
    out.clear();
    put_opt_bytes(&mut out, Some(b""));
    assert_eq!(out, [0x00]);
}

#[test]
fn lz4_keeps_room_for_the_batch_header_then_a_frame_that_decodes_to_the_records() {
    let records: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("<189>{i}: %CRYPTO-4-RECVD_PKT_MAC_ERR: rtr-{}\n", i % 7).into_bytes())
        .collect();
    let packed = lz4(&records).expect("lz4");
    assert!(packed[..HEADER_LEN].iter().all(|&b| b == 0));
    // The LZ4 frame magic number, little endian.
    assert_eq!(packed[HEADER_LEN..HEADER_LEN + 4], [0x04, 0x22, 0x4d, 0x18]);
    assert!(packed.len() < records.len() / 4, "repetitive syslog should compress well");
    let mut back = Vec::new();
    FrameDecoder::new(&packed[HEADER_LEN..]).read_to_end(&mut back).expect("a valid frame");
    assert_eq!(back, records);
}

#[test]
fn lz4_of_nothing_is_still_a_valid_empty_frame() {
    let packed = lz4(b"").expect("lz4");
    let mut back = Vec::new();
    FrameDecoder::new(&packed[HEADER_LEN..]).read_to_end(&mut back).expect("a valid frame");
    assert!(back.is_empty());
}
