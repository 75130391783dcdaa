//! How a phone's request reached us, as the policy, the scan guards and
//! the metrics name it.

/// How a request reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP (or HTTPS).
    Http,
    /// TFTP.
    Tftp,
}

impl Transport {
    /// `http` or `tftp`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Tftp => "tftp",
        }
    }
}
