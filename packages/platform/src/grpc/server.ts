import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { metrics } from '@opentelemetry/api';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from '../logger.ts';
import { INSTRUMENTATION_SCOPE } from '../telemetry-context.ts';
import { instrumentService } from '../telemetry-grpc.ts';
import { RpcServerMetrics } from '../telemetry-instruments.ts';
import { type GrpcServerSecurity, bearerTokenProblem } from './security.ts';

/** The contracts, read at start-up for server reflection. */
export const PROTO_ROOT = fileURLToPath(new URL('../../../../proto', import.meta.url));

/** Every message may carry a report's figures; 64 MiB bounds it without refusing real ones. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * What a server accepts: no request carries data (a spec is a few kilobytes), so a large one is
 * refused by grpc-js with RESOURCE_EXHAUSTED before it is parsed or reaches a handler.
 */
export const MAX_REQUEST_BYTES = 1024 * 1024;

/**
 * Error messages travel in the response's trailers, which HTTP/2 peers bound (a 100 KB message
 * broke them). Anything longer is cut, saying how much: a message never echoes a large input.
 */
export const MAX_ERROR_MESSAGE_CHARS = 2000;

export function truncateMessage(message: string, max = MAX_ERROR_MESSAGE_CHARS): string {
  if (message.length <= max) return message;
  return `${message.slice(0, max)}… (${message.length - max} more characters cut)`;
}

export interface ServiceRegistration {
  /** Fully qualified, e.g. `transferlab.v1.SweepService`: the name health and reflection report. */
  name: string;
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

export interface GrpcServer {
  server: grpc.Server;
  port: number;
  health: HealthImplementation;
  /** The plaintext health-only port, when TLS is on and one was asked for. */
  healthPort?: number;
  /** Stops accepting calls, waits up to `graceMs` for calls in flight, then cuts the rest. */
  shutdown(graceMs?: number): Promise<void>;
}

function protoFiles(): string[] {
  const dir = join(PROTO_ROOT, 'transferlab', 'v1');
  return readdirSync(dir)
    .filter((file) => file.endsWith('.proto'))
    .map((file) => join('transferlab', 'v1', file));
}

/**
 * A gRPC server with the standard health service (grpc.health.v1) and server reflection, so
 * grpcurl, Kubernetes probes and any client can find their way without our code.
 *
 * `security` (serverSecurityFromEnv) makes it TLS or mutual TLS, with an optional plaintext port
 * serving health only. `bearerToken` makes every call of `services` require it (UNAUTHENTICATED
 * before the handler runs); health and reflection stay open: they tell nothing but the status and
 * the public contracts.
 */
export async function startGrpcServer(options: {
  services: ServiceRegistration[];
  port: number;
  host?: string;
  log: Logger;
  security?: GrpcServerSecurity;
  bearerToken?: string;
}): Promise<GrpcServer> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  // Each call of our services runs in a span (the caller's trace continues) and is counted.
  const rpcMetrics = new RpcServerMetrics(metrics.getMeter(INSTRUMENTATION_SCOPE));
  for (const service of options.services) {
    const { definition, implementation } = refuseUndecodable(service.definition, service.implementation);
    const guarded =
      options.bearerToken === undefined
        ? implementation
        : requireBearerToken(definition, implementation, options.bearerToken, options.log);
    server.addService(definition, instrumentService(definition, guarded, rpcMetrics));
  }

  const statuses = Object.fromEntries(options.services.map((service) => [service.name, 'SERVING' as const]));
  const health = new HealthImplementation({ '': 'SERVING', ...statuses });
  health.addToServer(server);
  const definitions = loadSync(protoFiles(), { includeDirs: [PROTO_ROOT], keepCase: true });
  new ReflectionService(definitions).addToServer(server);

  const host = options.host ?? '127.0.0.1';
  const bind = (target: grpc.Server, wanted: number, credentials: grpc.ServerCredentials) =>
    new Promise<number>((resolve, reject) => {
      target.bindAsync(`${host}:${wanted}`, credentials, (error, bound) =>
        error ? reject(new Error(`cannot listen on ${host}:${wanted}: ${error.message}`)) : resolve(bound),
      );
    });
  const security = options.security;
  const port = await bind(server, options.port, security?.credentials ?? grpc.ServerCredentials.createInsecure());
  // Probes that cannot speak TLS (Kubernetes' gRPC probes) get the health service alone, in plaintext.
  let healthServer: grpc.Server | undefined;
  let healthPort: number | undefined;
  if (security?.tls && security.healthPort !== undefined) {
    healthServer = new grpc.Server({ 'grpc.max_receive_message_length': MAX_REQUEST_BYTES });
    health.addToServer(healthServer);
    try {
      healthPort = await bind(healthServer, security.healthPort, grpc.ServerCredentials.createInsecure());
    } catch (error) {
      server.forceShutdown();
      throw error;
    }
  }
  options.log.info(
    {
      port,
      services: options.services.map((s) => s.name),
      tls: security?.tls ?? false,
      mutualTls: security?.mutualTls ?? false,
      bearerToken: options.bearerToken !== undefined,
      ...(healthPort !== undefined ? { healthPort } : {}),
    },
    'gRPC server listening',
  );

  return {
    server,
    port,
    health,
    ...(healthPort !== undefined ? { healthPort } : {}),
    shutdown: (graceMs = 10_000) =>
      new Promise<void>((resolve) => {
        for (const service of options.services) health.setStatus(service.name, 'NOT_SERVING');
        health.setStatus('', 'NOT_SERVING');
        healthServer?.forceShutdown();
        const timer = setTimeout(() => {
          options.log.warn({ graceMs }, 'calls still in flight after the grace period: cutting them');
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}

const UNDECODABLE = Symbol('undecodable request');
type Undecodable = { [UNDECODABLE]: string };

/**
 * A request that cannot be decoded (a 64-bit number past 2^53, which the generated code refuses;
 * bytes that are not the message) is the caller's mistake: INVALID_ARGUMENT naming the request,
 * where grpc-js would answer INTERNAL. The decoder's error is kept and the handler never runs.
 */
function refuseUndecodable(
  definition: grpc.ServiceDefinition,
  implementation: grpc.UntypedServiceImplementation,
): { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation } {
  const wrappedDefinition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const wrappedImplementation: grpc.UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(definition)) {
    wrappedDefinition[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes) as unknown;
        } catch (error) {
          return { [UNDECODABLE]: (error as Error).message } satisfies Undecodable;
        }
      },
    };
    const handler = implementation[name];
    if (!handler || method.requestStream) {
      if (handler) wrappedImplementation[name] = handler;
      continue;
    }
    const refusal = (request: unknown): grpc.ServiceError | undefined => {
      const problem = (request as Partial<Undecodable> | null)?.[UNDECODABLE];
      return problem === undefined
        ? undefined
        : grpcError(grpc.status.INVALID_ARGUMENT, `request: cannot be decoded as ${method.path}: ${problem}`);
    };
    wrappedImplementation[name] = method.responseStream
      ? (call: grpc.ServerWritableStream<unknown, unknown>) => {
          const error = refusal(call.request);
          if (error) call.emit('error', error);
          else (handler as grpc.handleServerStreamingCall<unknown, unknown>)(call);
        }
      : (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const error = refusal(call.request);
          if (error) callback(error);
          else (handler as grpc.handleUnaryCall<unknown, unknown>)(call, callback);
        };
  }
  return { definition: wrappedDefinition, implementation: wrappedImplementation };
}

/**
 * Every method of a service answers UNAUTHENTICATED, before its handler runs, unless the call
 * carries the bearer token. The refusal is logged with the method and the peer, never a token.
 */
function requireBearerToken(
  definition: grpc.ServiceDefinition,
  implementation: grpc.UntypedServiceImplementation,
  token: string,
  log: Logger,
): grpc.UntypedServiceImplementation {
  const guarded: grpc.UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(implementation)) {
    const method = definition[name];
    const refusal = (call: { metadata: grpc.Metadata; getPeer(): string }): grpc.ServiceError | undefined => {
      const problem = bearerTokenProblem(call.metadata, token);
      if (problem === undefined) return undefined;
      log.warn({ method: method?.path ?? name, peer: call.getPeer() }, `unauthenticated call refused: ${problem}`);
      return grpcError(grpc.status.UNAUTHENTICATED, `${method?.path ?? name}: ${problem}`);
    };
    guarded[name] =
      method && !method.requestStream && !method.responseStream
        ? (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
            const error = refusal(call);
            if (error) callback(error);
            else (handler as grpc.handleUnaryCall<unknown, unknown>)(call, callback);
          }
        : method?.requestStream && !method.responseStream
          ? (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
              const error = refusal(call);
              if (error) callback(error);
              else (handler as grpc.handleClientStreamingCall<unknown, unknown>)(call, callback);
            }
          : (call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
              const error = refusal(call);
              if (error) call.emit('error', error);
              else (handler as (call: unknown) => void)(call);
            };
  }
  return guarded;
}

/** A gRPC error with a status code and a message naming what is wrong. */
export function grpcError(code: grpc.status, text: string): grpc.ServiceError {
  const message = truncateMessage(text);
  const error = new Error(message) as grpc.ServiceError;
  error.code = code;
  error.details = message;
  error.metadata = new grpc.Metadata();
  return error;
}

/**
 * Any thrown value as the error a call ends with: its gRPC status when it has one, else
 * INTERNAL (logged). A Node error's string code (ENAMETOOLONG) is no status: grpc-js would send
 * UNKNOWN with the whole message, and a message past the trailers' bound breaks the connection
 * for every call on it. So the message is always cut (grpcError).
 */
export function asServiceError(error: unknown, log: Logger): grpc.ServiceError {
  const err = error as Partial<grpc.ServiceError> & Error;
  if (typeof err.code === 'number') return grpcError(err.code, err.details ?? err.message);
  log.error({ err }, 'unexpected error in a gRPC handler');
  return grpcError(grpc.status.INTERNAL, err.message ?? String(error));
}

/**
 * Adapts an async handler to grpc-js's callback style; errors without a gRPC status become
 * INTERNAL with their message, so a caller always learns what went wrong.
 */
export function unaryHandler<Req, Res>(
  handler: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
  log: Logger,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    handler(call.request, call).then(
      (response) => callback(null, response),
      (error: unknown) => {
        callback(asServiceError(error, log));
      },
    );
  };
}

/** Runs `stop` once on SIGTERM or SIGINT, then exits: the drain order is the caller's. */
export function onShutdownSignal(stop: () => Promise<void>, log: Logger): void {
  let stopping = false;
  const handle = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
}
