//! The OpenAPI operations of the service.

use poem_openapi::payload::PlainText;
use poem_openapi::OpenApi;

pub struct HealthApi;

#[OpenApi]
impl HealthApi {
    /// Liveness: the process is up. Makes no database call.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok")
    }
}
