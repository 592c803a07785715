import * as z from 'zod';
import { TRACEPARENT } from './cell-events.ts';

/**
 * The trainer's own settings (TRANSFERLAB_<KEY>); the store and bus adapters read theirs
 * (TRANSFERLAB_STORE, TRANSFERLAB_S3_*, TRANSFERLAB_NATS_URL) in `openStore` / `openBus`.
 */
export const trainerConfig = {
  /** The caller's W3C trace context, sent as the `traceparent` header of every event. */
  traceparent: z
    .string()
    .regex(TRACEPARENT, 'must be a W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>')
    .optional(),
  /** Milliseconds between two progress messages at most (epoch ends are always sent). */
  progressIntervalMs: z.coerce.number().int().min(0).default(500),
};
