//! The CT-API library: loading it and calling `CT_init`, `CT_data`, `CT_close`. The only
//! module with `unsafe`; everything else uses the safe [`CtApi`] methods.
#![allow(unsafe_code)]

use std::path::Path;

/// `int8_t CT_init(uint16_t ctn, uint16_t pn)`
type CtInit = unsafe extern "C" fn(u16, u16) -> i8;
/// `int8_t CT_data(uint16_t ctn, uint8_t *dad, uint8_t *sad, uint16_t lenc,
/// uint8_t *command, uint16_t *lenr, uint8_t *response)`
type CtData = unsafe extern "C" fn(u16, *mut u8, *mut u8, u16, *const u8, *mut u16, *mut u8) -> i8;
/// `int8_t CT_close(uint16_t ctn)`
type CtClose = unsafe extern "C" fn(u16) -> i8;

/// The response buffer offered to `CT_data`: the most its `uint16_t *lenr` can describe
/// (a short R-APDU needs 258 bytes; an extended one up to 65,538 cannot be expressed in
/// CT-API 1.1).
pub const MAX_RESPONSE: usize = u16::MAX as usize;

/// A loaded CT-API library and its three functions.
#[derive(Debug)]
pub struct CtApi {
    init: CtInit,
    data: CtData,
    close: CtClose,
    /// Keeps the code the function pointers point into mapped; never unloaded while a
    /// `CtApi` (shared by the reader threads through an `Arc`) exists.
    _library: libloading::Library,
}

/// What `CT_data` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataResponse {
    /// The response's source address (the command's destination).
    pub sad: u8,
    /// The response bytes.
    pub data: Vec<u8>,
}

impl CtApi {
    /// Loads the library at `path` and looks up its three functions.
    pub fn load(path: &Path) -> Result<CtApi, libloading::Error> {
        // SAFETY: loading runs the library's initialisers; a CT-API library is chosen by the
        // administrator (`libraryFile`) for exactly this purpose, and this driver runs in its
        // own process so a misbehaving library cannot harm chipcardd.
        let library = unsafe { libloading::Library::new(path) }?;
        // SAFETY: the symbols are declared with the CT-API 1.1 signatures of ctapi.h, which
        // every CT-API library implements; the pointers are kept only together with the
        // library (`_library`), so they never outlive the mapping.
        let (init, data, close) = unsafe {
            let init = *library.get::<CtInit>(b"CT_init\0")?;
            let data = *library.get::<CtData>(b"CT_data\0")?;
            let close = *library.get::<CtClose>(b"CT_close\0")?;
            (init, data, close)
        };
        Ok(CtApi {
            init,
            data,
            close,
            _library: library,
        })
    }

    /// `CT_init(ctn, pn)`: the CT-API return code.
    pub fn init(&self, ctn: u16, pn: u16) -> i8 {
        // SAFETY: plain integer arguments; the function pointer is valid while `self` is.
        unsafe { (self.init)(ctn, pn) }
    }

    /// `CT_close(ctn)`: the CT-API return code.
    pub fn close(&self, ctn: u16) -> i8 {
        // SAFETY: plain integer argument; the function pointer is valid while `self` is.
        unsafe { (self.close)(ctn) }
    }

    /// `CT_data(ctn, dad, HOST, command)` with a response buffer of `MAX_RESPONSE` bytes:
    /// the response, or the CT-API return code when it is not `OK` (or -11 for a command
    /// longer than 65,535 bytes).
    pub fn data(&self, ctn: u16, dad: u8, command: &[u8]) -> Result<DataResponse, i8> {
        let lenc = u16::try_from(command.len()).map_err(|_| -11i8)?;
        let mut dad = dad;
        let mut sad = HOST;
        let mut response = vec![0u8; MAX_RESPONSE];
        let mut lenr: u16 = u16::MAX; // = MAX_RESPONSE
                                      // SAFETY: every pointer is valid for the call: `dad`, `sad`, `lenr` are locals,
                                      // `command` has `lenc` bytes, `response` has room for `lenr` (MAX_RESPONSE) bytes; the
                                      // library only reads `command` (ctapi.h declares it non-const for old compilers).
        let code = unsafe {
            (self.data)(
                ctn,
                &mut dad,
                &mut sad,
                lenc,
                command.as_ptr(),
                &mut lenr,
                response.as_mut_ptr(),
            )
        };
        if code != 0 {
            return Err(code);
        }
        // A library that claims more than the buffer holds is cut to the buffer.
        response.truncate(usize::from(lenr).min(MAX_RESPONSE));
        Ok(DataResponse {
            sad,
            data: response,
        })
    }
}

/// CT-API address of the host, the source of every command.
pub const HOST: u8 = 0x02;
