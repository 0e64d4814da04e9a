//! Test support: with `PECD_TEST_STORE_PG` set (a connection string, see
//! `store::conformance`), every store a unit test opens lives in PostgreSQL, in a schema
//! named after its directory, so that a test reopening its directory finds its data.
use std::path::Path;

use super::PgOptions;
use crate::store::{StoreBackend, StoreError, StoreOptions};

pub(crate) const ENV: &str = "PECD_TEST_STORE_PG";

pub(crate) fn backend_for(dir: &Path, mut o: StoreOptions) -> Result<StoreOptions, StoreError> {
    let Some(base) = std::env::var_os(ENV) else {
        return Ok(o);
    };
    if !matches!(o.backend, StoreBackend::Sled) {
        return Ok(o);
    }
    let base = base.to_string_lossy().into_owned();
    let digest = openssl::sha::sha256(dir.to_string_lossy().as_bytes());
    let schema = format!("t_{}", hex::encode(&digest[..12]));
    let (url, create) = (
        base.clone(),
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            client
                .batch_execute(&create)
                .await
                .map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| StoreError::Closed)?
    .map_err(|e| StoreError::Corrupt {
        what: "test schema".into(),
        detail: e,
    })?;
    o.backend = StoreBackend::Postgres(PgOptions {
        url: format!("{base} options=-csearch_path={schema}"),
        password: None,
        pool_size: 2,
        ca_file: None,
        several_writers: false,
    });
    Ok(o)
}
