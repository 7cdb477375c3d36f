//! Platform certificates that refresh themselves. Being written.

/// What one refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateRefresh {}

/// The periodic refresh task; stops when dropped.
#[derive(Debug)]
pub struct PeriodicRefresh {}
