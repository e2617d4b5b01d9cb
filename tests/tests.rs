//! Integration tests: one binary, one support module. Each module is named after the
//! behaviour it covers.

mod fixture;
mod support;
