/**
 * Trace context across processes: W3C `traceparent` in message headers, gRPC metadata and the
 * trainer's TRANSFERLAB_TRACEPARENT. Only the OpenTelemetry API is used here: until
 * `startTelemetry` registers the SDK, every function is a cheap no-op (no span, no header).
 */
import {
  type Attributes,
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  context,
  propagation,
  trace,
} from '@opentelemetry/api';

/** The instrumentation scope of every span and metric of transferlab. */
export const INSTRUMENTATION_SCOPE = 'transferlab';

export const TRACEPARENT_HEADER = 'traceparent';

const tracer = () => trace.getTracer(INSTRUMENTATION_SCOPE);

const recordGetter: TextMapGetter<Readonly<Record<string, string>>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key] ?? carrier[key.toLowerCase()],
};

/**
 * The headers to send with a message: the caller's, plus the active trace context when the
 * caller set none (an explicit `traceparent` wins). Undefined when there is nothing to send.
 */
export function withTraceHeaders(headers: Record<string, string> | undefined): Record<string, string> | undefined {
  if (headers?.[TRACEPARENT_HEADER]) return headers;
  const injected: Record<string, string> = {};
  propagation.inject(context.active(), injected);
  if (Object.keys(injected).length === 0) return headers;
  return { ...injected, ...headers };
}

/** The trace context a message, gRPC call or environment variable carried. */
export function extractContext(headers: Readonly<Record<string, string>> | undefined): Context {
  if (!headers) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, headers, recordGetter);
}

/** The active span's context as a W3C traceparent (for a child process), or undefined. */
export function currentTraceparent(): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier[TRACEPARENT_HEADER];
}

/** Runs `fn` inside the trace context a message carried: its spans and publishes continue that trace. */
export function runInMessageContext<T>(headers: Readonly<Record<string, string>>, fn: () => T): T {
  return context.with(extractContext(headers), fn);
}

/**
 * Runs `fn` in a new span, child of the active one (or of `parent`), ended when `fn` settles;
 * a throw marks the span as an error. Sweeps and cells use it.
 */
export async function withSpan<T>(
  name: string,
  options: { attributes?: Attributes; kind?: SpanKind; parent?: Context },
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = options.parent ?? context.active();
  return tracer().startActiveSpan(
    name,
    { attributes: options.attributes, kind: options.kind },
    parent,
    async (span) => {
      try {
        return await fn(span);
      } catch (error) {
        span.recordException(error as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
        throw error;
      } finally {
        span.end();
      }
    },
  );
}
