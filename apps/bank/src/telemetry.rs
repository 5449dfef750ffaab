//! What `bank` tells operators as it runs: logs on stderr always, and OpenTelemetry
//! traces when an OTLP endpoint is given (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`; off by default).
//!
//! A trace begins at each API request (`request`, in [`crate::http`]) and goes on in
//! Rewind's own spans (`rewind::telemetry`: dispatch, middleware, execute, append
//! with its group-commit size, the strong-consistency wait) and in every handler that
//! takes the resulting events, joined through the correlation and causation ids
//! stored with them: a transfer is one trace across the process manager's steps,
//! even when a step runs in another `bank serve`. Only Rewind's and the bank's spans
//! are exported, at every level; the logs keep their own filter (`RUST_LOG`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The path of the traces signal under an OTLP/HTTP base endpoint.
const TRACES_PATH: &str = "/v1/traces";

/// What was installed; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (nothing when traces are off).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("traces not all sent: {error}");
        }
    }
}

/// Installs the logs, and traces to `otlp_endpoint` (an OTLP/HTTP base URL such as
/// `http://127.0.0.1:4318`) when one is given. Call it outside the async runtime:
/// the exporter's HTTP client runs on a thread of its own.
pub fn init(otlp_endpoint: Option<&str>) -> Result<Telemetry, String> {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tokio_postgres=warn".into()),
        );
    let provider = match otlp_endpoint.filter(|url| !url.is_empty()) {
        None => None,
        Some(url) => {
            let endpoint = traces_endpoint(url);
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&endpoint)
                .build()
                .map_err(|error| format!("the OTLP exporter for {endpoint}: {error}"))?;
            Some(provider(exporter, false))
        }
    };
    let traces = provider.as_ref().map(layer);
    tracing_subscriber::registry().with(logs).with(traces).try_init().map_err(|error| error.to_string())?;
    Ok(Telemetry { provider })
}

/// `url` with the traces path, unless it ends with it already (the standard
/// variable names a base; a flag may name either).
fn traces_endpoint(url: &str) -> String {
    let base = url.trim_end_matches('/');
    match base.ends_with(TRACES_PATH) {
        true => base.to_owned(),
        false => format!("{base}{TRACES_PATH}"),
    }
}

/// The bank's tracer provider around `exporter`: Rewind's causal span ids (so a
/// handler's span finds its parent), batched export in production, every span
/// exported as it ends with `immediate` (tests).
pub fn provider(exporter: impl SpanExporter + 'static, immediate: bool) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder()
        .with_id_generator(rewind::telemetry::CausalIds::default())
        .with_resource(Resource::builder().with_service_name("bank").build());
    match immediate {
        true => builder.with_simple_exporter(exporter),
        false => builder.with_batch_exporter(exporter),
    }
    .build()
}

/// The layer that turns Rewind's and the bank's spans into OpenTelemetry spans.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let spans = Targets::new().with_target("rewind", LevelFilter::TRACE).with_target("bank", LevelFilter::TRACE);
    tracing_opentelemetry::layer().with_tracer(provider.tracer("bank")).with_filter(spans)
}

#[cfg(test)]
mod tests {
    use super::traces_endpoint;

    #[test]
    fn the_traces_path_is_added_to_a_base_once() {
        assert_eq!(traces_endpoint("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_endpoint("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_endpoint("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }
}
