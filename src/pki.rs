//! (being written: dev PKI)
