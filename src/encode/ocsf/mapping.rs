//! Which OCSF class, activity and severity each event type maps to in each OCSF version (the
//! table in docs/ocsf.md): a function of the event type, the version and the stored `data`
//! alone.

use super::input::{Data, Member};
use super::Version;
use crate::event::EventType;
use crate::source::KindProduct;

/// New failed logins within one poll from which a burst is Medium rather than Low.
const FAILURE_BURST: u64 = 5;

/// The OCSF classes rollcall emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// 1.8.0 only: 1.9.0 deprecates it for [`Class::UserManagement`].
    AccountChange,
    Authentication,
    /// 1.8.0 only: 1.9.0 deprecates it for [`Class::UserManagement`].
    UserAccessManagement,
    GroupManagement,
    /// New in 1.9.0.
    UserManagement,
    UserInventoryInfo,
    ApiActivity,
}

impl Class {
    pub(super) fn uid(self) -> u32 {
        match self {
            Class::AccountChange => 3001,
            Class::Authentication => 3002,
            Class::UserAccessManagement => 3005,
            Class::GroupManagement => 3006,
            Class::UserManagement => 3007,
            Class::UserInventoryInfo => 5003,
            Class::ApiActivity => 6003,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Class::AccountChange => "Account Change",
            Class::Authentication => "Authentication",
            Class::UserAccessManagement => "User Access Management",
            Class::GroupManagement => "Group Management",
            Class::UserManagement => "User Management",
            Class::UserInventoryInfo => "User Inventory Info",
            Class::ApiActivity => "API Activity",
        }
    }

    pub(super) fn category_name(self) -> &'static str {
        match self {
            Class::AccountChange
            | Class::Authentication
            | Class::UserAccessManagement
            | Class::GroupManagement
            | Class::UserManagement => "Identity & Access Management",
            Class::UserInventoryInfo => "Discovery",
            Class::ApiActivity => "Application Activity",
        }
    }
}

/// A class and one of its activities (id and caption).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Activity {
    pub(super) class: Class,
    pub(super) id: u8,
    pub(super) name: &'static str,
}

const fn activity(class: Class, id: u8, name: &'static str) -> Activity {
    Activity { class, id, name }
}

/// The class and activity of every event type in each version, one arm per type:
/// `[1.8.0, 1.9.0]`. The activity of `audit.action` and `agent.tool_called` depends on the
/// action or tool, so their `Unknown` here is always replaced (see [`api_activity`], and
/// `build::agent`).
pub(super) fn class_of(t: EventType, version: Version) -> Activity {
    use Class::*;
    let [v1_8_0, v1_9_0] = match t {
        EventType::UserObserved => [activity(UserInventoryInfo, 2, "Collect"); 2],
        EventType::UserCreated => [
            activity(AccountChange, 1, "Create"),
            activity(UserManagement, 1, "Create"),
        ],
        EventType::UserUpdated => [
            // 3001 has no Update activity.
            activity(AccountChange, 99, "Other"),
            activity(UserManagement, 2, "Update"),
        ],
        EventType::UserDeactivated => [
            activity(AccountChange, 5, "Disable"),
            activity(UserManagement, 5, "Disable"),
        ],
        EventType::UserReactivated => [
            activity(AccountChange, 2, "Enable"),
            activity(UserManagement, 4, "Enable"),
        ],
        EventType::UserDeleted => [
            activity(AccountChange, 6, "Delete"),
            activity(UserManagement, 3, "Delete"),
        ],
        EventType::UserPasswordChanged => [
            activity(AccountChange, 3, "Password Change"),
            activity(UserManagement, 8, "Password Change"),
        ],
        EventType::UserLocked => [
            activity(AccountChange, 9, "Lock"),
            activity(UserManagement, 6, "Lock"),
        ],
        EventType::UserUnlocked => [
            activity(AccountChange, 12, "Unlock"),
            activity(UserManagement, 7, "Unlock"),
        ],
        EventType::UserRoleAdded => [
            activity(UserAccessManagement, 1, "Assign Privileges"),
            activity(UserManagement, 16, "Assign Roles"),
        ],
        EventType::UserRoleRemoved => [
            activity(UserAccessManagement, 2, "Revoke Privileges"),
            activity(UserManagement, 17, "Remove Roles"),
        ],
        EventType::UserGroupAdded => [activity(GroupManagement, 3, "Add User"); 2],
        EventType::UserGroupRemoved => [activity(GroupManagement, 4, "Remove User"); 2],
        EventType::UserLogin | EventType::UserLoginFailed => {
            [activity(Authentication, 1, "Logon"); 2]
        }
        EventType::AuditAction | EventType::AgentToolCalled => {
            [activity(ApiActivity, 0, "Unknown"); 2]
        }
        EventType::Checkpoint | EventType::SyncCompleted => {
            unreachable!("`record` maps only the types sources emit")
        }
    };
    match version {
        Version::V1_8_0 => v1_8_0,
        Version::V1_9_0 => v1_9_0,
    }
}

/// API Activity's activity from the method part of a Superset action name
/// (`ChartRestApi.get_list` → Read); `None` when the name says nothing about it (`explore_json`,
/// `mcp.generate_chart.db_write`), which becomes 99 Other with the action as `activity_name`.
pub(super) fn api_activity(action: &str) -> Option<(u8, &'static str)> {
    let method = action.rsplit_once('.')?.1;
    match method {
        "post" => Some((1, "Create")),
        "get" | "get_list" | "info" | "export" | "related" => Some((2, "Read")),
        "put" => Some((3, "Update")),
        "delete" | "bulk_delete" => Some((4, "Delete")),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Severity {
    Informational = 1,
    Low = 2,
    Medium = 3,
    High = 4,
}

impl Severity {
    pub(super) fn caption(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
        }
    }
}

/// The severity of each event type (docs/ocsf.md, Severity): changes that grant or restore
/// access, or that cannot be undone, rank above those that only describe an account. Granting
/// one of the kind's administrator roles is the privilege escalation a SIEM alerts on, so it is
/// High rather than Low.
pub(super) fn severity(t: EventType, d: &Data<'_>, kind: &KindProduct) -> Severity {
    let admin = |m: &Option<Member<'_>>| {
        m.as_ref()
            .is_some_and(|m| kind.admin_roles.contains(&m.name.as_ref()))
    };
    match t {
        EventType::UserObserved
        | EventType::UserUpdated
        | EventType::UserRoleRemoved
        | EventType::UserGroupRemoved
        | EventType::UserLogin
        | EventType::AuditAction
        | EventType::Checkpoint
        | EventType::SyncCompleted => Severity::Informational,
        // A tool that may write (or one rollcall does not know) is worth a record.
        EventType::AgentToolCalled if d.can_write == Some(false) => Severity::Informational,
        EventType::AgentToolCalled => Severity::Low,
        EventType::UserRoleAdded if admin(&d.role) => Severity::High,
        EventType::UserGroupAdded if admin(&d.group) => Severity::High,
        EventType::UserLoginFailed if d.new_failures.unwrap_or(0) >= FAILURE_BURST => {
            Severity::Medium
        }
        EventType::UserCreated
        | EventType::UserDeactivated
        | EventType::UserRoleAdded
        | EventType::UserGroupAdded
        | EventType::UserLoginFailed
        | EventType::UserUnlocked
        | EventType::UserPasswordChanged => Severity::Low,
        EventType::UserReactivated | EventType::UserDeleted => Severity::Medium,
        EventType::UserLocked => Severity::High,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn api_activity_comes_from_the_method_part_of_the_action() {
        assert_eq!(api_activity("ChartRestApi.get_list"), Some((2, "Read")));
        assert_eq!(api_activity("DashboardRestApi.post"), Some((1, "Create")));
        assert_eq!(api_activity("DashboardRestApi.put"), Some((3, "Update")));
        assert_eq!(
            api_activity("ChartRestApi.bulk_delete"),
            Some((4, "Delete"))
        );
        assert_eq!(api_activity("mcp.generate_chart.db_write"), None);
        assert_eq!(api_activity("explore_json"), None);
    }

    #[test]
    fn no_event_type_maps_to_a_class_ocsf_1_9_0_deprecates() {
        // A checkpoint has no class: no OCSF record is made of it.
        for t in EventType::ALL.into_iter().filter(|t| t.from_source()) {
            let class = class_of(t, Version::V1_9_0).class;
            assert!(
                !matches!(class, Class::AccountChange | Class::UserAccessManagement),
                "{t:?} is {class:?}"
            );
        }
    }
}
