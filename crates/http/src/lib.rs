//! HTTP adapter: actix-web handlers, DTOs, problem+json errors, bearer auth, OpenAPI.
