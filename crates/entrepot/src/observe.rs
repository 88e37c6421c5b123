//! Observability wiring of `entrepot serve`: the log subscriber (text, or one JSON object per line with
//! the fields of the enclosing spans — the request id — flattened in), the periodic storage-used gauge,
//! and the webhooks (sink on the registry, dispatcher tasks).
//!
//! Only wiring: what is logged, measured or delivered is decided in `entrepot-server` and
//! `entrepot-events`. Never logs a configuration secret.

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use entrepot_meta::MetaBackend;
use entrepot_registry::{Metrics, Registry};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Config;

/// How often the storage-used gauge is refreshed from the metadata store.
const STORAGE_GAUGE_EVERY: Duration = Duration::from_secs(30);

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Installs the global log subscriber (on stderr). `RUST_LOG`, when set, replaces `filter`.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let result = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(SpanFields)
            .with(tracing_subscriber::fmt::layer().event_format(JsonLines).with_writer(std::io::stderr))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("entrepot: logging was already set up: {e}");
    }
}

/// Records each span's fields as JSON in the span's extensions, for [`JsonLines`].
struct SpanFields;

/// A span's fields.
struct Fields(Map<String, Value>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanFields {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut map = Map::new();
        attrs.record(&mut JsonVisitor(&mut map));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Fields(map));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(Fields(map)) = ext.get_mut::<Fields>() {
                values.record(&mut JsonVisitor(map));
            }
        }
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

/// One JSON object per line: `time`, `level`, `target`, the fields of every enclosing span (outermost
/// first; the request's `request_id`), then the event's own fields (`message`, …).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut obj = Map::new();
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        obj.insert("time".into(), time.into());
        obj.insert("level".into(), event.metadata().level().as_str().into());
        obj.insert("target".into(), event.metadata().target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(Fields(fields)) = span.extensions().get::<Fields>() {
                    obj.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut JsonVisitor(&mut obj));
        writeln!(w, "{}", Value::Object(obj))
    }
}

/// Keeps `entrepot_storage_used_bytes` fresh: one aggregate query every 30 seconds, never per scrape.
pub fn spawn_storage_gauge(meta: Arc<dyn MetaBackend>, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STORAGE_GAUGE_EVERY);
        loop {
            tick.tick().await;
            match meta.stored_bytes().await {
                Ok(bytes) => metrics.set_storage_used(bytes),
                Err(e) => tracing::warn!(error = %e, "cannot measure the storage used"),
            }
        }
    });
}

/// Attaches the webhook sink to `registry` and starts delivering, when webhooks are configured.
pub fn start_webhooks(registry: Registry, meta: Arc<dyn MetaBackend>, config: &Config) -> Result<Registry, String> {
    if config.webhooks.is_empty() {
        return Ok(registry);
    }
    // Checked when the configuration was loaded; checked again here rather than trusted.
    let endpoints = entrepot_events::config::compile(&config.webhooks).map_err(|p| p.join("\n"))?;
    let names: Vec<String> = endpoints.iter().map(|e| e.name.clone()).collect();
    let sink = entrepot_events::WebhookSink::new(endpoints, meta, config.event_source.clone());
    sink.dispatcher(registry.metrics().clone()).spawn().map_err(|e| e.to_string())?;
    tracing::info!(endpoints = ?names, "webhooks on");
    Ok(registry.with_event_sink(Arc::new(sink)))
}
