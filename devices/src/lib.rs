//! Device models for daxvmm.
