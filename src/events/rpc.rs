//! Which call an event is about: the Workload API RPCs, the token exchange and an approval
//! decision, each possibly a session's background renewal. Audit lines and the inventory show
//! its name exactly as they always have (`FetchX509SVID`, `TokenExchange (renewal)`).

/// The calls tessera serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Call {
    FetchX509Svid,
    FetchX509Bundles,
    FetchJwtSvid,
    FetchJwtBundles,
    ValidateJwtSvid,
    FetchWitSvid,
    FetchWitBundles,
    TokenExchange,
    ApprovalDecision,
    /// A call through the node gateway.
    Gateway,
}

impl Call {
    /// The name on the wire (the gRPC method) or in the audit log.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Call::FetchX509Svid => "FetchX509SVID",
            Call::FetchX509Bundles => "FetchX509Bundles",
            Call::FetchJwtSvid => "FetchJWTSVID",
            Call::FetchJwtBundles => "FetchJWTBundles",
            Call::ValidateJwtSvid => "ValidateJWTSVID",
            Call::FetchWitSvid => "FetchWITSVID",
            Call::FetchWitBundles => "FetchWITBundles",
            Call::TokenExchange => "TokenExchange",
            Call::ApprovalDecision => "ApprovalDecision",
            Call::Gateway => "GatewayCall",
        }
    }
}

/// A call, or the background renewal of a session a call started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Rpc {
    pub call: Call,
    pub renewal: bool,
}

impl Rpc {
    pub(crate) const fn of(call: Call) -> Self {
        Self { call, renewal: false }
    }

    /// The same call, as a session's background renewal.
    pub(crate) fn renewal(self) -> Self {
        Self { renewal: true, ..self }
    }
}

impl From<Call> for Rpc {
    fn from(call: Call) -> Self {
        Self::of(call)
    }
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.call.as_str())?;
        if self.renewal {
            f.write_str(" (renewal)")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Rpc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_ones_the_log_always_had() {
        assert_eq!(Rpc::of(Call::FetchX509Svid).to_string(), "FetchX509SVID");
        assert_eq!(Rpc::of(Call::TokenExchange).renewal().to_string(), "TokenExchange (renewal)");
        assert_eq!(serde_json::to_value(Rpc::of(Call::FetchJwtSvid)).unwrap(), "FetchJWTSVID");
    }
}
