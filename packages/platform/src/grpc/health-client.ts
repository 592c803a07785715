import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

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
 */
export async function healthStatus(
  address: string,
  service = '',
  options: { deadlineMs?: number } = {},
): Promise<string> {
  const Health = grpc.makeGenericClientConstructor(healthService, 'Health');
  const client = new Health(address, grpc.credentials.createInsecure()) as unknown as HealthClient;
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
export async function waitUntilServing(address: string, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const status = await healthStatus(address);
    if (status === 'SERVING') return;
    if (Date.now() > until)
      throw new Error(`${address} is not SERVING after ${deadlineMs} ms (last answer: ${status})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
