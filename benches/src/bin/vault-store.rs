//! The raw store's own rate for vault records, the floor under
//! `scripts/bench.sh vault`'s HTTPS figures: TASKS concurrent writers each
//! committing one record and its audit record per transaction (what an
//! acknowledged KV write costs the store), then TASKS concurrent readers
//! of one record (with its barrier check), for SECONDS each.
//!
//! Usage: vault-store STORAGE_URL TASKS SECONDS

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ward_store::seal::MasterKey;
use ward_store::{AuditEvent, Store};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (Some(url), Some(tasks), Some(secs)) = (
        a.get(1),
        a.get(2).and_then(|v| v.parse::<u64>().ok()),
        a.get(3).and_then(|v| v.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: vault-store STORAGE_URL TASKS SECONDS");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = Store::connect(url).await.expect("store");
        store.unlock(&MasterKey::generate().expect("key"));
        let value = vec![7u8; 120];
        let n = Arc::new(AtomicU64::new(0));
        let run = |write: bool| {
            let (store, n, value) = (store.clone(), n.clone(), value.clone());
            async move {
                n.store(0, Ordering::SeqCst);
                let end = Instant::now() + Duration::from_secs(secs);
                let mut set = tokio::task::JoinSet::new();
                for t in 0..tasks {
                    let (store, n, value) = (store.clone(), n.clone(), value.clone());
                    set.spawn(async move {
                        let mut i = 0u64;
                        while Instant::now() < end {
                            if write {
                                let key = format!("bench/raw/{t}/{i}");
                                let mut tx = store.vault_begin(&key).await.expect("begin");
                                tx.put(&key, &value).await.expect("put");
                                tx.commit(&[AuditEvent::new("bench", "secret.write", &key, serde_json::json!({}))])
                                    .await
                                    .expect("commit");
                            } else {
                                store.vault_get("bench/raw/0/0").await.expect("get");
                            }
                            i += 1;
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                while set.join_next().await.is_some() {}
                n.load(Ordering::SeqCst) as f64 / secs as f64
            }
        };
        let w = run(true).await;
        let r = run(false).await;
        println!("raw store: {w:.0} durable writes/s (each with its audit record), {r:.0} reads/s ({tasks} tasks)");
    });
}
