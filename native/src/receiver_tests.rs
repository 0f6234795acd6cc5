//! Unit tests of the UDP reader of `receiver.rs` on real loopback sockets, and of its rate
//! limiter (no Python needed).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use super::*;

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        segments: Mutex::new(VecDeque::new()),
        free: Mutex::new(Vec::new()),
        buffered: AtomicUsize::new(0),
        datagrams: AtomicUsize::new(0),
        notified: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        error: AtomicI32::new(0),
        ready_fd: eventfd().expect("eventfd"),
        wake_fd: eventfd().expect("eventfd"),
    })
}

/// A bound receiving socket and a sender, both on 127.0.0.1 (loopback UDP queues a
/// datagram on the receiving socket before `send` returns).
fn pair() -> (UdpSocket, UdpSocket) {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    (rx, tx)
}

/// Every buffered datagram, in order: its bytes and its source address.
fn taken(shared: &Shared) -> Vec<(Vec<u8>, AddrKey)> {
    let mut out = Vec::new();
    for seg in lock(&shared.segments).iter() {
        for d in &seg.items {
            let start = d.start as usize;
            out.push((seg.data[start..start + d.len as usize].to_vec(), d.addr));
        }
    }
    out
}

fn readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) == 1 }
}

#[test]
fn read_available_takes_every_waiting_datagram_with_its_source_address() {
    let (rx, tx) = pair();
    let lines: Vec<Vec<u8>> =
        (0..10).map(|i| format!("<189>{i}: %CRYPTO-4-RECVD_PKT_MAC_ERR: x{}", "y".repeat(i)).into_bytes()).collect();
    for line in &lines {
        tx.send(line).expect("send");
    }
    let shared = shared();
    // 4 slots: three recvmmsg calls (4, 4, 2) until the socket runs dry.
    let mut slots = Slots::new(4);
    let (alive, n) = read_available(rx.as_raw_fd(), &mut slots, &shared, 1 << 20);
    assert!(alive);
    assert_eq!(n, lines.len());
    assert_eq!(shared.datagrams.load(Ordering::SeqCst), lines.len());
    let got = taken(&shared);
    assert_eq!(got.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>(), lines);
    let port = tx.local_addr().expect("addr").port();
    for (_, addr) in &got {
        let (family, ip, p, _, _) = addr_parts(addr);
        assert_eq!((family, ip.as_slice(), p), (libc::AF_INET, &[127u8, 0, 0, 1][..], port));
    }
    // The bookkeeping counts the payload bytes and a fixed cost per datagram.
    let payload: usize = lines.iter().map(Vec::len).sum();
    assert_eq!(shared.buffered.load(Ordering::SeqCst), payload + lines.len() * DATAGRAM_OVERHEAD);
    // Nothing is left, and reading again finds nothing (not an error).
    assert_eq!(read_available(rx.as_raw_fd(), &mut slots, &shared, 1 << 20), (true, 0));
    assert_eq!(shared.error.load(Ordering::SeqCst), 0);
}

#[test]
fn read_available_leaves_datagrams_in_the_socket_while_its_buffer_is_full() {
    let (rx, tx) = pair();
    for i in 0..6 {
        tx.send(format!("line {i} {}", "z".repeat(1000)).as_bytes()).expect("send");
    }
    let shared = shared();
    let mut slots = Slots::new(2);
    // Room for less than two datagrams: the limit is checked before each recvmmsg, so
    // one call (two datagrams) goes in, and the next waits for the event loop.
    let (alive, n) = read_available(rx.as_raw_fd(), &mut slots, &shared, 1500);
    assert!(alive);
    assert_eq!(n, 2);
    // The event loop drains: the rest comes out of the kernel's buffer, in order.
    let first = taken(&shared);
    lock(&shared.segments).clear();
    shared.buffered.store(0, Ordering::SeqCst);
    let (_, rest) = read_available(rx.as_raw_fd(), &mut slots, &shared, 1 << 20);
    assert_eq!(rest, 4);
    let all: Vec<Vec<u8>> = first.into_iter().chain(taken(&shared)).map(|(b, _)| b).collect();
    let want: Vec<Vec<u8>> = (0..6).map(|i| format!("line {i} {}", "z".repeat(1000)).into_bytes()).collect();
    assert_eq!(all, want);
}

#[test]
fn a_descriptor_that_is_no_socket_stops_the_reader_and_records_the_error() {
    let shared = shared();
    let mut slots = Slots::new(2);
    // A descriptor that is no socket: an eventfd.
    let fd = eventfd().expect("eventfd");
    let (alive, n) = read_available(fd, &mut slots, &shared, 1 << 20);
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    assert_eq!((alive, n), (false, 0));
    assert_eq!(shared.error.load(Ordering::SeqCst), libc::ENOTSOCK);
}

#[test]
fn notify_wakes_the_event_loop_once_until_it_reads() {
    let shared = shared();
    assert!(!readable(shared.ready_fd, 0));
    shared.notify();
    shared.notify();
    assert!(readable(shared.ready_fd, 0));
    read_event(shared.ready_fd);
    // The second notify wrote nothing: one read empties the eventfd.
    assert!(!readable(shared.ready_fd, 0));
}

#[test]
fn the_reader_thread_hands_over_what_arrives_and_stops_when_told() {
    let (rx, tx) = pair();
    let shared = shared();
    let fd = rx.as_raw_fd();
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || reader(fd, shared, 8, 1 << 20))
    };
    for i in 0..100 {
        tx.send(format!("msg {i}").as_bytes()).expect("send");
    }
    // The event loop is woken within WAKE_EVERY of the first datagrams.
    assert!(readable(shared.ready_fd, 5000), "the reader never woke the event loop");
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared.datagrams.load(Ordering::SeqCst) < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    shared.stop.store(true, Ordering::SeqCst);
    write_event(shared.wake_fd);
    thread.join().expect("the reader thread panicked");
    let got: Vec<Vec<u8>> = taken(&shared).into_iter().map(|(b, _)| b).collect();
    let want: Vec<Vec<u8>> = (0..100).map(|i| format!("msg {i}").into_bytes()).collect();
    assert_eq!(got, want);
}

fn limiter(rate: f64, burst: f64, max_sources: usize) -> Limiter {
    Limiter { rate, burst, max_sources, buckets: HashMap::default() }
}

#[test]
fn the_rate_limit_lets_a_burst_through_then_one_message_per_token() {
    let mut l = limiter(2.0, 3.0, 100);
    let t0 = 1000.0;
    assert_eq!((0..5).map(|_| l.allow(b"10.0.0.1", t0)).collect::<Vec<_>>(), [true, true, true, false, false]);
    // Half a second at 2/s is one token.
    assert!(l.allow(b"10.0.0.1", t0 + 0.5));
    assert!(!l.allow(b"10.0.0.1", t0 + 0.5));
    // Another host has its own bucket.
    assert!(l.allow(b"10.0.0.2", t0 + 0.5));
    // A long pause refills to the burst, not beyond.
    let later = t0 + 3600.0;
    assert_eq!((0..4).filter(|_| l.allow(b"10.0.0.1", later)).count(), 3);
}

#[test]
fn no_rate_limit_allows_everything() {
    let mut l = limiter(0.0, 0.0, 1);
    assert!((0..10_000).all(|i| l.allow(format!("h{i}").as_bytes(), 5.0)));
    assert!(l.buckets.is_empty());
}

#[test]
fn the_rate_limiter_forgets_full_buckets_when_it_tracks_too_many_hosts() {
    let mut l = limiter(1.0, 2.0, 2);
    assert!(l.allow(b"a", 0.0));
    assert!(l.allow(b"b", 10.0));
    // At t=10.5 "a" (last seen at 0, refilled long ago) is forgotten to make room for "c";
    // "b" (seen 0.5 s ago, not full again) is kept with its spent token.
    assert!(l.allow(b"c", 10.5));
    assert!(!l.buckets.contains_key(&b"a"[..]));
    assert!(l.buckets.contains_key(&b"b"[..]));
    assert_eq!(l.buckets.len(), 2);
}
