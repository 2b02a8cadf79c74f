//! Helpers for the modules that call librdkafka's C API directly (`topic_ids`, `group_offsets`):
//! ownership of the objects they create, and error texts.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};

use rdkafka::bindings as rd;

/// Destroys a librdkafka object when dropped.
pub(super) struct Owned<T> {
    pub(super) ptr: *mut T,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Owned<T> {
    /// Takes `ptr`, just returned by a librdkafka constructor whose destructor is `destroy`;
    /// `None` when it is null.
    pub(super) fn new(ptr: *mut T, destroy: unsafe extern "C" fn(*mut T)) -> Option<Self> {
        (!ptr.is_null()).then_some(Owned { ptr, destroy })
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned non-null by the librdkafka constructor matching `destroy`
        // and is destroyed exactly once, here.
        unsafe { (self.destroy)(self.ptr) }
    }
}

/// librdkafka's message for an error, or the code's name when it has none.
///
/// # Safety
/// `msg` is null or a NUL-terminated string alive for the call.
pub(super) unsafe fn c_message(msg: *const c_char, code: rd::rd_kafka_resp_err_t) -> String {
    if msg.is_null() {
        format!("{code:?}")
    } else {
        // SAFETY: per the contract above.
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Options for the admin request `op` on client `rk`, with its request timeout; `None` when the
/// client does not support `op`.
///
/// # Safety
/// `rk` is a live client handle.
pub(super) unsafe fn admin_options(
    rk: *mut rd::rd_kafka_t,
    op: rd::rd_kafka_admin_op_t,
    timeout_ms: i32,
) -> Option<Owned<rd::rd_kafka_AdminOptions_t>> {
    // SAFETY: per the contract above; the options are destroyed by `Owned`.
    let options = Owned::new(
        unsafe { rd::rd_kafka_AdminOptions_new(rk, op) },
        rd::rd_kafka_AdminOptions_destroy,
    )?;
    // A timeout within 1..=i32::MAX ms is always accepted, so the error text is not read.
    let mut errstr = [0 as c_char; 256];
    // SAFETY: `options.ptr` is live and `errstr` is writable for its length.
    unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.ptr,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
    }
    Some(options)
}
