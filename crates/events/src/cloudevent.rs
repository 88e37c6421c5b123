//! Registry events as CloudEvents 1.0 in structured JSON mode (`application/cloudevents+json`):
//! `specversion`, `id`, `source`, `type` (`io.entrepot.image.pushed`, `…pulled`, `…deleted`,
//! `io.entrepot.gc.collected`), `time` (RFC 3339, UTC), `subject` (`repo:tag`, or `repo@digest` when
//! no tag is involved), `datacontenttype` and `data` (repository, digest, mediaType, tag, size, actor —
//! absent fields are left out). Pure: builds bytes, sends nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use entrepot_registry::{EventKind, RegistryEvent};
use serde_json::{Map, Value, json};

/// The media type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// The CloudEvents `type` of each kind.
pub fn event_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Push => "io.entrepot.image.pushed",
        EventKind::Pull => "io.entrepot.image.pulled",
        EventKind::Delete => "io.entrepot.image.deleted",
        EventKind::Gc => "io.entrepot.gc.collected",
    }
}

/// `repo:tag`, or `repo@digest`.
pub fn subject(e: &RegistryEvent) -> String {
    match &e.tag {
        Some(t) => format!("{}:{t}", e.repository),
        None => format!("{}@{}", e.repository, e.digest),
    }
}

/// The event as a CloudEvent with the given `id` and `source`.
pub fn to_json(e: &RegistryEvent, id: &str, source: &str) -> Value {
    let mut data = Map::new();
    data.insert("repository".into(), json!(e.repository.as_str()));
    data.insert("digest".into(), json!(e.digest.to_string()));
    if let Some(m) = &e.media_type {
        data.insert("mediaType".into(), json!(m));
    }
    if let Some(t) = &e.tag {
        data.insert("tag".into(), json!(t.as_str()));
    }
    if let Some(s) = e.size {
        data.insert("size".into(), json!(s));
    }
    if let Some(a) = &e.actor {
        data.insert("actor".into(), json!(a));
    }
    json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": event_type(e.kind),
        "time": rfc3339(e.time),
        "subject": subject(e),
        "datacontenttype": "application/json",
        "data": Value::Object(data),
    })
}

/// The body sent to receivers: a fresh event id and the serialized CloudEvent.
pub fn encode(e: &RegistryEvent, source: &str) -> (String, Vec<u8>) {
    let id = uuid::Uuid::new_v4().to_string();
    let body = to_json(e, &id, source).to_string().into_bytes();
    (id, body)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_millis())
}

/// Gregorian date of a count of days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use entrepot_oci::{Digest, RepoName, Tag};

    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(951_827_696_789)), "2000-02-29T12:34:56.789Z");
        // 2024-12-31T23:59:59Z
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_735_689_599)), "2024-12-31T23:59:59.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_735_689_600)), "2025-01-01T00:00:00.000Z");
    }

    #[test]
    fn structured_event() {
        let digest = Digest::sha256(b"m");
        let mut e = RegistryEvent::now(EventKind::Push, RepoName::parse("team/app").expect("name"), digest.clone());
        e.time = UNIX_EPOCH;
        e.tag = Some(Tag::parse("1.0").expect("tag"));
        e.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        e.size = Some(42);
        let v = to_json(&e, "id-1", "/entrepot");
        assert_eq!(
            v,
            json!({
                "specversion": "1.0", "id": "id-1", "source": "/entrepot", "type": "io.entrepot.image.pushed",
                "time": "1970-01-01T00:00:00.000Z", "subject": "team/app:1.0", "datacontenttype": "application/json",
                "data": {"repository": "team/app", "digest": digest.to_string(),
                         "mediaType": "application/vnd.oci.image.manifest.v1+json", "tag": "1.0", "size": 42}
            })
        );
        e.tag = None;
        e.actor = Some("alice".into());
        e.kind = EventKind::Delete;
        let v = to_json(&e, "id-2", "/entrepot");
        assert_eq!(v["subject"], format!("team/app@{digest}"));
        assert_eq!(v["type"], "io.entrepot.image.deleted");
        assert_eq!(v["data"]["actor"], "alice");
        assert!(v["data"].get("tag").is_none());
        let (id, body) = encode(&e, "/x");
        let parsed: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(parsed["id"], id.as_str());
    }
}
