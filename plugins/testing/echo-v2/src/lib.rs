//! Test plugin `echo` 2.0.0: the same source as `echo`, another version.
#[path = "../../echo/src/echo.rs"]
mod echo;
pub use echo::Echo;

emotion_plugin_sdk::export_plugin!(Echo);
