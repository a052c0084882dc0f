//! The service binary: settings, telemetry, wiring, CLI.
