//! Configs for the tests that fill a store themselves and drive its sinks, replay or
//! retention: no source of theirs is ever polled.

use std::path::Path;

/// A config whose store is `<dir>/data` (`store_keys` added to `[store]`), whose one source,
/// the Superset `test`, is never reached (nothing listens on port 1, and its password variable
/// is unset, so polling it would fail at once), and with `sinks` (`[[sinks]]` tables) after it.
pub fn offline(dir: &Path, store_keys: &str, sinks: &str) -> String {
    format!(
        r#"[store]
path = {store:?}
{store_keys}

[[sources]]
kind = "superset"
name = "test"
url = "http://127.0.0.1:1"
username = "admin"
password_env = "UNUSED"

{sinks}"#,
        store = dir.join("data").display().to_string(),
    )
}
