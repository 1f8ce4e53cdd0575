pub mod cluster;
pub mod delete;
pub mod deploy;
pub mod describe;
pub mod get;
pub mod logs;
pub mod node;
pub mod scale;
