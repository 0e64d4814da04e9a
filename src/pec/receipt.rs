//! TODO(owner: lead) — being written.
