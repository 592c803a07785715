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
  /** Folder that relative dataset paths are resolved against; unset: only absolute paths are accepted. */
  dataRoot: z
    .string()
    .min(1)
    .refine((path) => path.startsWith('/'), 'must be an absolute path')
    .optional(),
};
