//! (being written: config tree)
