//! What a source should see of rollcall's logins, step by step: the model the generated tests
//! of refused credentials compare a simulator's count of failed logins with. A password is
//! sent only if no refusal of it is remembered (the store keeps refusals across restarts); a
//! running process keeps the password it was built with, and its session, until a refusal
//! makes it read the password file again (docs/reliability.md, Credentials that survive
//! restarts).

use std::collections::BTreeSet;

/// The model; passwords are indices into the test's list, 0 the right one.
#[derive(Debug, Default)]
pub struct Logins {
    /// The password in the file now.
    file: usize,
    /// The password the running process was built with; `None` before its first cycle.
    built: Option<usize>,
    /// The running process holds a session (a successful login), so it sends no password
    /// until it is rebuilt.
    session: bool,
    refused: BTreeSet<usize>,
    failed: u32,
}

impl Logins {
    /// The password file now holds password `p`.
    pub fn set_password(&mut self, p: usize) {
        self.file = p;
    }

    /// The process stopped (or died): the next cycle builds a new one.
    pub fn restart(&mut self) {
        self.built = None;
        self.session = false;
    }

    /// A cycle: whether the source accepts rollcall (or it already holds a session).
    pub fn cycle(&mut self) -> bool {
        let built = *self.built.get_or_insert(self.file);
        if self.refused.contains(&built) && self.file != built {
            self.built = Some(self.file);
            self.session = false;
        }
        let built = self.built.unwrap_or(self.file);
        if self.refused.contains(&built) {
            return false;
        }
        if self.session {
            return true;
        }
        if built == 0 {
            self.session = true;
            return true;
        }
        self.failed += 1;
        self.refused.insert(built);
        false
    }

    /// The failed logins the source should have counted so far: one per wrong password, ever.
    pub fn failed(&self) -> u32 {
        self.failed
    }
}
