//! What an operator watches (issue #13, "for the operator"): Prometheus metrics
//! ([`metrics`]), liveness and readiness ([`health`]), and the admin listener that serves
//! them over plain HTTP on loopback by default ([`admin`], `[listen] admin`).
//!
//! The metrics are process-wide (one provider per process): the pipeline, the store and the
//! listeners count into [`metrics::METRICS`] as they work, and what is cheaper to read than
//! to track (queue depth, the trace log's head, free space) is read from the store when
//! scraped.

pub mod admin;
pub mod health;
pub mod metrics;
