pub mod config;
pub mod flv;
pub mod hls;
pub mod ingest;
pub mod media;
pub mod ts;
