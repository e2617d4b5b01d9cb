//! Integration tests: one binary, one support module. Each module is named after the
//! behaviour it covers.

mod api_contract;
mod cli_modules;
mod cutover;
mod deb;
mod demo;
mod docs;
mod facts;
mod faults;
mod fixture;
mod hooks;
mod hostile;
mod isolation;
mod logfile;
mod model;
mod native;
mod offer;
mod operator;
mod root;
mod serve;
mod supervisor;
mod support;
mod systemd;
mod upgrade;
