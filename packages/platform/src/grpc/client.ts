import * as grpc from '@grpc/grpc-js';
import { tracingInterceptor } from '../telemetry-grpc.ts';
import { MAX_MESSAGE_BYTES } from './server.ts';

/** Every outgoing call has a deadline; this is the default for unary calls. */
export const DEFAULT_DEADLINE_MS = 30_000;

export const CLIENT_OPTIONS: grpc.ClientOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
};

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: Res) => void,
) => grpc.ClientUnaryCall;

/** A unary call as a Promise, with a deadline: the gateway style our services use. */
export function callUnary<Req, Res>(
  method: UnaryMethod<Req, Res>,
  request: Req,
  options: { deadlineMs?: number; metadata?: grpc.Metadata } = {},
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    method(
      request,
      options.metadata ?? new grpc.Metadata(),
      // The interceptor opens a CLIENT span and sends its trace context as `traceparent` metadata.
      { deadline: Date.now() + (options.deadlineMs ?? DEFAULT_DEADLINE_MS), interceptors: [tracingInterceptor] },
      (error, response) => (error ? reject(error) : resolve(response)),
    );
  });
}

export function deadlineIn(ms: number): Partial<grpc.CallOptions> {
  return { deadline: Date.now() + ms };
}
