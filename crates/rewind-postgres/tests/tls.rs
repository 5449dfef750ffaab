//! TLS against a server of the test's own with a certificate made in the test:
//! `sslmode=require` encrypts, `verify-full` checks the chain and the host name, and
//! each refuses what it must (a wrong name, an untrusted certificate, a server
//! without TLS) with a clear error before anything is written.

mod common;

use common::cluster::Cluster;
use rewind::conformance::event;
use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition, StoreError};
use rewind_postgres::PostgresStore;
use std::path::Path;

/// A server certificate for `names`, and the cluster started with it.
fn tls_cluster(test: &str, names: &[&str]) -> Option<(Cluster, rcgen::CertifiedKey<rcgen::KeyPair>)> {
    let cluster = Cluster::create(test)?;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
    let cert = cluster.private_file("server.crt", certified.cert.pem().as_bytes());
    let key = cluster.private_file("server.key", certified.signing_key.serialize_pem().as_bytes());
    assert!(cluster.stop("fast"), "stop to restart with TLS");
    cluster.start_with(&format!("-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", cert.display(), key.display()));
    Some((cluster, certified))
}

/// The cluster's URL naming `localhost` (the name TLS checks) while connecting to 127.0.0.1.
fn url(cluster: &Cluster, params: &str) -> String {
    format!("postgres://postgres@localhost:{}/postgres?hostaddr=127.0.0.1&connect_timeout=5&{params}", cluster.port())
}

fn root_file(dir: &Path, certified: &rcgen::CertifiedKey<rcgen::KeyPair>) -> std::path::PathBuf {
    let file = dir.join("root.crt");
    std::fs::write(&file, certified.cert.pem()).expect("root file");
    file
}

async fn append_and_read(url: &str) -> Result<(), StoreError> {
    let store = PostgresStore::connect_with(common::options(url, &common::fresh_schema())).await?;
    store.append("tls", ExpectedVersion::NoStream, vec![event("Sealed", serde_json::json!({}))]).await?;
    let read = store.read_all(GlobalPosition::START, 10, &EventFilter::all()).await?;
    assert_eq!(read.len(), 1);
    Ok(())
}

/// Whether the server sees this connection as encrypted.
async fn server_says_encrypted(url: &str) -> bool {
    let model = rewind_postgres::PostgresReadModel::connect(url, "tls_check").await.expect("read model");
    let client = model.client().await.expect("client");
    let row =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.expect("pg_stat_ssl");
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_verify_full_connect_and_refuse_what_they_must() {
    let Some((cluster, certified)) = tls_cluster("tls", &["localhost"]) else { return };
    let scratch = std::env::temp_dir().join(format!("rewind-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&scratch).expect("scratch");
    let root = root_file(&scratch, &certified);

    append_and_read(&url(&cluster, "sslmode=require")).await.expect("sslmode=require");
    assert!(server_says_encrypted(&url(&cluster, "sslmode=require")).await);
    let full = url(&cluster, &format!("sslmode=verify-full&sslrootcert={}", root.display()));
    append_and_read(&full).await.expect("sslmode=verify-full with the certificate as root");
    assert!(server_says_encrypted(&full).await);
    assert!(!server_says_encrypted(&url(&cluster, "sslmode=disable")).await, "disable stays plain");

    // The certificate names localhost, not 127.0.0.1.
    let wrong_name = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=5&sslmode=verify-full&sslrootcert={}",
        cluster.port(),
        root.display()
    );
    let error = append_and_read(&wrong_name).await.expect_err("a name the certificate does not hold");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(format!("{:?}", error).contains("NotValidForName"), "the cause is named: {error:?}");
    // verify-ca checks the chain only, so the same URL passes with it.
    append_and_read(&wrong_name.replace("verify-full", "verify-ca")).await.expect("verify-ca ignores the name");

    // A certificate nobody trusts.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let other_root = scratch.join("other.crt");
    std::fs::write(&other_root, stranger.cert.pem()).expect("other root");
    let untrusted = url(&cluster, &format!("sslmode=verify-full&sslrootcert={}", other_root.display()));
    let error = append_and_read(&untrusted).await.expect_err("an untrusted certificate");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(format!("{:?}", error).contains("InvalidCertificate"), "the cause is named: {error:?}");
    std::fs::remove_dir_all(&scratch).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_server_without_tls() {
    let Some(cluster) = Cluster::create("require_refuses_a_server_without_tls") else { return };
    append_and_read(&url(&cluster, "sslmode=disable")).await.expect("plain works");
    let error = append_and_read(&url(&cluster, "sslmode=require")).await.expect_err("no TLS on the server");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let prefer = url(&cluster, "sslmode=prefer");
    append_and_read(&prefer).await.expect("prefer falls back to plain");
}
