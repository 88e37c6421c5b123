//! The conformance suite every `BlobStore` backend must pass. Backends call [`run_all`] from their own
//! tests (with a fresh, empty store).

use bytes::Bytes;
use entrepot_oci::{Algorithm, ByteRange, Digest, Digester, UploadId};
use futures_util::StreamExt;

use crate::{BlobStore, ByteStream, StorageError};

fn stream_of(chunks: Vec<Vec<u8>>) -> ByteStream {
    Box::pin(futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))))
}

async fn read_all<S: BlobStore + ?Sized>(store: &S, d: &Digest, range: Option<ByteRange>) -> Vec<u8> {
    let mut s = store.read(d, range).await.expect("read");
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    out
}

fn id(s: &str) -> UploadId {
    UploadId::parse(s).expect("upload id")
}

/// Runs every check against `store`, which must start empty.
pub async fn run_all<S: BlobStore + ?Sized>(store: &S) {
    upload_commit_read(store).await;
    resume_after_partial_write(store).await;
    interrupted_write(store).await;
    abort_and_unknown(store).await;
    large_blob_streams(store).await;
    delete_and_list(store).await;
    info_and_quarantine(store).await;
}

async fn upload_commit_read<S: BlobStore + ?Sized>(store: &S) {
    let data = b"hello, blob store".to_vec();
    let d = Digest::sha256(&data);
    assert_eq!(store.stat(&d).await.expect("stat"), None);
    assert!(matches!(store.read(&d, None).await, Err(StorageError::NotFound)));

    let u = id("u-basic");
    store.upload_create(&u).await.expect("create");
    let (n, h) = store
        .upload_write(&u, 0, stream_of(vec![data[..5].to_vec(), data[5..].to_vec()]), Digester::new(Algorithm::Sha256))
        .await
        .expect("write");
    assert_eq!(n, data.len() as u64);
    assert_eq!(h.finish(), d);
    store.upload_commit(&u, n, &d).await.expect("commit");
    assert_eq!(store.stat(&d).await.expect("stat"), Some(data.len() as u64));
    assert_eq!(read_all(store, &d, None).await, data);
    assert_eq!(read_all(store, &d, Some(ByteRange { start: 7, len: 5 })).await, &data[7..12]);
    assert!(!store.list_uploads().await.expect("list uploads").contains(&u), "commit removes the staging area");

    // Committing the same content again (a concurrent identical push) is fine.
    let u2 = id("u-basic-2");
    store.upload_create(&u2).await.expect("create");
    let (n, _) = store
        .upload_write(&u2, 0, stream_of(vec![data.clone()]), Digester::new(Algorithm::Sha256))
        .await
        .expect("write");
    store.upload_commit(&u2, n, &d).await.expect("recommit");
    assert_eq!(read_all(store, &d, None).await, data);
}

async fn resume_after_partial_write<S: BlobStore + ?Sized>(store: &S) {
    // Chunked: two writes, the second resuming at the first's end with a restored hasher state.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::of(Algorithm::Sha512, &data);
    let u = id("u-chunked");
    store.upload_create(&u).await.expect("create");
    let (n1, h) = store
        .upload_write(&u, 0, stream_of(vec![data[..40_000].to_vec()]), Digester::new(Algorithm::Sha512))
        .await
        .expect("w1");
    let saved = h.save();
    let h = Digester::restore(Algorithm::Sha512, &saved).expect("restore");
    // A write at the recorded offset discards bytes of an earlier attempt that went further.
    let (_, _) = store
        .upload_write(&u, n1, stream_of(vec![vec![0xEE; 1000]]), Digester::new(Algorithm::Sha512))
        .await
        .expect("junk");
    let (n2, h) = store.upload_write(&u, n1, stream_of(vec![data[40_000..].to_vec()]), h).await.expect("w2");
    assert_eq!(n1 + n2, data.len() as u64);
    assert_eq!(h.finish(), d);
    store.upload_commit(&u, n1 + n2, &d).await.expect("commit");
    assert_eq!(read_all(store, &d, None).await, data);
}

async fn interrupted_write<S: BlobStore + ?Sized>(store: &S) {
    let u = id("u-interrupted");
    store.upload_create(&u).await.expect("create");
    let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away")),
    ]));
    let r = store.upload_write(&u, 0, failing, Digester::new(Algorithm::Sha256)).await;
    assert!(matches!(r, Err(StorageError::Interrupted(_))));
    let d = Digest::sha256(b"partial");
    assert_eq!(store.stat(&d).await.expect("stat"), None, "nothing becomes visible");
    // The client resumes from offset 0.
    let (n, h) = store
        .upload_write(&u, 0, stream_of(vec![b"complete".to_vec()]), Digester::new(Algorithm::Sha256))
        .await
        .expect("w");
    let d = h.finish();
    store.upload_commit(&u, n, &d).await.expect("commit");
    assert_eq!(read_all(store, &d, None).await, b"complete");
}

async fn abort_and_unknown<S: BlobStore + ?Sized>(store: &S) {
    let u = id("u-abort");
    store.upload_create(&u).await.expect("create");
    assert!(store.list_uploads().await.expect("list").contains(&u));
    store.upload_abort(&u).await.expect("abort");
    store.upload_abort(&u).await.expect("abort twice");
    assert!(!store.list_uploads().await.expect("list").contains(&u));
    let r = store.upload_write(&u, 0, stream_of(vec![b"x".to_vec()]), Digester::new(Algorithm::Sha256)).await;
    assert!(matches!(r, Err(StorageError::UploadNotFound)));

    // Writing past the staged bytes would leave a hole; refused.
    let u = id("u-hole");
    store.upload_create(&u).await.expect("create");
    store.upload_write(&u, 0, stream_of(vec![b"12345".to_vec()]), Digester::new(Algorithm::Sha256)).await.expect("w");
    let r = store.upload_write(&u, 10, stream_of(vec![b"x".to_vec()]), Digester::new(Algorithm::Sha256)).await;
    assert!(matches!(r, Err(StorageError::Mismatch(_))), "{:?}", r.map(|(n, _)| n));
    store.upload_abort(&u).await.expect("abort");
    let r = store.upload_commit(&u, 1, &Digest::sha256(b"x")).await;
    assert!(matches!(r, Err(StorageError::UploadNotFound)));
}

async fn large_blob_streams<S: BlobStore + ?Sized>(store: &S) {
    // Several IO chunks, written in odd-sized pieces.
    let data: Vec<u8> = (0..(crate::IO_CHUNK * 3 + 12345)).map(|i| (i * 31 % 256) as u8).collect();
    let d = Digest::sha256(&data);
    let u = id("u-large");
    store.upload_create(&u).await.expect("create");
    let pieces: Vec<Vec<u8>> = data.chunks(70_001).map(<[u8]>::to_vec).collect();
    let (n, h) = store.upload_write(&u, 0, stream_of(pieces), Digester::new(Algorithm::Sha256)).await.expect("write");
    assert_eq!(h.finish(), d);
    store.upload_commit(&u, n, &d).await.expect("commit");
    assert_eq!(read_all(store, &d, None).await, data);
    let tail = ByteRange { start: data.len() as u64 - 10, len: 10 };
    assert_eq!(read_all(store, &d, Some(tail)).await, &data[data.len() - 10..]);
}

async fn delete_and_list<S: BlobStore + ?Sized>(store: &S) {
    let data = b"to be deleted".to_vec();
    let d = Digest::sha256(&data);
    let u = id("u-delete");
    store.upload_create(&u).await.expect("create");
    let (n, _) =
        store.upload_write(&u, 0, stream_of(vec![data]), Digester::new(Algorithm::Sha256)).await.expect("write");
    store.upload_commit(&u, n, &d).await.expect("commit");
    assert!(store.list().await.expect("list").contains(&d));
    assert!(store.delete(&d).await.expect("delete"));
    assert!(!store.delete(&d).await.expect("delete again"));
    assert!(!store.delete_blocking(&d).expect("blocking delete of nothing"));
    assert_eq!(store.stat(&d).await.expect("stat"), None);
    assert!(!store.list().await.expect("list").contains(&d));
}

async fn info_and_quarantine<S: BlobStore + ?Sized>(store: &S) {
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
    let u = id("u-info");
    store.upload_create(&u).await.expect("create");
    let staged = store.upload_info(&u).await.expect("upload info").expect("staged");
    assert_eq!(staged.size, 0);
    let data = b"quarantine me".to_vec();
    let d = Digest::sha256(&data);
    let (n, _) = store
        .upload_write(&u, 0, stream_of(vec![data.clone()]), Digester::new(Algorithm::Sha256))
        .await
        .expect("write");
    let staged = store.upload_info(&u).await.expect("upload info").expect("staged");
    assert_eq!(staged.size, data.len() as u64);
    assert!(staged.modified >= before, "a fresh write has a fresh time");
    store.upload_commit(&u, n, &d).await.expect("commit");
    assert_eq!(store.upload_info(&u).await.expect("upload info"), None, "committed: no staging area left");

    let info = store.blob_info(&d).await.expect("info").expect("stored");
    assert_eq!(info.size, data.len() as u64);
    assert!(
        info.modified >= before && info.modified <= std::time::SystemTime::now() + std::time::Duration::from_secs(2)
    );
    assert_eq!(store.blob_info(&Digest::sha256(b"never stored")).await.expect("info"), None);
    assert_eq!(store.blob_info_blocking(&d).expect("blocking info"), Some(info));
    assert_eq!(store.blob_info_blocking(&Digest::sha256(b"never stored")).expect("blocking info"), None);

    let place = store.quarantine(&d).await.expect("quarantine").expect("was stored");
    assert!(!place.is_empty());
    assert_eq!(store.stat(&d).await.expect("stat"), None, "a quarantined blob is no longer served");
    assert!(!store.list().await.expect("list").contains(&d));
    assert_eq!(store.quarantine(&d).await.expect("quarantine again"), None);

    let u = id("u-info-2");
    store.upload_create(&u).await.expect("create");
    let (n, _) =
        store.upload_write(&u, 0, stream_of(vec![data]), Digester::new(Algorithm::Sha256)).await.expect("write");
    store.upload_commit(&u, n, &d).await.expect("commit");
    assert!(store.delete_blocking(&d).expect("blocking delete"));
    assert_eq!(store.stat(&d).await.expect("stat"), None);
}
