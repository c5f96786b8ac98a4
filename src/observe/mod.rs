//! What operators see of a running server: the metric names and the small
//! calls that move them, the request id every call carries, and trace
//! export (OTLP). The layers below the server call in here with plain numbers;
//! this module knows nothing of them.

pub mod metrics;
pub mod request_id;
pub mod traces;
