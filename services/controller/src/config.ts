import { availableParallelism } from 'node:os';
import * as z from 'zod';
import { portSchema } from '@transferlab/platform';

export const DEFAULT_PORT = 50060;

const address = z.string().regex(/^\S+:\d+$/, 'must be HOST:PORT');
const positiveInt = z.coerce.number().int().positive();

/**
 * The controller's own settings (TRANSFERLAB_<KEY>); the store and the bus adapters read theirs
 * (TRANSFERLAB_STORE or TRANSFERLAB_S3_*, TRANSFERLAB_NATS_URL) in `openStore` / `openBus`.
 */
export const controllerConfig = {
  /** gRPC port of the SweepService. */
  port: portSchema.default(DEFAULT_PORT),
  /** Interface to listen on: 0.0.0.0 in a pod. */
  host: z.string().min(1).default('127.0.0.1'),
  splitterAddr: address.default('127.0.0.1:50061'),
  transplanterAddr: address.default('127.0.0.1:50062'),
  evaluatorAddr: address.default('127.0.0.1:50063'),
  /** Trainer processes at once, and so cells training at once across all sweeps. Default: one per core. */
  maxTrainers: positiveInt.default(Math.max(1, availableParallelism())),
  /** Attempts per cell, each resuming from the cell's last checkpoint. */
  maxAttempts: positiveInt.default(3),
  /**
   * Where relative dataset paths in a spec resolve when the controller makes splits itself
   * (embedded steps). With the dataset-splitter service, the splitter's own TRANSFERLAB_DATA_ROOT
   * (the same variable) is what counts. Default: the working folder.
   */
  dataRoot: z.string().min(1).optional(),
};
