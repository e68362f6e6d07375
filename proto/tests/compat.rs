//! Messages captured from earlier builds must keep parsing, and today's output must stay stable.

use aegis_proto::v1;

const V1_EVENT: &str = include_str!("fixtures/event_v1.json");

#[test]
fn v1_event_round_trips_byte_for_byte() {
    let e: v1::Event = serde_json::from_str(V1_EVENT).unwrap();
    assert_eq!(e.schema, v1::EVENT_SCHEMA);
    assert_eq!(e.track_id, 7);
    assert_eq!(serde_json::to_string(&e).unwrap(), V1_EVENT.trim());
}

#[test]
fn v1_readers_ignore_fields_added_later_and_accept_missing_optionals() {
    let newer = V1_EVENT.trim().replacen('{', "{\"zone\":\"gate\",", 1);
    let e: v1::Event = serde_json::from_str(&newer).unwrap();
    assert_eq!(e.label, "person");
    let without_snapshot = V1_EVENT.replace(
        ",\"snapshot\":\"urn:aegis:blob:01938f6e-7a5b-7c3d-9e1f-0a1b2c3d4e60\"",
        "",
    );
    assert!(serde_json::from_str::<v1::Event>(&without_snapshot)
        .unwrap()
        .snapshot
        .is_none());
}

#[test]
fn v1_rule_events_round_trip_and_older_events_have_no_rule() {
    let text = include_str!("fixtures/event_v1_rule.json");
    let e: v1::Event = serde_json::from_str(text).unwrap();
    let rule = e.rule.as_ref().expect("a rule event names its rule");
    assert_eq!(rule.name, "inbound");
    assert_eq!(rule.detail["direction"], "a_to_b");
    assert_eq!(serde_json::to_string(&e).unwrap(), text.trim());
    let old: v1::Event = serde_json::from_str(V1_EVENT).unwrap();
    assert!(old.rule.is_none());
}
