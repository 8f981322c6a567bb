//! The sandbox's traffic split (to be written).
