//! Unit tests of the storage sections: `[blobs]` (a directory or an S3 bucket) and
//! `[store]` (sled or PostgreSQL, a standby, several writers). Their unwraps see only
//! configuration text and files written here, never peer input.

use super::*;

#[test]
fn blobs_backend_dir_by_default_s3_with_credentials_from_a_file() {
    let dir = fixture();
    assert_eq!(
        parse_in(dir.path(), MINIMAL).unwrap().blobs,
        crate::store::BlobBackend::Dir
    );
    std::fs::write(
        dir.path().join("s3.toml"),
        "access_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"wJalrXUtnFEMI-segreto\"\n",
    )
    .unwrap();
    let text = format!(
        r#"{MINIMAL}
            [blobs]
            backend = "s3"
            endpoint = "https://s3.example.it"
            bucket = "pecd-blobs"
            prefix = "provider-a/"
            credentials_file = "s3.toml"
        "#
    );
    let c = parse_in(dir.path(), &text).unwrap();
    let crate::store::BlobBackend::S3(s3) = &c.blobs else {
        panic!("{:?}", c.blobs)
    };
    assert_eq!(
        (
            s3.endpoint.as_str(),
            s3.bucket.as_str(),
            s3.region.as_str(),
            s3.prefix.as_str()
        ),
        (
            "https://s3.example.it",
            "pecd-blobs",
            "us-east-1",
            "provider-a/"
        )
    );
    assert!(s3.path_style);
    assert_eq!(s3.credentials.access_key_id, "AKIDEXAMPLE");
    // The secret never shows in a dump of the configuration.
    let dump = format!("{c:?}");
    assert!(
        dump.contains("AKIDEXAMPLE") && !dump.contains("segreto"),
        "{dump}"
    );
}

/// What the configuration says is wrong with `[section]` holding `extra`.
fn problems_in(dir: &tempfile::TempDir, section: &str, extra: &str) -> String {
    let text = format!("{MINIMAL}\n[{section}]\n{extra}\n");
    parse_in(dir.path(), &text).unwrap_err().to_string()
}

#[test]
fn blobs_problems_name_their_key_and_never_the_secret() {
    let dir = fixture();
    let problems = |extra: &str| problems_in(&dir, "blobs", extra);
    let e = problems("backend = \"nfs\"");
    assert!(e.contains("blobs.backend") && e.contains("\"nfs\""), "{e}");
    let e = problems("backend = \"s3\"\ncredentials_file = \"absent.toml\"");
    assert!(
        e.contains("blobs.endpoint") && e.contains("blobs.bucket"),
        "{e}"
    );
    assert!(
        e.contains("absent.toml") && e.contains("does not exist"),
        "{e}"
    );
    let e = problems(
        "backend = \"s3\"\nendpoint = \"s3.example.it\"\nbucket = \"b\"\nprefix = \"/x\"\ncredentials_file = \"absent.toml\"",
    );
    assert!(
        e.contains("http:// or https://") && e.contains("blobs.prefix"),
        "{e}"
    );
    // A broken credentials file: named, its content (the secret) not quoted.
    std::fs::write(
        dir.path().join("broken.toml"),
        "secret_access_key = wJalrXUtnFEMI-segreto\n",
    )
    .unwrap();
    let e = problems(
        "backend = \"s3\"\nendpoint = \"https://s3.example.it\"\nbucket = \"b\"\ncredentials_file = \"broken.toml\"",
    );
    assert!(e.contains("broken.toml") && !e.contains("segreto"), "{e}");
    std::fs::write(dir.path().join("half.toml"), "access_key_id = \"A\"\n").unwrap();
    let e = problems(
        "backend = \"s3\"\nendpoint = \"https://s3.example.it\"\nbucket = \"b\"\ncredentials_file = \"half.toml\"",
    );
    assert!(
        e.contains("must set access_key_id and secret_access_key"),
        "{e}"
    );
}

#[test]
fn store_backend_sled_by_default_postgres_with_its_password_from_a_file() {
    let dir = fixture();
    assert_eq!(
        parse_in(dir.path(), MINIMAL).unwrap().store.backend,
        crate::store::StoreBackend::Sled
    );
    std::fs::write(dir.path().join("pg-password"), "parola-segreta\n").unwrap();
    let text = format!(
        r#"{MINIMAL}
            [store]
            backend = "postgres"
            url = "postgres://pecd@db.example.it:5432/pecd?sslmode=require"
            password_file = "pg-password"
            pool_size = 4
        "#
    );
    let c = parse_in(dir.path(), &text).unwrap();
    let crate::store::StoreBackend::Postgres(pg) = &c.store.backend else {
        panic!("{:?}", c.store.backend)
    };
    assert_eq!(pg.pool_size, 4);
    assert_eq!(pg.password.as_deref(), Some("parola-segreta"));
    let dump = format!("{c:?}");
    assert!(
        dump.contains("db.example.it") && !dump.contains("parola-segreta"),
        "{dump}"
    );
}

#[test]
fn store_problems_name_their_key_and_never_the_password() {
    let dir = fixture();
    let problems = |extra: &str| problems_in(&dir, "store", extra);
    let e = problems("backend = \"mysql\"");
    assert!(
        e.contains("store.backend") && e.contains("\"mysql\""),
        "{e}"
    );
    let e = problems("backend = \"postgres\"");
    assert!(e.contains("store.url"), "{e}");
    let e = problems("backend = \"postgres\"\nurl = \"postgres://pecd:s3greta@db/pecd\"");
    assert!(
        e.contains("store.url") && e.contains("password_file") && !e.contains("s3greta"),
        "{e}"
    );
    let e = problems("backend = \"postgres\"\nurl = \"host=db\"\npool_size = 0");
    assert!(e.contains("store.pool_size"), "{e}");
}

/// The `[store]` keys of a PostgreSQL store, and an `[blobs]` section of an S3 bucket,
/// with their password and credentials files in `dir`.
const PG_STORE: &str = "backend = \"postgres\"\nurl = \"host=db\"\npassword_file = \"pg-password\"";
const S3_BLOBS: &str = "[blobs]\nbackend = \"s3\"\nendpoint = \"https://s3.example.it\"\nbucket = \"b\"\ncredentials_file = \"s3.toml\"";

/// A configuration directory with the files [`PG_STORE`] and [`S3_BLOBS`] name, and a
/// parser of `MINIMAL` plus a `[store]` section and a `[blobs]` one there.
fn with_pg_and_s3() -> (
    tempfile::TempDir,
    impl Fn(&std::path::Path, &str, &str) -> Result<Config, ConfigError>,
) {
    let dir = fixture();
    std::fs::write(dir.path().join("pg-password"), "pw\n").unwrap();
    std::fs::write(
        dir.path().join("s3.toml"),
        "access_key_id = \"A\"\nsecret_access_key = \"B\"\n",
    )
    .unwrap();
    let parse = |dir: &std::path::Path, store: &str, blobs: &str| {
        parse_in(dir, &format!("{MINIMAL}\n[store]\n{store}\n{blobs}\n"))
    };
    (dir, parse)
}

#[test]
fn a_standby_needs_postgresql_and_an_object_store() {
    let (dir, parse) = with_pg_and_s3();
    let parse = |store: &str, blobs: &str| parse(dir.path(), store, blobs);
    let pg = &format!("{PG_STORE}\nstandby = true");
    let s3 = S3_BLOBS;
    assert!(!parse_in(dir.path(), MINIMAL).unwrap().store.standby);
    assert!(parse(pg, s3).unwrap().store.standby);
    let e = parse("standby = true", s3).unwrap_err().to_string();
    assert!(e.contains("store.standby") && e.contains("postgres"), "{e}");
    let e = parse(pg, "").unwrap_err().to_string();
    assert!(e.contains("store.standby") && e.contains("s3"), "{e}");
}

#[test]
fn several_writers_need_postgresql_and_an_object_store_and_exclude_a_standby() {
    let (dir, parse) = with_pg_and_s3();
    let parse = |store: &str, blobs: &str| parse(dir.path(), store, blobs);
    let (pg, s3) = (PG_STORE, S3_BLOBS);
    assert!(!parse(pg, s3).unwrap().store.several_writers());
    let c = parse(&format!("{pg}\nseveral_writers = true"), s3).unwrap();
    assert!(c.store.several_writers());
    let e = parse("several_writers = true", s3).unwrap_err().to_string();
    assert!(
        e.contains("store.several_writers") && e.contains("postgres"),
        "{e}"
    );
    let e = parse(&format!("{pg}\nseveral_writers = true"), "")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("store.several_writers") && e.contains("s3"),
        "{e}"
    );
    let e = parse(&format!("{pg}\nseveral_writers = true\nstandby = true"), s3)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("store.several_writers") && e.contains("standby"),
        "{e}"
    );
}
