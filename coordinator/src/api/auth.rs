//! The one bearer-token check. Workers call the `Coordinator` service with the worker token;
//! people and tools call `Admin` and the dashboard's writes with the admin token. A
//! coordinator started without an admin token refuses every admin call. Tokens are compared
//! in constant time.
//!
//! [`check`] decides; [`Bearer`] applies it to gRPC calls and the dashboard maps the same
//! [`Refusal`] to HTTP.

use std::sync::Arc;
use tonic::{Request, Status};

/// Who may call what.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub worker: String,
    pub admin: Option<String>,
}

/// What a caller proved to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Admin,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization: Bearer ...` header.
    Missing(Role),
    /// A token that is neither.
    Wrong(Role),
    /// The worker token on an admin call.
    WorkerToken,
    /// An admin call to a coordinator started without an admin token.
    NoAdminToken,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Missing(Role::Worker) => "missing worker token (authorization: Bearer ...)",
            Refusal::Missing(Role::Admin) => {
                "missing admin token (authorization: Bearer ...); this call needs the admin role"
            }
            Refusal::Wrong(Role::Worker) => "wrong worker token",
            Refusal::Wrong(Role::Admin) => "wrong admin token (this call needs the admin role)",
            Refusal::WorkerToken => {
                "this call needs the admin role: a worker token was given (use the admin token)"
            }
            Refusal::NoAdminToken => {
                "this coordinator has no admin token: start it with $SWEEP_ADMIN_TOKEN or --admin-token-file"
            }
        })
    }
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    crate::sched::core::constant_time_eq(a, b)
}

/// The token of an `authorization` header's value (`Bearer <token>`).
pub fn bearer(header: Option<&str>) -> Option<&str> {
    header.and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether `given` may make a call that needs `needs`; returns the caller's role.
pub fn check(tokens: &Tokens, given: Option<&str>, needs: Role) -> Result<Role, Refusal> {
    let same = |t: &str, secret: &str| constant_time_eq(t.as_bytes(), secret.as_bytes());
    match needs {
        Role::Worker => match given {
            Some(t) if same(t, &tokens.worker) => Ok(Role::Worker),
            Some(_) => Err(Refusal::Wrong(Role::Worker)),
            None => Err(Refusal::Missing(Role::Worker)),
        },
        Role::Admin => {
            let Some(admin) = &tokens.admin else {
                return Err(Refusal::NoAdminToken);
            };
            match given {
                Some(t) if same(t, admin) => Ok(Role::Admin),
                Some(t) if same(t, &tokens.worker) => Err(Refusal::WorkerToken),
                Some(_) => Err(Refusal::Wrong(Role::Admin)),
                None => Err(Refusal::Missing(Role::Admin)),
            }
        }
    }
}

/// The gRPC interceptor: every call needs `needs`.
#[derive(Clone)]
pub struct Bearer {
    tokens: Arc<Tokens>,
    needs: Role,
}

impl Bearer {
    pub fn new(tokens: &Tokens, needs: Role) -> Bearer {
        Bearer {
            tokens: Arc::new(tokens.clone()),
            needs,
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = bearer(
            req.metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
        );
        match check(&self.tokens, given, self.needs) {
            Ok(_) => Ok(req),
            Err(r @ Refusal::NoAdminToken) => Err(Status::failed_precondition(r.to_string())),
            Err(r @ Refusal::WorkerToken) => Err(Status::permission_denied(r.to_string())),
            Err(r) => Err(Status::unauthenticated(r.to_string())),
        }
    }
}
