pub mod flv;
pub mod media;
pub mod ts;
