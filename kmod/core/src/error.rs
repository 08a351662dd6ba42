//! Return codes: PAPR hypercall codes and RTAS status codes for dynamic DMA windows.

/// PAPR `H_SUCCESS`.
pub const H_SUCCESS: i64 = 0;
/// PAPR `H_HARDWARE`.
pub const H_HARDWARE: i64 = -1;
/// PAPR `H_PARAMETER`.
pub const H_PARAMETER: i64 = -4;
/// PAPR `H_PERMISSION`.
pub const H_PERMISSION: i64 = -11;
/// Linux-internal `H_TOO_HARD`: not handled in the kernel, the call goes on to userspace.
pub const H_TOO_HARD: i64 = 9999;

/// A failed hypercall, as the PAPR code the guest (or the userspace fallback) sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HcallError {
    /// `H_HARDWARE` (-1). Upstream KVM never returns it for TCE calls; kept for the fallback.
    Hardware,
    /// `H_PARAMETER` (-4): the guest passed a bad argument.
    Parameter,
    /// `H_PERMISSION` (-11). Upstream KVM never returns it for TCE calls; kept for the fallback.
    Permission,
    /// `H_TOO_HARD` (9999): the kernel cannot finish the call; userspace completes it.
    TooHard,
}

impl HcallError {
    /// The PAPR return code.
    pub const fn as_i64(self) -> i64 {
        match self {
            HcallError::Hardware => H_HARDWARE,
            HcallError::Parameter => H_PARAMETER,
            HcallError::Permission => H_PERMISSION,
            HcallError::TooHard => H_TOO_HARD,
        }
    }

    /// Inverse of [`HcallError::as_i64`]; `None` for `H_SUCCESS` and unknown codes.
    pub const fn from_i64(code: i64) -> Option<HcallError> {
        match code {
            H_HARDWARE => Some(HcallError::Hardware),
            H_PARAMETER => Some(HcallError::Parameter),
            H_PERMISSION => Some(HcallError::Permission),
            H_TOO_HARD => Some(HcallError::TooHard),
            _ => None,
        }
    }
}

/// A hypercall result: `Ok(r4)` (the value returned in r4, 0 when the call returns none) or an error.
pub type HResult<T> = Result<T, HcallError>;

/// The PAPR code of a result: `H_SUCCESS` for `Ok`.
pub fn hresult_code<T>(r: &HResult<T>) -> i64 {
    match r {
        Ok(_) => H_SUCCESS,
        Err(e) => e.as_i64(),
    }
}

/// RTAS status codes used by the dynamic DMA window calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtasStatus {
    /// 0: success.
    Success,
    /// -1: hardware error (QEMU: no free window or LIOBN).
    HwError,
    /// -3: parameter error (QEMU: unsupported page size, window smaller than a page, unknown LIOBN).
    ParamError,
}

impl RtasStatus {
    /// The RTAS code as the guest sees it in the first return word.
    pub const fn as_i32(self) -> i32 {
        match self {
            RtasStatus::Success => 0,
            RtasStatus::HwError => -1,
            RtasStatus::ParamError => -3,
        }
    }
}
