//! Logging and tracing set-up, once per process (`main.rs`): the filter
//! (`HERALD_LOG`, else `log.level`), stderr as text or JSON lines
//! (`log.format`), and, with `log.otlp_endpoint`, the same spans exported
//! to an OpenTelemetry collector over OTLP/HTTP (protobuf, rustls).

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::Layered;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "HERALD_LOG={value:?} is not a log filter ({reason}): expected a level (error, warn, info, debug, trace) or directives like \"info,herald::delivery=debug\""
    )]
    Filter { value: String, reason: String },
    #[error(
        "log.otlp_endpoint = {endpoint:?}: cannot set up the OTLP exporter ({reason}); check the URL, or leave it empty for no export"
    )]
    Otlp { endpoint: String, reason: String },
    #[error(
        "log.otlp_endpoint is set, but this herald was built without the `otlp` feature: rebuild with default features, or leave it empty"
    )]
    OtlpNotBuilt,
}

/// The installed subscriber's parts that need a goodbye: the span exporter
/// holds spans in a batch until it is flushed.
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// How long exiting waits for the collector to take the last batch.
#[cfg(feature = "otlp")]
const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

type Filtered = Layered<Targets, Layered<EnvFilter, Registry>>;
type BoxedLayer = Box<dyn Layer<Filtered> + Send + Sync>;

/// Installs the global subscriber. Must run inside the Tokio runtime (the
/// exporter's batches are sent from a task on it).
pub fn init(log: &LogConfig) -> Result<Telemetry, TelemetryError> {
    let filter = match std::env::var("HERALD_LOG") {
        Ok(value) => EnvFilter::builder()
            .parse(&value)
            .map_err(|e| TelemetryError::Filter {
                reason: e.to_string(),
                value,
            })?,
        // `LogLevel` was parsed at load, so this cannot fail.
        Err(_) => EnvFilter::builder()
            .parse(log.level.as_str())
            .unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // lettre logs every line it writes at debug level: `AUTH PLAIN <base64 password>` and
    // whole messages. Whatever the filter says, it gets no further than info; Herald logs
    // the SMTP outcomes it cares about itself.
    let lettre_cap = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("lettre", LevelFilter::INFO);
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut layers: Vec<BoxedLayer> = vec![stderr_layer(log.format)];
    let telemetry = Telemetry {
        #[cfg(feature = "otlp")]
        provider: match log.otlp_endpoint.traces_url() {
            Some(url) => {
                let (provider, layer) = otlp::layer(&url)?;
                layers.push(layer);
                Some(provider)
            }
            None => None,
        },
    };
    #[cfg(not(feature = "otlp"))]
    if log.otlp_endpoint.traces_url().is_some() {
        return Err(TelemetryError::OtlpNotBuilt);
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(lettre_cap)
        .with(layers)
        .init();
    Ok(telemetry)
}

fn stderr_layer(format: LogFormat) -> BoxedLayer {
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colour codes are noise in a log file or a pipe.
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        // One object per line: timestamp, level, target, the event's fields
        // (`message` among them), the current span and the whole span list.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    }
}

impl Telemetry {
    /// Sends what the exporter still holds, waiting at most [`FLUSH_LIMIT`]:
    /// a collector that is down must not keep Herald from exiting.
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            // The SDK's shutdown blocks its thread until the batch task answers.
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
            match tokio::time::timeout(FLUSH_LIMIT, flushed).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("warning: traces not all exported at exit: {e}"),
                Ok(Err(e)) => eprintln!("warning: traces not all exported at exit: {e}"),
                Err(_) => eprintln!(
                    "warning: the OpenTelemetry collector did not take the last traces within {FLUSH_LIMIT:?}"
                ),
            }
        }
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    use tracing_subscriber::Layer;

    use super::{BoxedLayer, TelemetryError};

    /// How long one export may take before it is abandoned.
    const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    pub(super) fn layer(url: &str) -> Result<(SdkTracerProvider, BoxedLayer), TelemetryError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TelemetryError::Otlp {
                endpoint: url.to_owned(),
                reason: e.to_string(),
            })?;
        // Batches leave from a task on Tokio; a full queue drops spans
        // rather than slowing delivery down.
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("herald")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("herald");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
        Ok((provider, layer))
    }
}
