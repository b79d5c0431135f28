//! Which OCSF class, activity and severity each event type maps to (the table in
//! docs/ocsf-rules.md): a function of the event type and the stored `data` alone.

use super::input::{Data, Member};
use crate::event::EventType;
use crate::source::KindProduct;

/// New failed logins within one poll from which a burst is Medium rather than Low.
const FAILURE_BURST: u64 = 5;

/// The OCSF classes rollcall emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    AccountChange,
    Authentication,
    UserAccessManagement,
    GroupManagement,
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
            Class::UserInventoryInfo => "User Inventory Info",
            Class::ApiActivity => "API Activity",
        }
    }

    pub(super) fn category_name(self) -> &'static str {
        match self {
            Class::AccountChange
            | Class::Authentication
            | Class::UserAccessManagement
            | Class::GroupManagement => "Identity & Access Management",
            Class::UserInventoryInfo => "Discovery",
            Class::ApiActivity => "Application Activity",
        }
    }
}

/// The class and activity (id, caption) of every event type; the activity of `audit.action` and
/// `agent.tool_called` depends on the action or tool, so their `Unknown` here is always replaced
/// (see [`api_activity`], and `record::agent`).
pub(super) fn class_of(t: EventType) -> (Class, u8, &'static str) {
    use Class::*;
    match t {
        EventType::UserObserved => (UserInventoryInfo, 2, "Collect"),
        EventType::UserCreated => (AccountChange, 1, "Create"),
        EventType::UserReactivated => (AccountChange, 2, "Enable"),
        EventType::UserPasswordChanged => (AccountChange, 3, "Password Change"),
        EventType::UserDeactivated => (AccountChange, 5, "Disable"),
        EventType::UserDeleted => (AccountChange, 6, "Delete"),
        EventType::UserLocked => (AccountChange, 9, "Lock"),
        EventType::UserUnlocked => (AccountChange, 12, "Unlock"),
        EventType::UserUpdated => (AccountChange, 99, "Other"),
        EventType::UserLogin | EventType::UserLoginFailed => (Authentication, 1, "Logon"),
        EventType::UserRoleAdded => (UserAccessManagement, 1, "Assign Privileges"),
        EventType::UserRoleRemoved => (UserAccessManagement, 2, "Revoke Privileges"),
        EventType::UserGroupAdded => (GroupManagement, 3, "Add User"),
        EventType::UserGroupRemoved => (GroupManagement, 4, "Remove User"),
        EventType::AuditAction | EventType::AgentToolCalled => (ApiActivity, 0, "Unknown"),
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
        | EventType::AuditAction => Severity::Informational,
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
}
