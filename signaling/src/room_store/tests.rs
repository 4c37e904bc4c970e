use super::*;
use crate::lifecycle::Schedule;

fn room(name: &str, phase: RoomPhase) -> StoredRoom {
    StoredRoom {
        name: name.into(),
        options: RoomOptions {
            retention: Some("keep".into()),
            schedule: Some(Schedule { start_ms: 1, end_ms: 2, members: vec!["captain".into()] }),
            ..Default::default()
        },
        phase,
        created_ms: 7,
    }
}

#[tokio::test]
async fn rooms_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = RoomStore::path_in(dir.path());
    {
        let s = RoomStore::open_local(path.clone()).await.unwrap();
        assert!(s.create(&room("a", RoomPhase::Scheduled)).await.unwrap());
        s.put(&room("b", RoomPhase::Open)).await.unwrap();
        s.put(&room("a", RoomPhase::Closed)).await.unwrap();
        s.delete("b").await.unwrap();
    }
    let s = RoomStore::open_local(path).await.unwrap();
    assert!(!s.shared());
    assert_eq!(s.load().await.unwrap(), vec![room("a", RoomPhase::Closed)]);
    assert_eq!(s.get("a").await.unwrap(), Some(room("a", RoomPhase::Closed)));
    assert_eq!(s.get("b").await.unwrap(), None);
    assert_eq!(s.kept_history().await.unwrap(), HashSet::from(["a".to_string()]));
    // Sync knows what the store holds, including what was written before it opened.
    assert_eq!(s.sync(|| vec![room("a", RoomPhase::Closed)]).await.unwrap(), 0);
    s.put(&room("c", RoomPhase::Open)).await.unwrap();
    assert_eq!(s.sync(|| vec![room("a", RoomPhase::Closed)]).await.unwrap(), 1, "c deleted");
    assert_eq!(s.names().await.unwrap(), vec!["a".to_string()]);
}

#[test]
fn sync_writes_only_changes() {
    let mut sync = Sync::new(&[room("a", RoomPhase::Scheduled), room("gone", RoomPhase::Open)]);
    let now = vec![room("a", RoomPhase::Scheduled), room("new", RoomPhase::Open)];
    let writes = sync.diff(&now);
    assert_eq!(writes, vec![Write::Put(room("new", RoomPhase::Open)), Write::Delete("gone".into())]);
    // Only the put succeeded: the delete is asked again.
    sync.done(&writes[0]);
    assert_eq!(sync.diff(&now), vec![Write::Delete("gone".into())]);
    sync.done(&Write::Delete("gone".into()));
    assert!(sync.diff(&now).is_empty());
    let later = vec![room("a", RoomPhase::Open), room("new", RoomPhase::Open)];
    assert_eq!(sync.diff(&later), vec![Write::Put(room("a", RoomPhase::Open))]);
}

/// The shared store against the test PostgreSQL (`COURIER_TEST_POSTGRES_URL`, which `scripts/test.sh` sets): two
/// nodes' stores on one table. A node's sync deletes only what it wrote or restored, never the other node's rooms,
/// and creating a name the table holds is refused.
#[tokio::test]
async fn a_shared_store_deletes_only_its_own_rooms() {
    let Ok(url) = std::env::var("COURIER_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL tests: COURIER_TEST_POSTGRES_URL is not set"
        );
        eprintln!("COURIER_TEST_POSTGRES_URL not set; scripts/test.sh sets it");
        return;
    };
    let tag = crate::room::random_token(8).to_lowercase();
    let name = |n: &str| format!("rs-{tag}-{n}");
    let a = RoomStore::open_shared(&url, PostgresConfig::default()).await.unwrap();
    let b = RoomStore::open_shared(&url, PostgresConfig::default()).await.unwrap();
    assert!(a.shared());
    assert!(a.create(&room(&name("a1"), RoomPhase::Scheduled)).await.unwrap());
    assert!(b.create(&room(&name("b1"), RoomPhase::Open)).await.unwrap());
    assert!(!b.create(&room(&name("a1"), RoomPhase::Open)).await.unwrap(), "a1 is defined already");
    assert_eq!(b.get(&name("a1")).await.unwrap(), Some(room(&name("a1"), RoomPhase::Scheduled)), "untouched");
    // a's registry holds only a1 (now open): a writes that, and does not delete b1, which it never wrote.
    assert_eq!(a.sync(|| vec![room(&name("a1"), RoomPhase::Open)]).await.unwrap(), 1);
    assert_eq!(b.get(&name("b1")).await.unwrap(), Some(room(&name("b1"), RoomPhase::Open)));
    // b restores a1 (its node is gone), then a1 goes from b's registry: b deletes it.
    let a1 = b.get(&name("a1")).await.unwrap().unwrap();
    b.restored(&a1).await;
    assert_eq!(b.sync(|| vec![room(&name("b1"), RoomPhase::Open), a1.clone()]).await.unwrap(), 0);
    assert_eq!(b.sync(|| vec![room(&name("b1"), RoomPhase::Open)]).await.unwrap(), 1);
    assert_eq!(a.get(&name("a1")).await.unwrap(), None);
    let names = a.names().await.unwrap();
    assert!(names.contains(&name("b1")) && !names.contains(&name("a1")), "{names:?}");
    assert!(a.kept_history().await.unwrap().contains(&name("b1")));
    b.delete(&name("b1")).await.unwrap();
}

#[tokio::test]
async fn mutes_are_kept_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = RoomStore::path_in(dir.path());
    let mute =
        |room: &str, who: &str, until_ms: Option<u64>| Mute { room: room.into(), identity: who.into(), until_ms };
    {
        let s = RoomStore::open_local(path.clone()).await.unwrap();
        s.set_mute(&mute("r", "troll", None), true).await.unwrap();
        s.set_mute(&mute("r", "brief", Some(1_000)), true).await.unwrap();
        s.set_mute(&mute("q", "troll", Some(5_000)), true).await.unwrap();
        s.set_mute(&mute("q", "pardoned", None), true).await.unwrap();
        s.set_mute(&mute("q", "pardoned", None), false).await.unwrap();
    }
    let s = RoomStore::open_local(path).await.unwrap();
    assert_eq!(s.mutes(Some("r"), 500).await.unwrap(), vec![mute("r", "brief", Some(1_000)), mute("r", "troll", None)]);
    assert_eq!(s.mutes(None, 2_000).await.unwrap(), vec![mute("q", "troll", Some(5_000)), mute("r", "troll", None)]);
    // A forgotten room takes its mutes along.
    s.put(&room("r", RoomPhase::Open)).await.unwrap();
    s.delete("r").await.unwrap();
    assert_eq!(s.mutes(None, 2_000).await.unwrap(), vec![mute("q", "troll", Some(5_000))]);
}
