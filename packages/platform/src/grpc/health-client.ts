import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import type { GrpcClientSecurity } from './security.ts';

type HealthClient = grpc.Client & {
  check(
    request: { service: string },
    options: Partial<grpc.CallOptions>,
    callback: (error: grpc.ServiceError | null, response: { status: string }) => void,
  ): void;
};

/**
 * grpc.health.v1 Check against `address` for `service` ('' = the whole server): `SERVING`,
 * `NOT_SERVING`, or the error's message when the call fails (e.g. nothing listens yet).
 * `security` (clientSecurityFromEnv) for a TLS server; default plaintext.
 */
export async function healthStatus(
  address: string,
  service = '',
  options: { deadlineMs?: number; security?: GrpcClientSecurity } = {},
): Promise<string> {
  const Health = grpc.makeGenericClientConstructor(healthService, 'Health');
  const client = new Health(
    address,
    options.security?.credentials ?? grpc.credentials.createInsecure(),
    options.security?.options,
  ) as unknown as HealthClient;
  try {
    return await new Promise((resolve) =>
      client.check({ service }, { deadline: Date.now() + (options.deadlineMs ?? 1000) }, (error, response) =>
        resolve(error ? `DOWN: ${error.message}` : response.status),
      ),
    );
  } finally {
    client.close();
  }
}

/** Polls until the server at `address` reports SERVING; fails naming its last answer. */
export async function waitUntilServing(
  address: string,
  deadlineMs: number,
  options: { security?: GrpcClientSecurity } = {},
): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const status = await healthStatus(address, '', options);
    if (status === 'SERVING') return;
    if (Date.now() > until)
      throw new Error(`${address} is not SERVING after ${deadlineMs} ms (last answer: ${status})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
