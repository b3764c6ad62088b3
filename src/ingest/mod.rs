//! Inputs: bytes from files, stdin, HTTP and pushers, turned into tracks and frames.

pub mod mkv;
