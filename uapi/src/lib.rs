//! pvtce ioctl ABI (filled in by the module work).
