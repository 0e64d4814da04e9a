//! One module per PEC role (digest §6): the access point (*punto di accesso*), and the
//! incoming and delivery points as they are built.
//!
//! * [`checks`]: the access point's formal checks on a submission (pure).

pub mod checks;
