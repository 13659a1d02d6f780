//! The error a driver's backend or a service reports for one request.

use chipcard_ipc::ErrorCode;

/// A failed request: a protocol error code (PROTOCOL §3) and a text. It becomes the failed
/// outcome of the response, and the server passes both on to the client. The driver library
/// calls it `DriverError`, the service library `ServiceError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text} ({code})")]
pub struct RequestError {
    /// The code the server and its client see.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub text: String,
}

impl RequestError {
    /// An error with any code.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        RequestError {
            code,
            text: text.into(),
        }
    }

    /// Code 1: anything else.
    pub fn failed(text: impl Into<String>) -> Self {
        RequestError::new(ErrorCode::Generic, text)
    }

    /// Code 2: a request's arguments are unacceptable (also: a bad configuration).
    pub fn invalid(text: impl Into<String>) -> Self {
        RequestError::new(ErrorCode::InvalidArgument, text)
    }

    /// Code 3: something the request names does not exist (a reader, slot, context).
    pub fn not_found(text: impl Into<String>) -> Self {
        RequestError::new(ErrorCode::NotFound, text)
    }

    /// Code 5: this is not done here (an unknown command).
    pub fn not_supported(text: impl Into<String>) -> Self {
        RequestError::new(ErrorCode::NotSupported, text)
    }

    /// Code 7: there is no card (any more) in the slot.
    pub fn card_removed(text: impl Into<String>) -> Self {
        RequestError::new(ErrorCode::CardRemoved, text)
    }

    /// Code 8: the reader or the driver failed.
    pub fn reader(text: impl Into<String>) -> Self {
        RequestError::new(ErrorCode::DriverError, text)
    }
}
