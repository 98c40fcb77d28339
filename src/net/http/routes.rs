//! Route registration: services add their handlers by method and path; a listener's handler
//! dispatches to them (404 / 405 from the status table otherwise).

use super::{Answer, Handler, Method};

/// A command's handler.
pub(crate) type Route = std::sync::Arc<dyn Handler>;

/// Routes of a listener (the admin socket's commands), by method and path: services register
/// their handlers here. A path ending in `/` matches every path under it
/// (`/revocations/` serves `/revocations/ID`).
#[derive(Default, Clone)]
pub(crate) struct Routes {
    routes: Vec<(Method, &'static str, Route)>,
}

impl Routes {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn add(&mut self, method: Method, path: &'static str, handler: impl Handler) -> &mut Self {
        self.routes.push((method, path, std::sync::Arc::new(handler)));
        self
    }

    /// The route, or the status to answer (404: no such path, 405: not with this method).
    pub(crate) fn find(&self, method: &Method, path: &str) -> Result<&Route, Answer> {
        let matching: Vec<_> = self
            .routes
            .iter()
            .filter(|(_, p, _)| *p == path || (p.ends_with('/') && path.starts_with(p) && path.len() > p.len()))
            .collect();
        if matching.is_empty() {
            return Err(Answer::NotFound);
        }
        matching.iter().find(|(m, _, _)| m == method).map(|(_, _, h)| h).ok_or(Answer::MethodNotAllowed)
    }
}
