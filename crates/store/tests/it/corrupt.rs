//! Files that are not (valid) netprobe databases give a clear error, never a panic.

use store::{SqliteStore, Store, StoreError};

use crate::common::{exec, raw, result};

#[tokio::test]
async fn non_sqlite_file_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let garbage: Vec<u8> = b"this is a YAML config, not a database\n"
        .iter()
        .copied()
        .cycle()
        .take(8192)
        .collect();
    std::fs::write(&path, &garbage).unwrap();

    let err = SqliteStore::open(&path).await.unwrap_err();
    match &err {
        StoreError::Corrupt { path: p, detail } => {
            assert_eq!(p, &path);
            assert!(detail.contains("not a database"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    // The file was left alone for the operator to inspect.
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[tokio::test]
async fn damaged_pages_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let batch: Vec<_> = (0..2_000).map(|n| result("d", n as i64, n)).collect();
    store.append_results(&batch).await.unwrap();
    store.close().await; // checkpoints the WAL into the main file

    // Keep the 100-byte header and the schema page intact, scribble over everything after.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    assert!(bytes.len() > 4 * page, "the test needs several pages");
    for (i, b) in bytes.iter_mut().enumerate().skip(page) {
        *b = (i % 251) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();

    let outcome = match SqliteStore::open(&path).await {
        Err(e) => Err(e),
        Ok(store) => {
            let checked = store.integrity_check().await;
            store.close().await;
            checked
        }
    };
    let err = outcome.expect_err("a scribbled database must not pass");
    assert!(
        matches!(&err, StoreError::Corrupt { path: p, .. } if p == &path),
        "expected Corrupt, got {err:?}"
    );
}

#[tokio::test]
async fn directory_in_place_of_the_file_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(dir.path()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Open { path, .. } if path == dir.path()),
        "{err:?}"
    );
}

#[tokio::test]
async fn parent_that_is_a_file_is_a_create_dir_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(&file.join("sub/history.db"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::CreateDir { path, .. } if path == &file.join("sub")),
        "{err:?}"
    );
}

#[tokio::test]
async fn database_from_a_newer_netprobe_is_a_migration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    SqliteStore::open(&path).await.unwrap().close().await;
    let mut conn = raw(&path).await;
    exec(
        &mut conn,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .await;
    drop(conn);

    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Migrate { .. }), "{err:?}");
    assert!(err.to_string().contains("9999"), "{err}");
}

#[tokio::test]
async fn malformed_json_in_a_row_is_a_bad_row_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.append_results(&[result("j", 1, 1)]).await.unwrap();
    let mut conn = raw(&path).await;
    exec(&mut conn, "UPDATE results SET details = '{not json'").await;
    let err = store.results("j", None, 10).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BadRow {
                table: "results",
                ..
            }
        ),
        "{err:?}"
    );
    store.close().await;
}
