import * as z from 'zod';
import { portSchema } from '@transferlab/platform';
import { DEFAULT_PORT } from './server.ts';

/**
 * The evaluator's settings (TRANSFERLAB_<KEY>); the store and bus adapters read theirs
 * (TRANSFERLAB_STORE, TRANSFERLAB_S3_*, TRANSFERLAB_NATS_URL) in `openStore` / `openBus`.
 */
export const evaluatorConfig = {
  /** gRPC port. */
  port: portSchema.default(DEFAULT_PORT),
  /** Interface to listen on: 0.0.0.0 in a pod. */
  host: z.string().min(1).default('127.0.0.1'),
};
