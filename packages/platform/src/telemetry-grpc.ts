/**
 * Traces and metrics at the gRPC edge. Clients: an interceptor that opens a CLIENT span and
 * sends its W3C trace context in the call's metadata (`callUnary` adds it to every call).
 * Servers: `instrumentService` wraps a service's handlers so each call runs in a SERVER span
 * whose parent is the caller's context, and is counted by method and status code.
 */
import * as grpc from '@grpc/grpc-js';
import {
  type Attributes,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  context,
  metrics,
  propagation,
  trace,
} from '@opentelemetry/api';
import { ATTRIBUTES } from './telemetry-attributes.ts';
import { INSTRUMENTATION_SCOPE } from './telemetry-context.ts';
import { RpcServerMetrics } from './telemetry-instruments.ts';

const tracer = () => trace.getTracer(INSTRUMENTATION_SCOPE);

const metadataSetter: TextMapSetter<grpc.Metadata> = {
  set: (metadata, key, value) => metadata.set(key, value),
};

const metadataGetter: TextMapGetter<grpc.Metadata> = {
  keys: (metadata) => Object.keys(metadata.getMap()),
  get: (metadata, key) => {
    const value = metadata.get(key)[0];
    return typeof value === 'string' ? value : undefined;
  },
};

/** `/transferlab.v1.SweepService/StartSweep` → its service and method. */
function splitPath(path: string): { service: string; method: string } {
  const match = /^\/([^/]+)\/([^/]+)$/.exec(path);
  return match ? { service: match[1]!, method: match[2]! } : { service: 'unknown', method: path };
}

/** The metric's labels; spans also get rpc.system. */
function rpcAttributes(path: string): Attributes {
  const { service, method } = splitPath(path);
  return { [ATTRIBUTES.rpcService]: service, [ATTRIBUTES.rpcMethod]: method };
}

function spanAttributes(path: string): Attributes {
  return { [ATTRIBUTES.rpcSystem]: 'grpc', ...rpcAttributes(path) };
}

/** A client interceptor: a CLIENT span per call, its context sent as `traceparent` metadata. */
export const tracingInterceptor: grpc.Interceptor = (options, nextCall) => {
  const path = options.method_definition.path;
  const span = tracer().startSpan(path.slice(1), { kind: SpanKind.CLIENT, attributes: spanAttributes(path) });
  const callContext = trace.setSpan(context.active(), span);
  const requester = new grpc.RequesterBuilder()
    .withStart((metadata, listener, next) => {
      propagation.inject(callContext, metadata, metadataSetter);
      next(metadata, {
        onReceiveStatus: (status, nextStatus) => {
          span.setAttribute(ATTRIBUTES.rpcGrpcStatusCode, status.code);
          if (status.code !== grpc.status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: status.details });
          span.end();
          nextStatus(status);
        },
      });
    })
    .build();
  return new grpc.InterceptingCall(nextCall(options), requester);
};

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> & grpc.ServerWritableStream<unknown, unknown>;
type AnyHandler = (call: AnyCall, callback?: grpc.sendUnaryData<unknown>) => void;

/**
 * The implementation with each handler of `definition` wrapped: the call runs inside a SERVER
 * span, child of the trace context in its metadata, and its duration is recorded with its
 * status code. Handlers see no difference.
 */
export function instrumentService(
  definition: grpc.ServiceDefinition,
  implementation: grpc.UntypedServiceImplementation,
  rpcMetrics: RpcServerMetrics = new RpcServerMetrics(metrics.getMeter(INSTRUMENTATION_SCOPE)),
): grpc.UntypedServiceImplementation {
  const wrapped: grpc.UntypedServiceImplementation = { ...implementation };
  for (const [key, method] of Object.entries(definition)) {
    const names = [key, method.originalName].filter((name): name is string => typeof name === 'string');
    const name = names.find((candidate) => typeof implementation[candidate] === 'function');
    if (!name) continue;
    const handler = implementation[name] as unknown as AnyHandler;
    const attributes = rpcAttributes(method.path);
    const spanName = method.path.slice(1);
    const instrumented: AnyHandler = (call, callback) => {
      const parent = propagation.extract(ROOT_CONTEXT, call.metadata, metadataGetter);
      const span = tracer().startSpan(
        spanName,
        { kind: SpanKind.SERVER, attributes: spanAttributes(method.path) },
        parent,
      );
      const started = performance.now();
      let ended = false;
      const end = (code: grpc.status, message?: string): void => {
        if (ended) return;
        ended = true;
        span.setAttribute(ATTRIBUTES.rpcGrpcStatusCode, code);
        if (code !== grpc.status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message });
        span.end();
        rpcMetrics.call({ ...attributes, [ATTRIBUTES.rpcGrpcStatusCode]: code }, (performance.now() - started) / 1000);
      };
      call.once('cancelled', () => end(grpc.status.CANCELLED, 'cancelled by the client'));
      const callContext = trace.setSpan(parent, span);
      if (!method.responseStream) {
        // Unary and client-streaming: the callback carries the outcome.
        const done: grpc.sendUnaryData<unknown> = (error, ...rest) => {
          const err = error as Partial<grpc.ServiceError> | null;
          end(err ? (err.code ?? grpc.status.UNKNOWN) : grpc.status.OK, err?.message);
          callback!(error, ...rest);
        };
        context.with(callContext, () => handler(call, done));
        return;
      }
      // Server-streaming and bidi: an 'error' event sets the status, the stream's end sends it.
      call.once('error', (error: Partial<grpc.ServiceError>) => end(error.code ?? grpc.status.UNKNOWN, error.message));
      call.once('finish', () => end(grpc.status.OK));
      context.with(callContext, () => handler(call));
    };
    wrapped[name] = instrumented as unknown as grpc.UntypedHandleCall;
  }
  return wrapped;
}
