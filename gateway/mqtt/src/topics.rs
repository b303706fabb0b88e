//! Topic names and the access rules of devices.
//!
//! | direction | topic | who |
//! |---|---|---|
//! | device → gateway | `{sensors}/{device_id}/{source}` | the device itself |
//! | device → gateway | `{emotions}/{user_id}/events` | a device bound to that user |
//! | gateway → device | `{emotions}/{user_id}/analysis` | a device bound to that user |
//! | gateway → device | `{alerts}/{user_id}` | a device bound to that user |
//! | gateway → device | `{devices}/{device_id}/errors` | the device itself |
//!
//! Anything else is refused: a device cannot publish as another device or for
//! another user, nor read anyone else's results. Subscriptions are exact
//! topics (no wildcards), which also keeps one user's analysis out of reach of
//! a `#` subscription.

//!
//! The layout is defined once, in `emotion_wire::topics`, which firmware-sim
//! uses too; its tests live there.

pub use emotion_wire::topics::{Denied, Inbound, TopicLayout as TopicScheme};
