//! Test plugin `echo` 1.0.0 (see echo.rs).
mod echo;
pub use echo::Echo;

emotion_plugin_sdk::export_plugin!(Echo);
