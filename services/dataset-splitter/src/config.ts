import * as z from 'zod';
import { portSchema } from '@transferlab/platform';
import { DEFAULT_PORT } from './server.ts';

/**
 * The splitter's settings (TRANSFERLAB_<KEY>); the store and bus adapters read theirs
 * (TRANSFERLAB_STORE, TRANSFERLAB_S3_*, TRANSFERLAB_NATS_URL) in `openStore` / `openBus`.
 */
export const splitterConfig = {
  /** gRPC port. */
  port: portSchema.default(DEFAULT_PORT),
  /** Interface to listen on: 0.0.0.0 in a pod. */
  host: z.string().min(1).default('127.0.0.1'),
  /**
   * The folders (separated by ':') datasets and groups files may be read from; relative paths
   * resolve against the first. Unset: no dataset file is read (only the built-in MNIST).
   */
  dataRoot: z
    .string()
    .min(1)
    .refine((value) => value.split(':').every((path) => path === '' || path.startsWith('/')), 'must be absolute paths')
    .optional(),
};
