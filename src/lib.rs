pub mod flv;
pub mod hls;
pub mod media;
pub mod ts;
