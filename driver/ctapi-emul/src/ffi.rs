//! The C entry points of `ctapi.h`. The only module with `unsafe`: it checks the
//! pointers, copies in and out, and calls the safe functions in `terminal`. No panic
//! crosses into C: each entry point catches it and returns [`ERR_HOST`].
#![allow(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::terminal::{ct_close, ct_data, ct_init};
use crate::{ERR_HOST, ERR_INVALID, ERR_MEMORY, OK};

/// Runs `f`, turning a panic into [`ERR_HOST`].
fn guarded(f: impl FnOnce() -> i8) -> i8 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(ERR_HOST)
}

/// `int8_t CT_init(uint16_t ctn, uint16_t pn)`.
#[no_mangle]
pub extern "C" fn CT_init(ctn: u16, pn: u16) -> i8 {
    guarded(|| ct_init(ctn, pn))
}

/// `int8_t CT_close(uint16_t ctn)`.
#[no_mangle]
pub extern "C" fn CT_close(ctn: u16) -> i8 {
    guarded(|| ct_close(ctn))
}

/// `int8_t CT_data(uint16_t ctn, uint8_t *dad, uint8_t *sad, uint16_t lenc,
/// uint8_t *command, uint16_t *lenr, uint8_t *response)`.
///
/// # Safety
///
/// As ctapi.h: `dad`, `sad` and `lenr` point to one writable value each, `command` to
/// `lenc` readable bytes, `response` to `*lenr` writable bytes. Null pointers are refused
/// with `ERR_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn CT_data(
    ctn: u16,
    dad: *mut u8,
    sad: *mut u8,
    lenc: u16,
    command: *const u8,
    lenr: *mut u16,
    response: *mut u8,
) -> i8 {
    guarded(|| {
        if dad.is_null() || sad.is_null() || lenr.is_null() || response.is_null() {
            return ERR_INVALID;
        }
        if command.is_null() && lenc > 0 {
            return ERR_INVALID;
        }
        // SAFETY: checked non-null above; the caller passes valid, aligned values (ctapi.h).
        let (dad_in, sad_in, capacity) = unsafe { (*dad, *sad, *lenr) };
        let command = if lenc == 0 {
            Vec::new()
        } else {
            // SAFETY: `command` is non-null and points to `lenc` readable bytes (ctapi.h);
            // the bytes are copied before anything else runs.
            unsafe { std::slice::from_raw_parts(command, usize::from(lenc)) }.to_vec()
        };
        match ct_data(ctn, dad_in, sad_in, &command, usize::from(capacity)) {
            Ok(answer) => {
                let Ok(len) = u16::try_from(answer.data.len()) else {
                    return ERR_MEMORY;
                };
                if len > capacity {
                    return ERR_MEMORY;
                }
                // SAFETY: `response` is non-null and has room for `capacity` >= `len` bytes
                // (the caller's `*lenr`); `dad`, `sad`, `lenr` are non-null and writable.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        answer.data.as_ptr(),
                        response,
                        answer.data.len(),
                    );
                    *lenr = len;
                    *dad = answer.dad;
                    *sad = answer.sad;
                }
                OK
            }
            Err(code) => code,
        }
    })
}
