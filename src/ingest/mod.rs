//! Inputs: bytes from files, stdin, HTTP, pushers and RTSP cameras, turned into tracks and
//! frames.

pub mod backoff;
pub mod body;
pub mod mkv;
pub mod push;
pub mod rtsp;
pub mod source;
