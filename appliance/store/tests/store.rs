use aegis_domain::{BBox, BlobUrn, Event, EventKind};
use aegis_store::{EventQuery, Limits, StagedBlob, Store};
use aegis_testkit::{fill_disk, SmallDisk};

fn stage(store: &Store, bytes: &[u8]) -> StagedBlob {
    store
        .stage_blob(BlobUrn::new(uuid::Uuid::now_v7()), bytes, "image/jpeg")
        .unwrap()
}

fn event(n: i64, stream: &str, label: &str, snapshot: Option<aegis_domain::BlobUrn>) -> Event {
    Event {
        id: uuid::Uuid::now_v7().to_string(),
        kind: EventKind::New,
        stream: stream.into(),
        track_id: n as u64,
        label: label.into(),
        score: 0.8,
        bbox: BBox::new(1.0, 2.0, 3.0, 4.0),
        frame_size: (768, 576),
        started_at_ms: 1000 + n,
        at_ms: 1000 + n,
        snapshot,
        rule: None,
    }
}

#[test]
fn events_outbox_and_blobs_are_written_together_and_paged_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blob = stage(&store, b"jpeg bytes");
    let e0 = event(0, "a", "person", Some(blob.urn.clone()));
    let seqs = store.commit(std::slice::from_ref(&e0)).unwrap();
    store
        .attach_blobs(std::slice::from_ref(&blob), e0.at_ms)
        .unwrap();
    for n in 1..10 {
        store
            .commit(&[event(n, if n % 2 == 0 { "a" } else { "b" }, "car", None)])
            .unwrap();
    }
    assert_eq!(store.outbox_backlog().unwrap(), 10);

    let page1 = store
        .events(&EventQuery {
            limit: 4,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        page1.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [10, 9, 8, 7]
    );
    let page2 = store
        .events(&EventQuery {
            limit: 4,
            before: Some(7),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        page2.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [6, 5, 4, 3]
    );
    let only_a = store
        .events(&EventQuery {
            limit: 100,
            stream: Some("a".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(only_a.len(), 5);
    let people = store
        .events(&EventQuery {
            limit: 100,
            label: Some("person".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        people,
        vec![aegis_store::StoredEvent {
            seq: seqs[0],
            event: e0
        }]
    );
    let after = store
        .events(&EventQuery {
            limit: 100,
            after: Some(8),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [9, 10]);

    let info = store.blob(&blob.urn).unwrap().unwrap();
    assert_eq!(std::fs::read(&info.path).unwrap(), b"jpeg bytes");
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn objects_that_began_and_never_ended_are_found_by_their_latest_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let of = |kind, track: i64, started: i64, at: i64| Event {
        kind,
        started_at_ms: started,
        at_ms: at,
        ..event(track, "door", "person", None)
    };
    store
        .commit(&[
            of(EventKind::New, 1, 100, 100),
            of(EventKind::New, 2, 100, 100),
            of(EventKind::Update, 1, 100, 150),
            of(EventKind::End, 2, 100, 200),
            // Track 1 again, in a later run: another object.
            of(EventKind::New, 1, 900, 900),
            // A rule event is not an object's.
            of(EventKind::Rule, 3, 950, 950),
        ])
        .unwrap();
    let open = store.open_objects().unwrap();
    let seen: Vec<_> = open
        .iter()
        .map(|e| (e.kind, e.track_id, e.started_at_ms, e.at_ms))
        .collect();
    assert_eq!(
        seen,
        [
            (EventKind::Update, 1, 100, 150),
            (EventKind::New, 1, 900, 900)
        ]
    );
}

#[test]
fn a_duplicate_event_id_rolls_back_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let e = event(1, "a", "person", None);
    store.commit(std::slice::from_ref(&e)).unwrap();
    assert!(store.commit(&[event(2, "a", "person", None), e]).is_err());
    assert_eq!(
        store
            .events(&EventQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.outbox_backlog().unwrap(), 1);
}

#[test]
fn check_finds_and_repairs_orphans_missing_and_damaged_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = stage(&store, b"good");
    let gone = stage(&store, b"gone");
    let torn = stage(&store, b"torn");
    let orphan = stage(&store, b"orphan: crashed before its row");
    let never_landed = BlobUrn::new(uuid::Uuid::now_v7());
    let events = [
        event(1, "a", "x", Some(good.urn.clone())),
        event(2, "a", "x", Some(gone.urn.clone())),
        event(3, "a", "x", Some(torn.urn.clone())),
        event(4, "a", "x", Some(never_landed.clone())),
    ];
    store.commit(&events).unwrap();
    store
        .attach_blobs(&[good.clone(), gone.clone(), torn.clone()], 0)
        .unwrap();
    std::fs::remove_file(store.blob(&gone.urn).unwrap().unwrap().path).unwrap();
    std::fs::write(store.blob(&torn.urn).unwrap().unwrap().path, b"to").unwrap();

    let report = store.check(false).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.missing_blobs, [gone.urn.to_string()]);
    assert_eq!(report.corrupt_blobs, [torn.urn.to_string()]);
    assert_eq!(report.lost_snapshots, [never_landed.to_string()]);
    assert_eq!(report.orphan_files.len(), 1);
    assert!(report.orphan_files[0]
        .to_string_lossy()
        .contains(orphan.urn.id()));

    let repaired = store.check(true).unwrap();
    assert!(repaired.is_clean());
    let after = store.check(false).unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert_eq!(after.events, 4, "events are never deleted");
    assert_eq!(after.blobs_checked, 1);
    let kept = store
        .events(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        kept.iter().filter(|e| e.event.snapshot.is_some()).count(),
        1
    );
}

#[test]
fn reopening_keeps_everything_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path())
        .unwrap()
        .commit(&[event(1, "a", "x", None)])
        .unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_seq().unwrap(), 1);
    let busy = Store::open(dir.path())
        .err()
        .expect("one process at a time");
    assert!(busy.to_string().contains("in use"), "{busy}");
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("aegis.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn a_damaged_database_is_refused_by_name_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aegis.db");
    Store::open(dir.path())
        .unwrap()
        .commit(&[event(1, "a", "x", None)])
        .unwrap();
    let whole = std::fs::read(&db).unwrap();
    for damage in [whole[..whole.len() / 2].to_vec(), vec![0x5a; 100_000]] {
        std::fs::write(&db, &damage).unwrap();
        let err = Store::open(dir.path()).err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&db.display().to_string()) && msg.contains("damaged"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&db).unwrap(), damage, "left as it is");
    }
}

#[test]
fn a_disk_short_of_free_space_gets_it_back_from_the_oldest_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let _disk = SmallDisk::mount(dir.path(), 16);
    let store = Store::open(dir.path()).unwrap();
    let floor = Limits {
        min_free_bytes: Some(1_000_000),
        ..Limits::default()
    };
    // 40 events, each with a 100 kB snapshot, then a disk filled by something else but 200 kB.
    let mut blobs = Vec::new();
    for n in 1..=40 {
        let blob = stage(&store, &vec![n as u8; 100_000]);
        store
            .commit(&[event(n, "a", "person", Some(blob.urn.clone()))])
            .unwrap();
        blobs.push(blob);
    }
    store.attach_blobs(&blobs, 0).unwrap();
    fill_disk(&dir.path().join("ballast"), 200_000);
    assert!(store.disk_free().unwrap() < 1_000_000);

    let r = store.prune(floor).unwrap();
    assert!(store.disk_free().unwrap() >= 1_000_000);
    // About 800 kB short: the oldest 8 or so go, with their snapshots, and no more than needed.
    assert!((8..=12).contains(&r.events), "{r:?}");
    assert_eq!((r.blobs, r.blob_bytes), (r.events, r.events * 100_000));
    let left: Vec<u64> = store
        .events(&EventQuery {
            limit: 100,
            ..EventQuery::default()
        })
        .unwrap()
        .iter()
        .map(|e| e.event.track_id)
        .collect();
    assert_eq!(left.len() as u64, 40 - r.events);
    assert!(left.iter().all(|&n| n > r.events), "oldest first: {left:?}");

    // With the snapshots gone, deleting events would give the disk nothing: none are deleted.
    std::fs::remove_file(dir.path().join("ballast")).unwrap();
    let store_dir = dir.path().join("events-only");
    let events_only = Store::open(&store_dir).unwrap();
    events_only
        .commit(
            &(1..=20)
                .map(|n| event(n, "a", "person", None))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    fill_disk(&dir.path().join("ballast"), 200_000);
    assert_eq!(events_only.prune(floor).unwrap().events, 0);
}

fn outbox_payloads(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let conn = rusqlite::Connection::open(dir.join("aegis.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT payload FROM outbox ORDER BY event_seq")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|p| serde_json::from_str(&p.unwrap()).unwrap())
        .collect()
}

#[test]
fn snapshots_that_never_land_are_unlinked_and_complete_ones_adopted_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let landed = stage(&store, b"landed");
    let failed = BlobUrn::new(uuid::Uuid::now_v7());
    let torn = stage(&store, b"torn: crashed before the rename");
    let renamed = stage(&store, b"crashed after the rename, before the row");
    let torn_path = dir.path().join("blobs").join(format!(
        "{}/{}.jpg",
        &torn.urn.id()[torn.urn.id().len() - 2..],
        torn.urn.id()
    ));
    let torn_tmp = torn_path.with_file_name(format!(".{}.jpg.tmp", torn.urn.id()));
    std::fs::rename(&torn_path, &torn_tmp).unwrap();
    std::fs::write(&torn_tmp, b"tor").unwrap();
    store
        .commit(&[
            event(1, "a", "x", Some(landed.urn.clone())),
            event(2, "a", "x", Some(failed.clone())),
            event(3, "a", "x", Some(failed.clone())),
            event(4, "a", "x", Some(torn.urn.clone())),
            event(5, "a", "x", Some(renamed.urn.clone())),
        ])
        .unwrap();
    store
        .attach_blobs(std::slice::from_ref(&landed), 0)
        .unwrap();
    // The snapshot thread reports a failure; then the process dies.
    store
        .forget_snapshots(std::slice::from_ref(&failed))
        .unwrap();
    // The object's next event would refer to its snapshot, which is lost: it goes without.
    let seq = store
        .commit(&[event(6, "a", "x", Some(failed.clone()))])
        .unwrap()[0];
    let later = store
        .events(&EventQuery {
            after: Some(seq - 1),
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(later[0].event.snapshot, None);
    let report = store.check(false).unwrap();
    let mut lost = vec![torn.urn.to_string(), renamed.urn.to_string()];
    lost.sort();
    assert_eq!(report.lost_snapshots, lost);
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.recover_snapshots().unwrap(),
        aegis_store::SnapshotRecovery {
            adopted: 1,
            lost: 1
        }
    );
    assert!(!torn_tmp.exists(), "the torn temporary file is removed");
    let report = store.check(false).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let info = store.blob(&renamed.urn).unwrap().expect("adopted");
    assert_eq!(info.sha256, renamed.sha256);

    let snapshots: Vec<_> = store
        .events(&EventQuery {
            after: Some(0),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|e| e.event.snapshot)
        .collect();
    let kept = |b: &StagedBlob| Some(b.urn.clone());
    assert_eq!(
        snapshots,
        [kept(&landed), None, None, None, kept(&renamed), None]
    );
    let wire: Vec<_> = outbox_payloads(dir.path())
        .iter()
        .map(|p| p.get("snapshot").and_then(|s| s.as_str()).map(String::from))
        .collect();
    let urn = |b: &StagedBlob| Some(b.urn.to_string());
    assert_eq!(wire, [urn(&landed), None, None, None, urn(&renamed), None]);
}

#[test]
fn retention_deletes_oldest_first_keeps_shared_snapshots_and_counts_unsynced_drops() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Ten events at t = 1001..1010; events 1-3 share one snapshot, 4-10 have their own.
    let shared = stage(&store, &[1u8; 10_000]);
    let mut blobs = vec![shared.clone()];
    let mut events = Vec::new();
    for n in 1..=10 {
        let snap = if n <= 3 {
            shared.urn.clone()
        } else {
            let b = stage(&store, &[n as u8; 10_000]);
            let urn = b.urn.clone();
            blobs.push(b);
            urn
        };
        events.push(event(n, "a", "person", Some(snap)));
    }
    store.commit(&events).unwrap();
    store.attach_blobs(&blobs, 0).unwrap();
    // The core acknowledged the first two events (the sync path will do this).
    let conn = rusqlite::Connection::open(dir.path().join("aegis.db")).unwrap();
    conn.execute("UPDATE outbox SET sent_ms = 1 WHERE event_seq <= 2", [])
        .unwrap();
    drop(conn);
    let path_of = |b: &StagedBlob| store.blob(&b.urn).unwrap().unwrap().path;
    let shared_file = path_of(&shared);
    let fourth_file = path_of(&blobs[1]);

    // By age: events before t=1003 go; their shared snapshot stays, event 3 still names it.
    let r = store
        .prune(Limits {
            older_than_ms: Some(1003),
            ..Limits::default()
        })
        .unwrap();
    assert_eq!((r.events, r.blobs, r.unsynced), (2, 0, 0));
    assert!(shared_file.exists());

    // By size: the oldest go until the store fits. Each blob is 10 kB.
    let before = store.size().unwrap();
    let r = store
        .prune(Limits {
            max_bytes: Some(before - 15_000),
            ..Limits::default()
        })
        .unwrap();
    assert!(store.size().unwrap() <= before - 15_000);
    // Just enough: events 3 and 4 (the shared snapshot goes with 3, the last to name it).
    assert_eq!((r.events, r.blobs, r.blob_bytes), (2, 2, 20_000), "{r:?}");
    assert!(
        !shared_file.exists(),
        "gone with the last event that named it"
    );
    assert!(!fourth_file.exists());
    assert_eq!(r.unsynced, r.events, "none of these had reached the core");
    assert_eq!(store.dropped_unsynced().unwrap(), r.unsynced);

    // What is left is consistent, and the count survives a restart.
    let left = store
        .events(&EventQuery {
            after: Some(0),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(left.len() as u64, 8 - r.events);
    assert!(store.check(false).unwrap().is_clean());
    drop(store);
    assert_eq!(
        Store::open(dir.path()).unwrap().dropped_unsynced().unwrap(),
        r.unsynced
    );
}
