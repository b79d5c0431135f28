//! What an OCSF record is read from: the stored event's `data` (its shape per type is in
//! schemas/), borrowed from the stored bytes where JSON allows. Reading only: nothing here
//! decides what a record says.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The union of every type's `data`: each type has a subset, checked where it is needed.
#[derive(Deserialize)]
pub(super) struct Data<'a> {
    #[serde(borrow, default)]
    pub(super) user: Option<Account<'a>>,
    #[serde(borrow, default)]
    pub(super) before: Option<Account<'a>>,
    #[serde(borrow, default)]
    pub(super) changes: Option<Vec<Change<'a>>>,
    #[serde(borrow, default)]
    pub(super) note: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) role: Option<Member<'a>>,
    #[serde(borrow, default)]
    pub(super) group: Option<Member<'a>>,
    #[serde(default)]
    pub(super) fail_login_count: Option<u64>,
    #[serde(default)]
    pub(super) new_failures: Option<u64>,
    #[serde(default)]
    pub(super) wrong_time: Option<u64>,
    #[serde(borrow, default)]
    pub(super) locked_at: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) permanent: Option<bool>,
    #[serde(borrow, default)]
    pub(super) locked_until: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) dttm: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) dashboard_id: Option<i64>,
    #[serde(default)]
    pub(super) slice_id: Option<i64>,
    #[serde(default)]
    pub(super) duration_ms: Option<i64>,
    #[serde(borrow, default)]
    pub(super) referrer: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) details: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) tool: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) logged_success: Option<bool>,
    #[serde(default)]
    pub(super) can_write: Option<bool>,
    #[serde(borrow, default)]
    pub(super) agent_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) started_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) finished_at: Option<Cow<'a, str>>,
}

/// A user record of either shape (Superset's has `id`, Kylin's `uuid`), or the action log's
/// short one; only what OCSF has attributes for.
#[derive(Deserialize)]
pub(super) struct Account<'a> {
    #[serde(default)]
    pub(super) id: Option<u64>,
    #[serde(borrow, default)]
    pub(super) uuid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) first_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) last_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) email: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) last_login: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) changed_on: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) created_by: Option<u64>,
    #[serde(default)]
    pub(super) changed_by: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct Change<'a> {
    #[serde(borrow)]
    pub(super) field: Cow<'a, str>,
}

/// The changed fields, comma-separated, for the record's `message`.
pub(super) struct Fields<'c, 'a>(pub(super) &'c [Change<'a>]);

impl fmt::Display for Fields<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, change) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&change.field)?;
        }
        Ok(())
    }
}

/// A role or group: Superset numbers them, Kylin names them.
#[derive(Deserialize)]
pub(super) struct Member<'a> {
    pub(super) id: MemberId,
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum MemberId {
    Number(u64),
    Name(String),
}

/// A role's or group's id as OCSF's string `uid`.
impl Serialize for MemberId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MemberId::Number(n) => Uid::Number(*n).serialize(s),
            MemberId::Name(name) => s.serialize_str(name),
        }
    }
}

/// A string `uid` that may be a number in the stored event: written as a string straight into
/// the body, with no string allocated per record.
#[derive(Clone, Copy)]
pub(super) enum Uid<'r> {
    Number(u64),
    Signed(i64),
    Text(&'r str),
}

impl fmt::Display for Uid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uid::Number(n) => n.fmt(f),
            Uid::Signed(n) => n.fmt(f),
            Uid::Text(text) => f.write_str(text),
        }
    }
}

impl Serialize for Uid<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Uid::Number(n) => s.collect_str(n),
            Uid::Signed(n) => s.collect_str(n),
            Uid::Text(text) => s.serialize_str(text),
        }
    }
}

/// `full_name`: the first and last names, trimmed, those not empty, joined by a space.
pub(super) struct FullName<'r>([Option<&'r str>; 2]);

impl<'r> FullName<'r> {
    pub(super) fn of(first: Option<&'r str>, last: Option<&'r str>) -> Option<FullName<'r>> {
        let part = |p: Option<&'r str>| p.map(str::trim).filter(|p| !p.is_empty());
        let parts = [part(first), part(last)];
        parts.iter().any(Option::is_some).then_some(FullName(parts))
    }
}

impl fmt::Display for FullName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [Some(first), Some(last)] => write!(f, "{first} {last}"),
            [Some(one), None] | [None, Some(one)] => f.write_str(one),
            [None, None] => Ok(()),
        }
    }
}

impl Serialize for FullName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The part of the action log's `json` column OCSF has an attribute for.
#[derive(Deserialize)]
pub(super) struct Details<'a> {
    #[serde(borrow)]
    pub(super) path: Option<Cow<'a, str>>,
}
