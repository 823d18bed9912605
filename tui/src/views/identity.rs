//! Identity administration (Keystone v3, admins): the projects, users and role assignment
//! views (`idprojects`, `users`, `assignments`) share these helpers. Projects and users can be
//! disabled/enabled (`e`) and deleted; an assignment is revoked by deleting it.

use crate::worker::DeleteCall;

/// A call on the identity service's v3 API.
pub fn identity(path: String) -> DeleteCall {
    DeleteCall { service: "identity", version: Some("v3"), path }
}

pub fn yes(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}
