//! Harness for booting guests under daxvmm (directly or nested in the test host VM).
