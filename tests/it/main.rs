//! End-to-end tests: the real service over HTTP on 127.0.0.1:0.

mod common;

mod access;
mod apps;
mod bad_input;
mod callbacks;
mod functions;
mod inbox;
mod library;
mod lifecycle;
mod openapi;
mod recovery;
