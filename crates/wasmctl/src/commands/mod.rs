pub mod delete;
pub mod deploy;
pub mod describe;
pub mod get;
pub mod logs;
pub mod scale;
