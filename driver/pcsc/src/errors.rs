//! PC/SC errors as chipcard sees them.

use chipcard_driver::DriverError;

/// True when the error means the connection to pcscd (the context) is gone: pcscd stopped
/// or restarted. The context must be established again.
pub fn service_lost(e: pcsc::Error) -> bool {
    matches!(
        e,
        pcsc::Error::NoService
            | pcsc::Error::ServiceStopped
            | pcsc::Error::InvalidHandle
            | pcsc::Error::CommError
            | pcsc::Error::Shutdown
    )
}

/// True when a card connection cannot be used any more and must be made again.
pub fn connection_lost(e: pcsc::Error) -> bool {
    service_lost(e)
        || matches!(
            e,
            pcsc::Error::RemovedCard
                | pcsc::Error::NoSmartcard
                | pcsc::Error::UnknownReader
                | pcsc::Error::ReaderUnavailable
                | pcsc::Error::NoReadersAvailable
        )
}

/// The protocol error for a failed PC/SC call on `reader`: a removed card is code 7, a
/// reader that is gone code 3, anything else code 8 (driver or reader error).
pub fn to_driver_error(e: pcsc::Error, reader: &str, what: &str) -> DriverError {
    let text = format!("{what} on reader '{reader}': {e}");
    match e {
        pcsc::Error::RemovedCard | pcsc::Error::NoSmartcard => DriverError::card_removed(text),
        pcsc::Error::UnknownReader
        | pcsc::Error::ReaderUnavailable
        | pcsc::Error::NoReadersAvailable => DriverError::not_found(text),
        _ => DriverError::reader(text),
    }
}

#[cfg(test)]
mod tests {
    use chipcard_ipc::ErrorCode;

    use super::*;

    #[test]
    fn codes() {
        let code = |e| to_driver_error(e, "r", "transmit").code;
        assert_eq!(code(pcsc::Error::RemovedCard), ErrorCode::CardRemoved);
        assert_eq!(code(pcsc::Error::NoSmartcard), ErrorCode::CardRemoved);
        assert_eq!(code(pcsc::Error::UnknownReader), ErrorCode::NotFound);
        assert_eq!(code(pcsc::Error::ReaderUnavailable), ErrorCode::NotFound);
        assert_eq!(code(pcsc::Error::NoService), ErrorCode::DriverError);
        assert_eq!(code(pcsc::Error::UnresponsiveCard), ErrorCode::DriverError);
        assert!(
            to_driver_error(pcsc::Error::RemovedCard, "Reader 1", "transmit")
                .text
                .starts_with("transmit on reader 'Reader 1': ")
        );
        assert!(service_lost(pcsc::Error::NoService));
        assert!(!service_lost(pcsc::Error::RemovedCard));
        assert!(connection_lost(pcsc::Error::RemovedCard));
        assert!(!connection_lost(pcsc::Error::ResetCard));
    }
}
