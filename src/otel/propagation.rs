//! W3C trace context in and out. A caller's `traceparent`/`tracestate` is read only when the caller is trusted
//! (a `server.trusted_proxies` peer, or any peer with `trust_client_context`): an untrusted one could otherwise
//! pick the trace id of someone else's trace, or force sampling. Whatever the caller sent never reaches Kong
//! as is: with `[tracing]` on, both names are stripped with the other headers Runway sets
//! (`headers::Protected`), and the upstream step writes Runway's own `traceparent`, naming its upstream span.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceFlags};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The caller's trace context, as the parent of the request's server span; an empty context (a new trace) when
/// the request carries no valid `traceparent`, or more than one (which one would Kong's plugin read?).
pub fn extract(headers: &HeaderMap) -> Context {
    let mut traceparents = headers.get_all(TRACEPARENT).iter();
    match (traceparents.next(), traceparents.next()) {
        (Some(_), None) => TraceContextPropagator::new().extract(&HeaderExtractor(headers)),
        _ => Context::new(),
    }
}

/// `traceparent` naming `span`: version 00, its trace and span ids, and only the sampled flag.
pub fn traceparent(span: &SpanContext) -> HeaderValue {
    let flags = span.trace_flags() & TraceFlags::SAMPLED;
    let value = format!("00-{}-{}-{:02x}", span.trace_id(), span.span_id(), flags.to_u8());
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `tracestate` of `span`'s trace, when it has entries (those of a trusted caller).
pub fn tracestate(span: &SpanContext) -> Option<HeaderValue> {
    let state = span.trace_state().header();
    if state.is_empty() {
        return None;
    }
    HeaderValue::from_str(&state).ok()
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TraceState};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(HeaderName::from_bytes(name.as_bytes()).expect("name"), HeaderValue::from_str(value).expect("v"));
        }
        h
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_one_valid_traceparent_with_its_tracestate() {
        let cx = extract(&headers(&[("traceparent", PARENT), ("tracestate", "vendor=abc")]));
        let span = cx.span();
        let parent = span.span_context();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.trace_state().header(), "vendor=abc");
    }

    #[test]
    fn ignores_invalid_or_repeated_traceparents() {
        for bad in [
            vec![("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")],
            vec![("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")],
            vec![("traceparent", "garbage")],
            vec![("traceparent", PARENT), ("traceparent", PARENT)],
            vec![],
        ] {
            assert!(!extract(&headers(&bad)).span().span_context().is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn writes_w3c_traceparent_and_tracestate() {
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
        let span = SpanId::from_hex("00f067aa0ba902b7").expect("hex");
        let state = TraceState::from_key_value([("vendor", "abc")]).expect("state");
        let sampled = SpanContext::new(trace, span, TraceFlags::SAMPLED, false, state);
        assert_eq!(traceparent(&sampled), PARENT);
        assert_eq!(tracestate(&sampled).as_ref().map(|v| v.as_bytes()), Some(&b"vendor=abc"[..]));
        let unsampled = SpanContext::new(trace, span, TraceFlags::default(), false, TraceState::default());
        assert_eq!(traceparent(&unsampled), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(tracestate(&unsampled), None);
    }
}
