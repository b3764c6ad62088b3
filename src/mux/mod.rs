//! Muxers: plain functions of tracks and frames to bytes. They know nothing of sockets or
//! threads, so they are tested byte for byte without a server.

pub mod arena;
pub mod flac;
pub mod fmp4;
pub mod mkv;
