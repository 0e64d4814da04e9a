//! pecd on the fjall metadata backend (`[store] backend = "fjall"`): a provider's store
//! moved from sled with `pecd store migrate`, the whole PEC flow on it through the real
//! server, the trace log continuing from where sled left it and verifying, and the same
//! messages read back after a restart; then back to sled, the bodies fjall kept in its
//! keyspace written out as files.

mod common;

use common::server::{
    Server, digests, local_blob_files, migrate, migrate_refused, one_pec_message, second_message_on,
};

/// A provider whose two mailboxes (`mittente@`, `destinatario@`, password "pw") were made
/// on sled, with IMAPS; its configuration as made, and the same on fjall in a directory
/// of its own (the trace log's sealed segments are kept beside the database, one
/// engine's per directory).
struct Provider {
    s: Server,
    a: String,
    b: String,
    on_sled: String,
    fjall_dir: std::path::PathBuf,
    on_fjall: String,
}

fn provider(domain: &str) -> Provider {
    let (a, b) = (
        format!("mittente@{domain}"),
        format!("destinatario@{domain}"),
    );
    let s = Server::new(domain, &[(a.as_str(), "pw"), (b.as_str(), "pw")]);
    s.enable(&["imaps"]);
    let on_sled = std::fs::read_to_string(s.config()).unwrap();
    let fjall_dir = s.dir.path().join("data-fjall");
    let on_fjall = on_sled
        .replace("[store]\n", "[store]\nbackend = \"fjall\"\n")
        .replace(
            "dir = \"data\"\n",
            &format!("dir = {:?}\n", fjall_dir.display().to_string()),
        );
    assert!(on_fjall.contains("backend = \"fjall\"") && !on_fjall.contains("dir = \"data\""));
    Provider {
        s,
        a,
        b,
        on_sled,
        fjall_dir,
        on_fjall,
    }
}

#[test]
fn a_provider_moves_to_fjall_and_runs_on_it() {
    let Provider {
        mut s,
        a,
        b,
        on_sled,
        fjall_dir,
        on_fjall,
    } = provider("pec.trasloco-fjall.test");
    let (sled_config, fjall_config) = (
        s.dir.path().join("pecd-sled.toml"),
        s.dir.path().join("pecd-fjall.toml"),
    );
    std::fs::write(&sled_config, &on_sled).unwrap();
    std::fs::write(&fjall_config, &on_fjall).unwrap();
    let digests = |s: &Server| digests(s, &[&a, &b]);

    // On sled: one PEC message, its receipts.
    let (on_sled_digests, sled_export) = one_pec_message(&mut s, &a, &b, (2, 1), None);

    // Into the same directory: refused, naming why.
    let same_dir = s.dir.path().join("pecd-same-dir.toml");
    std::fs::write(
        &same_dir,
        on_sled.replace("[store]\n", "[store]\nbackend = \"fjall\"\n"),
    )
    .unwrap();
    let err = migrate_refused(&sled_config, &same_dir);
    assert!(err.contains("another store.dir"), "{err}");

    // The setting changed without moving the store: refused, not an empty store.
    let out = common::server::pecd(&["mailbox", "list", "--config", same_dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds a sled database"), "{err}");

    // sled → fjall: every tree compared, the chain verified on the target, the bodies
    // copied to the new directory.
    let r = migrate(&sled_config, &fjall_config, &[]);
    assert!(r["metadata"]["entries"].as_u64().unwrap() > 20, "{r}");
    assert!(r["trace_records_verified"].as_u64().unwrap() >= 5, "{r}");
    assert!(
        fjall_dir.join("fjall").is_dir(),
        "the metadata is in fjall's directory"
    );
    assert!(!fjall_dir.join("db").exists(), "and not in a sled database");

    // The provider on fjall: the same mailboxes, a second message end to end, and the
    // chain continued.
    let (on_fjall_digests, _) = second_message_on(
        &mut s,
        &fjall_config,
        (&a, &b),
        (&on_sled_digests, &sled_export),
        "fjall",
    );
    // After a restart, the same.
    s.start();
    assert_eq!(
        digests(&s),
        on_fjall_digests,
        "the same messages after a restart"
    );
    s.stop();
    // The second message's bodies are in fjall's keyspace: no file was made for them.
    let on_fjall_files = local_blob_files(&fjall_dir);
    let r = migrate(&fjall_config, &sled_config, &["--replace"]);
    assert!(r["copied"].as_u64().unwrap() > 0, "{r}");
    assert!(
        on_fjall_files < local_blob_files(&s.data_dir()),
        "bodies kept in the keyspace became files on sled: {on_fjall_files} files on fjall, {r}"
    );

    // And back on sled: the same messages, read from the files the bodies became.
    std::fs::copy(&sled_config, s.config()).unwrap();
    s.start();
    assert_eq!(
        digests(&s),
        on_fjall_digests,
        "the same messages, back on sled"
    );
    s.stop();
}

/// fjall → PostgreSQL with the same `store.dir` and `[blobs]`: the bodies fjall kept in
/// its keyspace are written out as files by the migration (PostgreSQL does not read
/// fjall's keyspace), and the messages read back the same on PostgreSQL.
#[test]
fn a_provider_on_fjall_moves_to_postgresql_with_the_bodies_of_its_keyspace() {
    let Some(pg) = common::postgres::cluster("fjall to PostgreSQL") else {
        return;
    };
    let Provider {
        mut s,
        a,
        b,
        on_sled,
        fjall_dir,
        on_fjall,
    } = provider("pec.da-fjall.test");
    // PostgreSQL with the same store.dir, so the same `[blobs]`.
    let on_pg = common::postgres::on_postgres(&on_fjall, &pg, &fjall_dir, "dafjall");
    let (sled_config, fjall_config, pg_config) = (
        s.dir.path().join("pecd-sled.toml"),
        s.dir.path().join("pecd-fjall.toml"),
        s.dir.path().join("pecd-pg.toml"),
    );
    std::fs::write(&sled_config, &on_sled).unwrap();
    std::fs::write(&fjall_config, &on_fjall).unwrap();
    std::fs::write(&pg_config, &on_pg).unwrap();
    migrate(&sled_config, &fjall_config, &[]);
    std::fs::copy(&fjall_config, s.config()).unwrap();

    let (on_fjall_digests, _) = one_pec_message(&mut s, &a, &b, (2, 1), None);
    assert_eq!(
        local_blob_files(&fjall_dir),
        0,
        "on fjall, the message's bodies are kept in the keyspace"
    );
    let r = migrate(&fjall_config, &pg_config, &[]);
    assert!(r["metadata"]["entries"].as_u64().unwrap() > 20, "{r}");
    let copied = r["copied"].as_u64().unwrap();
    assert!(copied >= 3, "{r}");
    assert_eq!(local_blob_files(&fjall_dir) as u64, copied, "{r}");

    std::fs::copy(&pg_config, s.config()).unwrap();
    s.start();
    assert_eq!(
        digests(&s, &[&a, &b]),
        on_fjall_digests,
        "the same messages, from PostgreSQL and the files"
    );
    s.stop();
}
