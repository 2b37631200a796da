//! Why a definition or registration is refused: the field at fault and
//! the message, so each road in names it in its own terms (an HTTP body's
//! `Interval`, a file's `service.check.interval`).

/// The field a refused definition is refused for, so each road can name it
/// in its own terms (an HTTP body's `Interval`, a file's
/// `service.check.interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The service's `Name`.
    ServiceName,
    /// The service's `ID`.
    ServiceId,
    /// The service's `Tags`.
    Tags,
    /// The service's `Meta`.
    ServiceMeta,
    /// The node's name (`Node` in a catalog registration).
    NodeName,
    /// The node's metadata (`NodeMeta` in a catalog registration).
    NodeMeta,
    /// A check's `Name`.
    CheckName,
    /// The service's `Weights`.
    Weights,
    /// A check's `CheckID` (or its name, from which it defaults).
    CheckId,
    /// A check's `Interval`.
    Interval,
    /// A check's `TTL`.
    Ttl,
    /// A check's `Timeout`.
    Timeout,
    /// An HTTP check's `HTTP` URL.
    Http,
    /// An HTTP check's `Method`.
    Method,
    /// An HTTP check's `Header`.
    Header,
    /// A TCP check's `TCP` address.
    Tcp,
    /// A script check's `Args`.
    Args,
}

/// A definition Consul would refuse. The display text is the message, as
/// an HTTP client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// The field at fault.
    pub field: Field,
    /// Consul's wording, naming the field.
    pub message: String,
}

impl Invalid {
    pub(super) fn new(field: Field, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// A check's type rule, worded as Consul words it for a check.
    pub(super) fn check(field: Field, message: impl std::fmt::Display) -> Self {
        Self::new(field, format!("Invalid check: {message}"))
    }
}
