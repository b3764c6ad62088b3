//! Inputs: bytes from files, stdin, HTTP and pushers, turned into tracks and frames.

pub mod body;
pub mod mkv;
pub mod push;
pub mod source;
