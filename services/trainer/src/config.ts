import * as z from 'zod';
import { portSchema } from '@transferlab/platform';
import { TRACEPARENT } from './cell-events.ts';
import { DEFAULT_PORT } from './server.ts';

/**
 * The trainer's own settings (TRANSFERLAB_<KEY>); the store and bus adapters read theirs
 * (TRANSFERLAB_STORE, TRANSFERLAB_S3_*, TRANSFERLAB_NATS_URL) in `openStore` / `openBus`.
 */
export const trainerConfig = {
  /** gRPC port of the server mode. */
  port: portSchema.default(DEFAULT_PORT),
  /** Interface the server mode listens on: 0.0.0.0 in a pod. */
  host: z.string().min(1).default('127.0.0.1'),
  /** One-shot mode: the caller's W3C trace context, sent as the `traceparent` header of every event. */
  traceparent: z
    .string()
    .regex(TRACEPARENT, 'must be a W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>')
    .optional(),
  /** Milliseconds between two progress messages at most (epoch ends are always sent). */
  progressIntervalMs: z.coerce.number().int().min(0).default(500),
};
