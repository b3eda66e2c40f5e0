//! The bookie's gRPC behaviour against the real `strata bookie` process: fencing (also
//! across restarts), space reclamation after deletion, read-only mode, LAC long-poll,
//! graceful SIGTERM, and clear errors for bad input while other clients keep working.

mod common;

use bytes::Bytes;
use common::{BookieProcess, dir_size, payload};
use std::time::{Duration, Instant};
use strata_bookie::BookieError;
use strata_bookie::client::{BookieClient, NewEntry};
use strata_common::{EntryId, ErrorCode, LedgerId, ids::entry_checksum};
use strata_proto::bookie::v1 as pb;

fn lid(n: u64) -> LedgerId {
    LedgerId::new(n).unwrap()
}

/// Adds entries `range` to `ledger` and returns each outcome's error code (None = OK).
async fn add(
    client: &BookieClient,
    token: &'static [u8],
    ledger: u64,
    range: std::ops::Range<u64>,
    size: usize,
) -> Vec<Option<ErrorCode>> {
    let (tx, mut rx) = client.add_stream(Bytes::from_static(token), 16).await.unwrap();
    let n = (range.end - range.start) as usize;
    for chunk in range.collect::<Vec<_>>().chunks(32) {
        tx.send(
            chunk
                .iter()
                .map(|&e| NewEntry {
                    ledger: lid(ledger),
                    entry: EntryId::new(e),
                    payload: payload(ledger, e, size),
                    lac: e.checked_sub(1),
                })
                .collect(),
        )
        .await
        .unwrap();
    }
    let mut out = Vec::new();
    while out.len() < n {
        for o in rx.next().await.unwrap().expect("stream open") {
            out.push(o.error.map(|(c, _)| c));
        }
    }
    out
}

/// Sends one raw AddRequest (any field values) and returns the bookie's answer.
async fn raw_add(client: &BookieClient, req: pb::AddRequest) -> pb::AddResponse {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(req).await.unwrap();
    drop(tx);
    let mut resp = client
        .raw()
        .add(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    resp.message().await.unwrap().unwrap()
}

fn code(r: Result<impl std::fmt::Debug, BookieError>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_ledgers_reject_adds_also_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut bookie = BookieProcess::start(dir.path(), "");
    let client = bookie.ready().await;
    assert!(add(&client, b"w1", 1, 0..10, 100).await.iter().all(Option::is_none));
    // The wrong token cannot fence.
    assert_eq!(
        code(client.fence(lid(1), Bytes::from_static(b"bad")).await),
        ErrorCode::Unauthorized
    );
    let f = client.fence(lid(1), Bytes::from_static(b"w1")).await.unwrap();
    assert_eq!(f.last_entry, Some(9));
    assert_eq!(f.lac, Some(8));
    assert!(
        add(&client, b"w1", 1, 10..12, 100)
            .await
            .iter()
            .all(|c| *c == Some(ErrorCode::Fenced))
    );
    // Fencing a ledger this bookie never saw creates it fenced: a late first add fails.
    client.fence(lid(2), Bytes::from_static(b"w2")).await.unwrap();
    assert_eq!(add(&client, b"w2", 2, 0..1, 10).await, vec![Some(ErrorCode::Fenced)]);
    // Reads of a fenced ledger still work, and say it is fenced.
    assert_eq!(client.read(lid(1), 0, 9).await.unwrap().len(), 10);

    // Restart gracefully, then after a SIGKILL: still fenced.
    assert!(bookie.sigterm().success(), "{}", bookie.log_text());
    let mut bookie = BookieProcess::start(dir.path(), "");
    let client = bookie.ready().await;
    assert_eq!(add(&client, b"w1", 1, 10..11, 100).await, vec![Some(ErrorCode::Fenced)]);
    bookie.sigkill();
    let mut bookie = BookieProcess::start(dir.path(), "");
    let client = bookie.ready().await;
    assert_eq!(add(&client, b"w1", 1, 10..11, 100).await, vec![Some(ErrorCode::Fenced)]);
    assert_eq!(add(&client, b"w2", 2, 0..1, 10).await, vec![Some(ErrorCode::Fenced)]);
    // A recovery add (re-replicating the tail) is allowed on a fenced ledger.
    let p = payload(1, 10, 100);
    let r = raw_add(
        &client,
        pb::AddRequest {
            entries: vec![pb::AddEntry {
                ledger_id: 1,
                entry_id: 10,
                writer_token: Bytes::from_static(b"w1"),
                lac: None,
                checksum: entry_checksum(lid(1), EntryId::new(10), &p),
                payload: p,
                recovery: true,
            }],
        },
    )
    .await;
    assert_eq!(r.results[0].code, pb::ErrorCode::Ok as i32, "{}", r.results[0].message);
    assert!(bookie.sigterm().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_ledgers_gives_disk_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "journal_max_file_bytes = 1048576\n\
               entry_log_max_bytes = 1048576\n\
               write_cache_max_bytes = 2097152\n\
               flush_threshold_bytes = 1048576\n\
               flush_interval_ms = 100\n\
               gc_interval_ms = 200\n\
               max_entry_bytes = 1048576\n";
    let mut bookie = BookieProcess::start(dir.path(), cfg);
    let client = bookie.ready().await;
    // 24 MiB in 8 big ledgers, and one small ledger interleaved with them that stays.
    for round in 0..6u64 {
        for ledger in 1..=8 {
            let r = add(&client, b"t", ledger, round * 8..round * 8 + 8, 64 * 1024).await;
            assert!(r.iter().all(Option::is_none));
        }
        assert!(
            add(&client, b"t", 100, round * 4..round * 4 + 4, 1000)
                .await
                .iter()
                .all(Option::is_none)
        );
    }
    // Wait for the data to be flushed into entry logs and the journal checkpointed.
    let data = dir.path().join("data");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut peak = dir_size(&data);
    while Instant::now() < deadline && dir_size(&data.join("journal")) > 2 << 20 {
        peak = peak.max(dir_size(&data));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(peak > 20 << 20, "expected > 20 MiB on disk, found {peak}");
    for ledger in 1..=8 {
        assert!(client.delete_ledger(lid(ledger)).await.unwrap());
    }
    assert!(
        !client.delete_ledger(lid(1)).await.unwrap(),
        "deleting twice is a no-op"
    );
    assert_eq!(code(client.read(lid(1), 0, 0).await), ErrorCode::NoSuchLedger);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = dir_size(&data);
    while now > peak / 4 {
        assert!(
            Instant::now() < deadline,
            "disk usage stayed at {now} bytes (peak {peak})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = dir_size(&data);
    }
    eprintln!("data directory: {peak} bytes before deletion, {now} after garbage collection");
    // The ledger that stayed is intact, also after a restart.
    let check = |client: BookieClient| async move {
        let got = client.read(lid(100), 0, 23).await.unwrap();
        assert_eq!(got.len(), 24);
        for e in got {
            assert_eq!(e.payload, payload(100, e.entry, 1000));
        }
    };
    check(client).await;
    assert!(bookie.sigterm().success());
    let mut bookie = BookieProcess::start(dir.path(), cfg);
    let client = bookie.ready().await;
    check(client.clone()).await;
    assert_eq!(code(client.read(lid(3), 0, 0).await), ErrorCode::NoSuchLedger);
    // A deleted ledger stays deleted: adds to it fail.
    assert_eq!(
        add(&client, b"t", 3, 100..101, 10).await,
        vec![Some(ErrorCode::NoSuchLedger)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_rejects_adds_and_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut bookie = BookieProcess::start(dir.path(), "");
    let client = bookie.ready().await;
    assert!(add(&client, b"t", 1, 0..20, 500).await.iter().all(Option::is_none));
    let info = client.node_info().await.unwrap();
    assert!(!info.read_only);
    assert!(info.free_bytes > 0 && info.total_bytes >= info.free_bytes);
    assert!(bookie.sigterm().success());
    // Any real disk is fuller than 0.01%: the bookie starts read-only.
    let mut bookie = BookieProcess::start(
        dir.path(),
        "disk_usage_threshold = 0.0001\ndisk_usage_lwm = 0.00005\ndisk_check_interval_ms = 100\n",
    );
    let client = bookie.ready().await;
    let info = client.node_info().await.unwrap();
    assert!(info.read_only, "node info must say read-only");
    assert!(
        info.read_only_reason.contains("disk_usage_threshold"),
        "{}",
        info.read_only_reason
    );
    assert!(
        add(&client, b"t", 1, 20..25, 500)
            .await
            .iter()
            .all(|c| *c == Some(ErrorCode::ReadOnly))
    );
    let got = client.read(lid(1), 0, 19).await.unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(got[7].payload, payload(1, 7, 500));
    assert!(bookie.sigterm().success());
    // The absolute threshold works the same way.
    let mut bookie = BookieProcess::start(
        dir.path(),
        "min_free_bytes = 1000000000000000000
",
    );
    let client = bookie.ready().await;
    let info = client.node_info().await.unwrap();
    assert!(
        info.read_only && info.read_only_reason.contains("min_free_bytes"),
        "{info:?}"
    );
    assert_eq!(
        add(&client, b"t", 1, 20..21, 500).await,
        vec![Some(ErrorCode::ReadOnly)]
    );
    assert_eq!(client.read(lid(1), 19, 19).await.unwrap().len(), 1);
    assert!(bookie.sigterm().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lac_long_poll_wakes_when_lac_advances() {
    let dir = tempfile::tempdir().unwrap();
    let mut bookie = BookieProcess::start(dir.path(), "");
    let client = bookie.ready().await;
    assert!(add(&client, b"t", 5, 0..3, 10).await.iter().all(Option::is_none));
    assert_eq!(client.read_lac(lid(5), None, Duration::ZERO).await.unwrap(), Some(1));
    // A poll that nothing satisfies returns after its wait with the old LAC.
    let t = Instant::now();
    assert_eq!(
        client
            .read_lac(lid(5), Some(1), Duration::from_millis(300))
            .await
            .unwrap(),
        Some(1)
    );
    assert!(t.elapsed() >= Duration::from_millis(250));
    // A poll waiting for LAC > 1 is woken by the adds that carry LACs 2, 3 and 4. The bookie
    // advances the LAC entry by entry, so the poll may answer with any of them.
    let waiter = {
        let c = client.clone();
        tokio::spawn(async move { c.read_lac(lid(5), Some(1), Duration::from_secs(30)).await })
    };
    assert!(add(&client, b"t", 5, 3..6, 10).await.iter().all(Option::is_none));
    let lac = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(lac, Some(2..=4)), "woken with LAC {lac:?}");
    // Once the adds are acknowledged, the LAC is the last one they carried.
    assert_eq!(client.read_lac(lid(5), None, Duration::ZERO).await.unwrap(), Some(4));
    assert_eq!(
        code(client.read_lac(lid(77), None, Duration::ZERO).await),
        ErrorCode::NoSuchLedger
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_bookie_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut bookie = BookieProcess::start(dir.path(), "max_entry_bytes = 65536\n");
    let client = bookie.ready().await;
    // A well-behaved writer runs throughout.
    let good = {
        let c = client.clone();
        tokio::spawn(async move {
            for round in 0..20u64 {
                let r = add(&c, b"good", 9, round * 10..round * 10 + 10, 1000).await;
                assert!(r.iter().all(Option::is_none), "good writer failed: {r:?}");
            }
        })
    };
    assert_eq!(
        add(&client, b"t", 1, 0..1, 65_537).await,
        vec![Some(ErrorCode::TooLarge)]
    );
    assert_eq!(code(client.read(lid(404), 0, 0).await), ErrorCode::NoSuchLedger);
    assert!(add(&client, b"t", 2, 0..2, 10).await.iter().all(Option::is_none));
    assert_eq!(code(client.read(lid(2), 5, 9).await), ErrorCode::NoSuchEntry);
    assert_eq!(
        add(&client, b"other", 2, 2..3, 10).await,
        vec![Some(ErrorCode::Unauthorized)]
    );

    let mut raw = client.raw();
    // Wrong checksum, ledger id 0, an oversized token: each rejected by name.
    let bad = |ledger_id: u64, checksum_delta: u32, token: Bytes| {
        let p = payload(3, 0, 50);
        pb::AddEntry {
            ledger_id,
            entry_id: 0,
            writer_token: token,
            lac: None,
            checksum: entry_checksum(lid(3), EntryId::new(0), &p).wrapping_add(checksum_delta),
            payload: p,
            recovery: false,
        }
    };
    let r = raw_add(
        &client,
        pb::AddRequest {
            entries: vec![
                bad(3, 1, Bytes::new()),
                bad(0, 0, Bytes::new()),
                bad(3, 0, Bytes::from(vec![7u8; 65])),
                bad(3, 0, Bytes::new()),
            ],
        },
    )
    .await;
    let codes: Vec<i32> = r.results.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        vec![
            pb::ErrorCode::BadChecksum as i32,
            pb::ErrorCode::InvalidArgument as i32,
            pb::ErrorCode::InvalidArgument as i32,
            pb::ErrorCode::Ok as i32
        ],
        "{:?}",
        r.results
    );
    assert!(r.results[0].message.contains("checksum"), "{}", r.results[0].message);
    assert!(r.results[1].message.contains("ledger id"), "{}", r.results[1].message);
    assert!(
        r.results[2].message.contains("writer_token"),
        "{}",
        r.results[2].message
    );

    // Malformed reads.
    let s = raw
        .read(pb::ReadRequest {
            ledger_id: 2,
            first_entry: 5,
            last_entry: 1,
            max_bytes: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::from_status(&s), Some(ErrorCode::InvalidArgument));
    assert!(s.message().contains("last_entry"), "{}", s.message());
    let s = raw
        .fence(pb::FenceRequest {
            ledger_id: 0,
            writer_token: Bytes::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::from_status(&s), Some(ErrorCode::InvalidArgument));

    // Garbage on the socket, and a message that is not valid protobuf.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(&bookie.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff\x13garbage").await.unwrap();
        drop(s);
    }
    let status = send_raw_bytes(
        &bookie.addr,
        "/strata.bookie.v1.Bookie/Read",
        vec![0xff, 0xff, 0xff, 0x0f],
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");

    good.await.unwrap();
    // Still healthy, and the good writer's data is intact.
    assert!(!client.node_info().await.unwrap().read_only);
    assert_eq!(client.read(lid(9), 0, 199).await.unwrap().len(), 200);
}

/// Sends `body` as the message of a unary gRPC call, bypassing protobuf encoding.
async fn send_raw_bytes(addr: &str, path: &'static str, body: Vec<u8>) -> tonic::Status {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    #[derive(Default)]
    struct Raw;
    struct RawEnc;
    struct RawDec;
    impl Encoder for RawEnc {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for RawDec {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            use bytes::Buf;
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEnc;
        type Decoder = RawDec;
        fn encoder(&mut self) -> RawEnc {
            RawEnc
        }
        fn decoder(&mut self) -> RawDec {
            RawDec
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_adds_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut bookie = BookieProcess::start(dir.path(), "");
    let client = bookie.ready().await;
    let (tx, mut rx) = client.add_stream(Bytes::from_static(b"t"), 64).await.unwrap();
    for e in 0..200u64 {
        tx.send(vec![NewEntry {
            ledger: lid(1),
            entry: EntryId::new(e),
            payload: payload(1, e, 4096),
            lac: None,
        }])
        .await
        .unwrap();
    }
    // Wait until some are acknowledged, then SIGTERM with the rest in flight.
    let mut acked = Vec::new();
    while acked.len() < 10 {
        for o in rx.next().await.unwrap().unwrap() {
            assert!(o.error.is_none());
            acked.push(o.entry);
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &bookie.child.id().to_string()])
        .status();
    // Every answer still arrives before the stream ends: success, or shutting down.
    while let Ok(Some(outcomes)) = rx.next().await {
        for o in outcomes {
            match o.error {
                None => acked.push(o.entry),
                Some((c, _)) => assert_eq!(c, ErrorCode::ShuttingDown),
            }
        }
    }
    let status = bookie.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}; log:\n{}", bookie.log_text());
    let mut bookie = BookieProcess::start(dir.path(), "");
    let client = bookie.ready().await;
    for e in acked {
        let got = client.read(lid(1), e, e).await.unwrap();
        assert_eq!(got[0].payload, payload(1, e, 4096));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bookie_on_an_embedded_metadata_store_serves_its_probes() {
    // The probes and the bookie share one store: an embedded one opens once per process.
    let dir = tempfile::tempdir().unwrap();
    let meta = format!("local://{}", dir.path().join("meta").display());
    let http = format!("127.0.0.1:{}", common::free_port());
    let mut b = BookieProcess::start_with_args(dir.path(), "", &["--metadata-url", &meta, "--http-listen", &http]);
    b.ready().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(b.is_running(), "bookie exited:\n{}", b.log_text());
        if let Some((200, body)) = common::http_get(&http, "/readyz").await {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(Instant::now() < deadline, "never ready:\n{}", b.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
